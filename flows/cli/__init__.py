"""The ``pyama`` command line, on top of the flows and the deployments.

:mod:`~flows.cli.main` is the entry point (the parser and the exit statuses); one module per
command group (:mod:`~flows.cli.process`, :mod:`~flows.cli.analysis`,
:mod:`~flows.cli.service`, :mod:`~flows.cli.tools`, :mod:`~flows.cli.demo`); the options they
share in :mod:`~flows.cli.options`; the Prefect session and start-up in :mod:`~flows.cli.session`.
"""
