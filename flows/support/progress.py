"""Progress of a processing run, for whoever renders it (the CLI's bar, a notebook).

The flow reports each finished FOV stage on the plain ``pyama.progress`` logger with the counts
in ``record.pyama_progress``; listeners attach a handler. Prefect's progress artifact is
updated from the flow as well (updates from worker processes would race).
"""

from __future__ import annotations

import logging

PROGRESS_LOGGER = "pyama.progress"


def report_progress(done: int, total: int, message: str) -> None:
    logging.getLogger(PROGRESS_LOGGER).info(message, extra={"pyama_progress": (done, total)})
