"""``pyama serve``: the two deployments of the inbox service, served by one process.

1. ``process-new-acquisition/on-acquisition-finished``: processes one acquisition, started by
   the event ``pyama.acquisition.finished`` (resource id ``pyama.acquisition.<absolute path>``,
   payload ``{"path": "<absolute path>"}``), which ``pyama watch`` or any other tool emits.
   At most ``max_concurrent`` of its runs execute at once (a deployment concurrency limit:
   further runs wait in the dashboard as "AwaitingConcurrencySlot"), so a burst of finished
   acquisitions does not overload the machine.
2. ``sweep-inbox/inbox-sweep``: on a schedule, hands every complete, unprocessed acquisition
   in the inbox to the first deployment (what the watcher missed while it was down).

Prefect's ``serve`` polls the API for runs to start and executes each in a subprocess; the
deployments are registered again on every start, with the options given then.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events import DeploymentEventTrigger

from deployments.events import ACQUISITION_EVENT, RESOURCE_PREFIX
from flows.inbox import (
    ACQUISITION_DEPLOYMENT,
    SWEEP_DEPLOYMENT,
    process_new_acquisition_flow,
    sweep_inbox_flow,
)
from pyama_lib.core.errors import ParamsError
from pyama_lib.service.inbox import INBOX_ENV, OUTPUT_ROOT_ENV

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_schedule(text: str) -> dict[str, Any]:
    """``"*/10 * * * *"`` → ``{"cron": ...}``; ``"600"``, ``"90s"``, ``"10m"``, ``"2h"`` →
    ``{"interval": timedelta}``; ``"off"`` → ``{}`` (no sweep schedule).

    Examples
    --------
    >>> parse_schedule("10m")
    {'interval': datetime.timedelta(seconds=600)}
    >>> parse_schedule("*/10 * * * *")
    {'cron': '*/10 * * * *'}
    """
    if text.strip().lower() in ("off", "none", ""):
        return {}
    match = _INTERVAL.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds < 1:
            raise ParamsError(f"--schedule {text!r}: the interval must be at least 1 s")
        return {"interval": timedelta(seconds=seconds)}
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=text)  # Prefect's own check of the expression
    except ValidationError:
        raise ParamsError(
            f"--schedule {text!r} is neither a cron expression (e.g. '*/10 * * * *') nor an "
            "interval (e.g. 600, 90s, 10m, 2h); use 'off' for no sweep"
        ) from None
    return {"cron": text}


@dataclass
class ServeSettings:
    """What ``pyama serve`` was given: the inbox folders, the output root and the options of
    every acquisition's run (``processing``: process_new_acquisition's parameters)."""

    inbox: list[str]
    output_root: str
    schedule: str = "*/10 * * * *"
    quiet_seconds: float = 60.0
    max_concurrent: int = 1
    processing: dict[str, Any] = field(default_factory=dict)


def acquisition_trigger() -> DeploymentEventTrigger:
    """Start a run for every ``pyama.acquisition.finished`` event, its path from the payload."""
    return DeploymentEventTrigger(
        expect={ACQUISITION_EVENT},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        parameters={"path": "{{ event.payload.path }}"},
    )


def build_deployments(settings: ServeSettings) -> list[RunnerDeployment]:
    """The acquisition deployment (event trigger) and the sweep deployment (schedule)."""
    where = f"{', '.join(settings.inbox)} -> {settings.output_root}"
    name = ACQUISITION_DEPLOYMENT.split("/")[1]
    # A module entrypoint: the runs import the installed package from any working directory.
    module = EntrypointType.MODULE_PATH
    on_acquisition = process_new_acquisition_flow.to_deployment(
        name=name,
        triggers=[acquisition_trigger()],
        parameters=settings.processing,
        concurrency_limit=settings.max_concurrent,
        description=f"Processes one finished acquisition (event pyama.acquisition.finished): "
        f"{where}.",
        tags=["pyama"],
        entrypoint_type=module,
    )
    sweep = sweep_inbox_flow.to_deployment(
        name=SWEEP_DEPLOYMENT.split("/")[1],
        parameters={"quiet_seconds": settings.quiet_seconds},
        concurrency_limit=1,
        description=f"Processes complete acquisitions that no event announced: {where}.",
        tags=["pyama"],
        entrypoint_type=module,
        **parse_schedule(settings.schedule),
    )
    return [on_acquisition, sweep]


def serve_inbox(settings: ServeSettings) -> None:
    """Register the deployments and run them until SIGINT/SIGTERM (runs in flight are then
    cancelled; the next sweep hands their acquisitions over again)."""
    # The runs are subprocesses of this one: they find their folders here, not in parameters.
    os.environ[INBOX_ENV] = os.pathsep.join(settings.inbox)
    os.environ[OUTPUT_ROOT_ENV] = settings.output_root
    # Not paused on shutdown: a restarted service takes events again at once.
    serve(*build_deployments(settings), pause_on_shutdown=False, print_starting_message=True)
