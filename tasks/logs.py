"""Expected errors are logged as their one-paragraph message, without a traceback.

A :class:`~pyama_lib.core.errors.PyamaError` already names the file and the fix; a Python traceback
under it only buries that for a lab scientist reading the CLI or the Prefect UI. Unexpected
exceptions keep their traceback.
"""

from __future__ import annotations

import logging

from pyama_lib.core.errors import PyamaError

_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _DropExpectedTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PyamaError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_expected_errors() -> None:
    """Install the filter on Prefect's run loggers (idempotent; called at import time so that
    spawned worker processes get it too)."""
    for name in _RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExpectedTraceback) for f in logger.filters):
            logger.addFilter(_DropExpectedTraceback())
