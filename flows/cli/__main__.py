"""``python -m flows.cli``: the ``pyama`` command without its console script."""

from flows.cli.main import console_main

if __name__ == "__main__":  # stage workers re-import the main module: they must not run it
    console_main()
