"""Flows of the inbox service (``pyama serve``): one acquisition that finished, and a sweep.

``process_new_acquisition`` takes the path an event (``pyama.acquisition.finished``) or a sweep
names, refuses it unless it resolves inside the inbox, and processes it into
``<output_root>/<sub-folders>/<base name>/``: the whole pipeline (process → merge → fit) when a
samples file is configured, else processing alone. A version already processed there is
skipped (``inbox.yaml``), so an event delivered twice costs one quick run that reads nothing.

``sweep_inbox`` runs on a schedule: every acquisition in the inbox that is complete, not yet
processed and not already handed to a run of ``process_new_acquisition`` (for this version of
the file: a run created after the file last changed, in any state, counts) gets one run of that
deployment. So an acquisition whose announcement was lost is still processed, once; and a
failed one is not retried by every sweep, but shows as failed in the dashboard until a person
runs it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run
from pydantic import Field

from flows.process import Channel, Runner, process_acquisition_flow
from flows.support.artifacts import named_after
from pyama_lib.core.errors import AcquisitionIncompleteError, InboxPathError, RunLockedError
from pyama_lib.io.lock import OutputLock, read_lock_info
from pyama_lib.pipeline.processing_params import ProcessingParams
from pyama_lib.service.inbox import (
    FileVersion,
    configured_folders,
    find_acquisitions,
    is_processed,
    not_ready,
    output_folder,
    pin_in_inbox,
    record_processed,
    resolve_in_inbox,
)
from tasks.logs import quiet_expected_errors

quiet_expected_errors()  # a refused path fails its run with the message, not a traceback

#: Run states that still lead somewhere: such a run will process its acquisition.
_UNFINISHED = (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED)
#: The deployments ``pyama serve`` creates (deployments/serve.py).
ACQUISITION_DEPLOYMENT = "process-new-acquisition/on-acquisition-finished"
SWEEP_DEPLOYMENT = "sweep-inbox/inbox-sweep"


@dataclass
class AcquisitionOutcome:
    """What ``process_new_acquisition`` did: ``status`` is ``processed`` or ``skipped``."""

    path: str
    output_dir: str
    status: str


@flow(name="process-new-acquisition", flow_run_name=named_after("path"), log_prints=True)
def process_new_acquisition_flow(
    path: str,
    samples_yaml: str | None = None,
    model: str = "maturation",
    pc: Channel = 0,
    fl: list[Channel] | None = None,
    n_workers: Annotated[int, Field(ge=1)] = 2,
    batch_size: Annotated[int, Field(ge=1)] = 2,
    runner: Runner = "process",
    params: ProcessingParams | None = None,
    interval_min: Annotated[float, Field(gt=0)] | None = None,
) -> AcquisitionOutcome:
    """Process the finished acquisition at ``path`` (a file or a sequence folder, absolute,
    inside one of the inbox folders, ``$PYAMA_INBOX``) into
    ``$PYAMA_OUTPUT_ROOT/<sub-folders>/<base name>``; with ``samples_yaml``, merge and fit
    ``model`` as well. ``interval_min``: minutes between frames for inputs that record no
    frame times. The other parameters are ``process_acquisition``'s.
    """
    logger = get_run_logger()
    inbox, output_root = configured_folders()
    acquisition, root = resolve_in_inbox(path, inbox)  # refused: the run fails, nothing read
    # Every later open must find the very file or folder checked here (the path is opened
    # again by path, in other processes): the readers refuse any other.
    pinned = pin_in_inbox(acquisition, root)
    version = FileVersion.of(acquisition)
    _label_run(version)
    out = output_folder(acquisition, root, output_root)
    if is_processed(out, version):
        logger.info("%s was processed already into %s; nothing to do", acquisition, out)
        return AcquisitionOutcome(str(acquisition), str(out), "skipped")
    # A run may have waited hours for a slot: the file may have been replaced since (or a
    # folder's image lost); a folder's every image is checked here.
    if reason := not_ready(acquisition, quiet_seconds=0, pinned=pinned):
        raise AcquisitionIncompleteError(
            acquisition,
            f"{reason}; its next announcement or sweep processes it once it is complete",
        )
    if (lock := read_lock_info(out)) is not None and lock.pid is not None:
        try:  # another run (an event and a sweep at once) is on it: not this run's failure
            with OutputLock(out):
                pass
        except RunLockedError:
            owner = f"pid {lock.pid} on {lock.hostname}"
            logger.info("%s is being processed by another run (%s); nothing to do", out, owner)
            return AcquisitionOutcome(str(acquisition), str(out), "in_progress")
    logger.info("processing %s into %s", version.describe(), out)
    options: dict[str, Any] = {
        "pc": pc,
        "fl": fl,
        "n_workers": n_workers,
        "batch_size": batch_size,
        "runner": runner,
        "params": params,
        "reader_options": {"pinned": list(pinned)},
    }
    if interval_min is not None:
        options["reader_options"]["interval_min"] = interval_min
    if samples_yaml:
        from flows.pipeline import pyama_pipeline_flow

        pyama_pipeline_flow(str(acquisition), str(out), samples_yaml, model=model, **options)
    else:
        process_acquisition_flow(str(acquisition), str(out), **options)
    if FileVersion.of(acquisition) != version:
        raise InboxPathError(
            acquisition,
            "changed while it was being processed (it was not complete after all?); its next "
            "announcement or sweep processes the new version",
        )
    record_processed(out, version, flow_run_id=str(flow_run.id))
    return AcquisitionOutcome(str(acquisition), str(out), "processed")


#: The label a run of ``process_new_acquisition`` carries: the version of the file it took.
VERSION_LABEL = "pyama.acquisition.version"


def _label_run(version: FileVersion) -> None:
    """Label this flow run with the file version it takes, so that a sweep can tell a run of
    an earlier version from one of this version, whatever the file's times say."""
    from prefect.client.orchestration import get_client

    if flow_run.id is None:  # called as a plain function, not a flow run
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(flow_run.id, {VERSION_LABEL: version.label})


