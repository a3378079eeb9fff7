"""``process_acquisition``: copy → segment → correct → track → extract, per FOV, in parallel.

The flow validates everything before it writes anything, takes the output folder's run lock,
writes its entry in ``run.yaml`` (status ``running``), then runs the per-FOV stage tasks on
the chosen task runner (:func:`run_fovs`; with ``runner="process"`` the stages run in a pool
of worker processes, see :mod:`pyama_lib.pipeline.pool`) and finally writes the run-level
outputs: ``processing_results.yaml`` (merged), the completed ``run.yaml`` entry and the
Prefect artifacts. (Each FOV's extract task writes its traces CSV and Parquet partition.)
A crashed worker process is replaced and the stages it broke run again; a stage that kills
its worker on its own fails only its FOV.

``batch_size`` bounds the FOVs in flight (each runs its stages in order), ``n_workers`` the
tasks running at once; with ``batch_size < n_workers`` some workers idle.

``process_acquisition`` is the entry point for people: it starts the stage workers' import
before Prefect creates the flow run, then calls the flow, ``process_acquisition_flow``
(deployments and ``.with_options()`` use that object).
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections import deque
from typing import TYPE_CHECKING, Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.exceptions import ParameterTypeError
from prefect.futures import PrefectFuture, as_completed
from pydantic import Field

from flows.support.artifacts import artifact_key, named_after
from flows.support.cluster import runner_session
from flows.support.progress import report_progress
from flows.support.reporting import (
    ProcessSummary,
    failed_fov,
    publish_artifacts,
    record_run,
    write_run_outputs,
)
from flows.support.runners import RUNNERS, make_task_runner, stage_workers
from pyama_lib.core.errors import ParamsError
from pyama_lib.core.selection import STAGES, Channels, check_counts, select_stages
from pyama_lib.io.lock import OutputLock
from pyama_lib.pipeline.plan import FovJob, plan_jobs
from pyama_lib.pipeline.pool import prestart, stop_workers_on_interrupt, unguarded_main_call
from pyama_lib.pipeline.presets import PRESETS
from pyama_lib.pipeline.processing_params import ProcessingParams, parse_params
from tasks.stages import STAGE_TASKS

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner


#: Seconds between updates of the dashboard's progress artifact (the last one always comes).
PROGRESS_UPDATE_S = 1.0


def run_fovs(
    task_runner: TaskRunner,
    jobs: list[FovJob],
    stages: list[str],
    batch_size: int,
    retries: int | None = None,
) -> dict[int, Any]:
    """Run ``stages`` in order for every job on ``task_runner``, at most ``batch_size`` FOVs
    in flight; the task runs belong to the calling flow run.

    Returns ``{fov: [stage result dicts]}`` for FOVs that finished, and
    ``{fov: {"error": ..., "completed": [...]}}`` for FOVs whose task failed after its
    retries (see :func:`failed_fov`). ``retries`` overrides the tasks' retry count.
    """
    logger = get_run_logger()
    tasks = {
        s: STAGE_TASKS[s] if retries is None else STAGE_TASKS[s].with_options(retries=retries)
        for s in stages
    }
    total = len(jobs) * len(stages)
    waiting = deque(jobs)
    in_flight: dict[PrefectFuture, tuple[FovJob, int]] = {}
    results: dict[int, Any] = {job.fov: [] for job in jobs}

    def submit(job: FovJob, index: int) -> None:
        in_flight[task_runner.submit(tasks[stages[index]], {"job": job})] = (job, index)

    def fill() -> None:
        while waiting and len(in_flight) < batch_size:
            submit(waiting.popleft(), 0)

    with (
        task_runner,
        runner_session(task_runner, jobs[0], in_flight.keys()) as session,
        stop_workers_on_interrupt(),
    ):
        fill()  # the workers start before the progress artifact's API call
        progress = create_progress_artifact(
            progress=0.0,
            key=artifact_key(jobs[0].base_name, "process-progress"),
            description=f"0/{total} FOV stages",
        )
        done, updated = 0, time.monotonic()
        while in_flight:
            future = next(as_completed(list(in_flight)))
            job, index = in_flight.pop(future)
            try:
                results[job.fov].append(future.result())
            except Exception as exc:  # one FOV failing must not stop the others
                error = session.failure(future, exc, tasks[stages[index]], job)
                if error is None:  # its Dask workers died: once more, maybe it was innocent
                    logger.warning(
                        "fov_%03d: %s lost its Dask workers; again", job.fov, stages[index]
                    )
                    submit(job, index)
                    continue
                logger.error("fov_%03d failed in %s: %s", job.fov, stages[index], error)
                results[job.fov] = failed_fov(stages[index], error, results[job.fov])
                done += len(stages) - index - 1
            else:
                if index + 1 < len(stages):
                    submit(job, index + 1)
            done += 1
            fill()  # the next work first, then the bookkeeping
            # The artifact update is an API call that waits on a busy server: one per stage
            # would hold this loop, and the workers with it, at 1000 FOVs.
            if done == total or time.monotonic() - updated >= PROGRESS_UPDATE_S:
                update_progress_artifact(
                    artifact_id=progress,
                    progress=100 * done / total,
                    description=f"{done}/{total} FOV stages",
                )
                updated = time.monotonic()
            report_progress(done, total, f"{stages[index]} fov_{job.fov:03d}")
    return results


# The dashboard's choices, from the one list of each (Literal[("a", "b")] is Literal["a", "b"]).
Runner = Literal[RUNNERS]  # type: ignore[valid-type]
Stage = Literal[STAGES]  # type: ignore[valid-type]
Preset = Literal[PRESETS]  # type: ignore[valid-type]
Channel = Annotated[int, Field(ge=0)]


@flow(name="process-acquisition", flow_run_name=named_after("input_path"), log_prints=True)
def process_acquisition_flow(
    input_path: str,
    output_dir: str,
    pc: Channel = 0,
    fl: list[Channel] | None = None,
    fov_start: Annotated[int, Field(ge=-1)] = -1,
    fov_end: Annotated[int, Field(ge=-1)] = -1,
    fovs: str | list[Annotated[int, Field(ge=0)]] | None = None,
    batch_size: Annotated[int, Field(ge=1)] = 2,
    n_workers: Annotated[int, Field(ge=1)] = 2,
    runner: Runner = "process",
    dask_address: str | None = None,
    params: ProcessingParams | Preset | None = None,
    stages: list[Stage] | None = None,
    retries: Annotated[int, Field(ge=0)] | None = None,
    reader_options: dict[str, Any] | None = None,
) -> ProcessSummary:
    """Process an ND2 or OME-TIFF acquisition into per-cell traces.

    Parameters keep PyAMA's names: ``pc`` phase-contrast channel, ``fl`` fluorescence channels
    (default ``[1]``; none for a one-channel acquisition; ``[]`` processes the phase contrast
    alone: segmentation, tracking and the tracks tables, no background correction and no
    traces, as PyAMA without fluorescence), the inclusive FOV range ``fov_start..fov_end``
    (-1 = all) or ``fovs`` ("0-5, 7" or a list), ``batch_size`` FOVs in flight at once
    (bounds scratch disk and memory), ``n_workers`` parallel workers. ``params`` holds the
    per-stage parameters (:class:`~pyama_lib.pipeline.processing_params.ProcessingParams`,
    the same as a dict
    ``{"segmentation": {...}, "background": {...}, "tracking": {...}, "extraction": {...}}``,
    or a preset's name: ``"accurate"``);
    ``stages`` runs a subset (e.g. ``["extract"]`` on an existing output); ``retries`` overrides
    each task's retry count; ``reader_options`` go to the reader (ND2: ``{"times": "measured"}``).

    The run's entry in ``run.yaml`` is written as soon as the output folder is locked (status
    ``running``) and completed at the end (``completed``, ``failed`` or ``interrupted``).
    """
    logger = get_run_logger()
    started = time.time()
    if runner == "process":
        prestart()  # a no-op if process_acquisition() already started it
    check_counts(batch_size=batch_size, n_workers=n_workers, retries=retries)
    stages = select_stages(stages)
    channels = Channels(pc=pc, fl=tuple(fl or ()))
    # Validation first: nothing is written before the input, channels, FOVs, parameters and
    # the output folder check out.
    plan = plan_jobs(
        input_path,
        output_dir,
        channels,
        fov_start=fov_start,
        fov_end=fov_end,
        fovs=fovs,
        params=params,
        reader_options=reader_options,
        default_fl=fl is None,
    )
    for warning in plan.warnings:
        logger.warning(warning)
    for note in plan.notes:
        logger.info("%s: %s", plan.base_name, note)
    task_runner = make_task_runner(runner, n_workers, dask_address)
    logger.info(
        "%s: %d FOV(s) x %d stage(s) on %s runner (%d workers, batch %d) -> %s",
        plan.base_name,
        len(plan.jobs),
        len(stages),
        runner,
        n_workers,
        batch_size,
        output_dir,
    )
    settings = {
        "runner": runner,
        "n_workers": n_workers,
        "batch_size": batch_size,
        "retries": retries,  # None: the tasks' own (2, with backoff)
        "reader_options": plan.reader_options,
        "dask_address": dask_address,
    }
    with OutputLock(output_dir), record_run(plan, stages, started, settings) as record:
        with stage_workers(runner, n_workers):
            results = run_fovs(task_runner, plan.jobs, stages, batch_size, retries)
        summary = write_run_outputs(plan, results, record, started=started)
    publish_artifacts(summary)
    summary.raise_if_failed()
    return summary


def process_acquisition(*args: Any, **kwargs: Any) -> ProcessSummary:
    """Run the ``process-acquisition`` flow (:func:`process_acquisition_flow`, same
    parameters), starting the stage workers' imports first.

    With ``runner="process"`` the workers' one-time import of pyama_lib (seconds on a busy
    machine) then overlaps Prefect's start of the flow run instead of delaying the first
    stage. Called from the top level of a script without an ``if __name__ == "__main__":``
    guard, the process runner would re-run the script in every worker, so the run falls back
    to ``runner="thread"`` with a warning that says where to add the guard.
    """
    call = inspect.signature(process_acquisition_flow.fn).bind(*args, **kwargs)
    call.apply_defaults()
    # Parameter and stage errors as PyAMA Flow's own messages, before a flow run is created.
    arguments = call.arguments
    check_counts(arguments["batch_size"], arguments["n_workers"], arguments["retries"])
    arguments["params"] = parse_params(arguments["params"])
    arguments["stages"] = select_stages(arguments["stages"])
    try:  # what else Prefect would refuse (types, ranges), as a parameter error, not a crash
        process_acquisition_flow.validate_parameters(dict(arguments))
    except ParameterTypeError as exc:
        raise ParamsError(f"bad process_acquisition parameters: {exc}") from None
    if call.arguments["runner"] == "process":
        where = unguarded_main_call()
        if where is None:
            prestart()
        else:
            warnings.warn(
                f"process_acquisition is called from the top level of {where}, outside an "
                '`if __name__ == "__main__":` block; worker processes re-import that script, '
                "so this run uses runner='thread' (slower). Put the call under that block "
                "to run the stages in worker processes.",
                RuntimeWarning,
                stacklevel=2,
            )
            call.arguments["runner"] = "thread"
    return process_acquisition_flow(*call.args, **call.kwargs)


# help() and IDEs show the flow's parameters
process_acquisition.__signature__ = inspect.signature(process_acquisition_flow.fn)  # type: ignore[attr-defined]
