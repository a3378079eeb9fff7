"""Prefect flows of PyAMA Flow: ``from flows import process_acquisition``.

Exports load lazily, so the ``pyama`` command starts without importing Prefect unless a
subcommand needs it.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

# PyAMA Flow never phones home: Prefect's client and embedded server would otherwise send
# usage data (and log errors on an offline lab machine). Set these yourself to opt in.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Prefect waits 20 s for its temporary API server; a first run (database migrations) on a busy
# machine can take longer ("Timed out while attempting to connect to ephemeral Prefect API
# server"). Give it the time it needs; set it yourself to override.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

_EXPORTS = {
    "process_acquisition": "flows.process",
    "process_acquisition_flow": "flows.process",
    "FovsFailedError": "flows.support.reporting",
    "ProcessSummary": "flows.support.reporting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flows' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