def _recent_runs(deployment: str, since_ns: int) -> list[Any]:
    """The runs of ``deployment`` that may stand for a file changed at ``since_ns`` or later:
    those not finished yet (queued, late, running), and those that completed or failed since.
    Two bounded queries on the server instead of reading every run the deployment ever had."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    def of_type(*types: StateType) -> FlowRunFilterState:
        return FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types)))

    since = datetime.fromtimestamp(since_ns / 1e9, tz=UTC)
    queries = [
        FlowRunFilter(state=of_type(*_UNFINISHED)),
        FlowRunFilter(
            state=of_type(StateType.COMPLETED, StateType.FAILED),
            expected_start_time=FlowRunFilterExpectedStartTime(after_=since),
        ),
    ]
    with get_client(sync_client=True) as client:
        target = client.read_deployment_by_name(deployment)
        of_target = DeploymentFilter(id=DeploymentFilterId(any_=[target.id]))
        return [
            run
            for query in queries
            for run in client.read_flow_runs(flow_run_filter=query, deployment_filter=of_target)
        ]


def _handed_over(runs: list[Any], version: FileVersion) -> bool:
    """Whether one of ``runs`` (:func:`_recent_runs`) stands for this version and needs no
    successor: not finished yet, or completed or failed on this version. A cancelled or
    crashed run (``pyama serve`` was stopped) does not count, so the next sweep hands the
    acquisition over again."""
    return any(
        _same_file(run.parameters.get("path"), version.path)
        and (run.state_type in _UNFINISHED or _ran_on(run, version))
        for run in runs
    )


def _ran_on(run: Any, version: FileVersion) -> bool:
    # A finished run names the version it took (its label): a file copied in with its old
    # time (cp -p, rsync -a, robocopy) is a new version though a run started after that time.
    taken = (run.labels or {}).get(VERSION_LABEL)
    if taken is not None:
        return taken == version.label
    # A run that ended before labelling itself: it started after the file last changed.
    started = run.expected_start_time
    return started is not None and started.timestamp() >= version.mtime_ns / 1e9


def _same_file(given: object, path: str) -> bool:
    # Paths as the runs were given them (events may name a path any way they like); a path
    # that does not resolve is not this file's.
    if not isinstance(given, str) or not given:
        return False
    try:
        return given == path or str(Path(given).resolve()) == path
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return False


@flow(name="sweep-inbox", log_prints=True)
def sweep_inbox_flow(
    quiet_seconds: Annotated[float, Field(ge=0)] = 60.0,
    deployment: str = ACQUISITION_DEPLOYMENT,
) -> dict[str, list[str]]:
    """Hand every complete, unprocessed acquisition in the inbox (``$PYAMA_INBOX``) to one
    run of ``deployment``; returns the paths by what was done with them (``submitted``, ``done``,
    ``in_progress``, ``waiting``, ``refused``)."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    inbox, output_root = configured_folders()
    seen: dict[str, list[str]] = {
        k: [] for k in ("submitted", "done", "in_progress", "waiting", "refused")
    }
    rows: list[dict[str, str]] = []

    def note(acquisition: Path, action: str, why: str = "") -> None:
        seen[action].append(str(acquisition))
        rows.append({"acquisition": str(acquisition), "action": action, "why": why})

    ready: list[tuple[Path, FileVersion]] = []
    for folder in inbox:
        for candidate in find_acquisitions(folder):
            try:
                acquisition, root = resolve_in_inbox(candidate, inbox)
            except InboxPathError as exc:
                logger.warning("%s", exc)
                note(candidate, "refused", str(exc))
                continue
            try:
                version = FileVersion.of(acquisition)
            except OSError:  # deleted since it was listed
                continue
            if is_processed(output_folder(acquisition, root, output_root), version):
                note(acquisition, "done")
            elif reason := not_ready(acquisition, quiet_seconds):
                note(acquisition, "waiting", reason)
            else:
                ready.append((acquisition, version))
    # One look at the deployment's runs for all of them, not one per acquisition.
    runs = _recent_runs(deployment, min(v.mtime_ns for _, v in ready)) if ready else []
    for acquisition, version in ready:
        if _handed_over(runs, version):
            note(acquisition, "in_progress")
        else:
            run_deployment(deployment, parameters={"path": str(acquisition)}, timeout=0)
            logger.info("submitted %s", version.describe())
            note(acquisition, "submitted")
    counts = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in seen.items())
    logger.info("inbox sweep: %s", counts)
    create_table_artifact(
        key="inbox-sweep",
        table=rows or [{"acquisition": "(none)", "action": "", "why": ""}],
        description=f"Inbox sweep of {', '.join(inbox)}: {counts}",
    )
    return seen
