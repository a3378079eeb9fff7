"""The event contract: ``pyama.acquisition.finished`` says an acquisition file is complete.

Any tool may emit it (``pyama watch`` does; so can a script on the microscope PC):

- event: ``pyama.acquisition.finished``
- resource: ``{"prefect.resource.id": "pyama.acquisition.<absolute path>"}``
- payload: ``{"path": "<absolute path>"}`` (``pyama watch`` adds ``size`` and ``mtime_ns``)

The path must lie inside an inbox folder that ``pyama serve`` was given; any other is refused.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pyama_lib.service.inbox import FileVersion

ACQUISITION_EVENT = "pyama.acquisition.finished"
RESOURCE_PREFIX = "pyama.acquisition."


async def _emit(version: FileVersion) -> None:
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event(
        event=ACQUISITION_EVENT,
        resource={
            "prefect.resource.id": f"{RESOURCE_PREFIX}{version.path}",
            "prefect.resource.name": Path(version.path).name,
        },
        payload={"path": version.path, "size": version.size, "mtime_ns": version.mtime_ns},
    )
    # checkpoint_every=1: emit() returns only once the server has confirmed the event, so an
    # acquisition is recorded as announced only when the announcement arrived.
    async with get_events_client(reconnection_attempts=2, checkpoint_every=1) as client:
        await client.emit(event)


def announce(version: FileVersion) -> None:
    """Emit ``pyama.acquisition.finished`` for ``version`` and wait until the Prefect server
    (``PREFECT_API_URL``) has it; raises when it cannot be delivered."""
    # The client warns on every failed connection attempt; the watcher says it once itself.
    client_log = logging.getLogger("prefect.events.clients")
    level = client_log.level
    client_log.setLevel(logging.ERROR)
    try:
        asyncio.run(_emit(version))
    finally:
        client_log.setLevel(level)
