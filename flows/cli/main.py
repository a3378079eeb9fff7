"""The ``pyama`` command: its parser, and one exit status per kind of outcome.

A command is a ``register(subparsers)`` function that adds its parser and sets
``func=run(args) -> int`` as default; the command groups are modules beside this one. Exit
statuses, the same for every command (docs/processing.md, "Exit statuses"):

- 0: done.
- 1: an unexpected internal error: one line on stderr names it and the log file holding the
  traceback (a bug to report).
- 2: bad input, parameters or usage: one paragraph naming the file and the fix, nothing
  written (a :class:`~pyama_lib.core.errors.PyamaError`, or an ``OSError`` of the input or
  output).
- 3: partly failed: some FOVs failed, the others are done (a
  :class:`~pyama_lib.core.errors.PartialFailure`); the same command again retries the failed.
- 130 / 143: interrupted by Ctrl-C (SIGINT) / SIGTERM; the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from flows.cli.analysis import register_fit, register_merge, register_run
from flows.cli.demo import register_demo
from flows.cli.inspect import register_inspect
from flows.cli.process import register_process
from flows.cli.service import register_serve, register_watch
from flows.cli.tools import register_info, register_score, register_synth, register_view
from pyama_lib.core.errors import Interrupted, PartialFailure, PyamaError

EXIT_INTERNAL = 1
EXIT_ERROR = 2
EXIT_PARTIAL = 3
EXIT_SIGINT = 130

# In the order a newcomer meets them in ``pyama --help``.
COMMANDS = (
    register_info,
    register_process,
    register_view,
    register_inspect,
    register_merge,
    register_fit,
    register_run,
    register_serve,
    register_watch,
    register_synth,
    register_score,
    register_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyama", description="PyAMA Flow: single-cell time-lapse microscopy pipeline."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyama`` command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; return, don't exit
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return int(args.func(args))
    except PartialFailure as exc:
        print(f"pyama {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_PARTIAL
    except (PyamaError, OSError) as exc:
        # One line, unwrapped: paths stay whole for copy-paste and grep.
        print(f"pyama {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        name, status = (
            (exc.signal_name, exc.exit_status)
            if isinstance(exc, Interrupted)
            else ("Ctrl-C", EXIT_SIGINT)
        )
        print(
            f"pyama {args.command}: interrupted ({name}); run the same command again to resume",
            file=sys.stderr,
        )
        return status
    except Exception as exc:  # a bug: a short message here, the traceback in a file
        log = write_crash_log(args.command, getattr(args, "output", None))
        print(
            f"pyama {args.command}: internal error: {type(exc).__name__}: {exc}. The full "
            f"traceback is in {log}; please include that file when you report the problem.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def write_crash_log(command: str, output: str | Path | None = None) -> Path:
    """Write the exception being handled, with its traceback, to a log file and return its
    path: ``<output>/pyama-error-<time>.log`` when the command has an output folder that
    exists, else the same name in the system's temporary folder."""
    name = f"pyama-error-{datetime.now():%Y%m%dT%H%M%S}.log"
    text = f"pyama {command}: {' '.join(sys.argv)}\n\n{traceback.format_exc()}"
    for folder in ([Path(output)] if output else []) + [Path(tempfile.gettempdir())]:
        try:
            if folder.is_dir():
                (folder / name).write_text(text, encoding="utf-8")
                return folder / name
        except OSError:
            continue
    return Path(tempfile.gettempdir()) / name


def console_main() -> None:
    """The ``pyama`` console script."""
    sys.exit(main())
