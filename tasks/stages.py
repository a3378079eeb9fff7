"""Prefect tasks: one per stage, each runs that stage for ONE FOV by calling pyama_lib.

Tasks take a small :class:`~pyama_lib.pipeline.plan.FovJob` (paths, channels, parameters)
and return a small dict; arrays never cross the task boundary. Idempotency lives in the store:
a stage whose outputs are complete for the same inputs and parameters returns at once (the
store's completion markers are the cache, keyed on input identity, FOV, stage parameters and
code version; Prefect's result cache is off because it cannot see an output deleted on disk).
"""

from __future__ import annotations

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from pyama_lib.core.errors import PyamaError
from pyama_lib.core.selection import STAGES
from pyama_lib.pipeline.plan import FovJob
from pyama_lib.pipeline.pool import execute_stage
from tasks.logs import quiet_expected_errors

quiet_expected_errors()

# Backoff for transient I/O errors (network shares, a busy disk); override with .with_options.
RETRIES = 2
RETRY_DELAYS = [2, 10]


def _run(stage: str, job: FovJob) -> dict:
    logger = get_run_logger()
    result = execute_stage(stage, job)
    for warning in result.warnings:  # found in a worker process, told here where the UI sees it
        logger.warning(warning)
    if result.was_skipped:
        logger.info("%s fov_%03d: outputs already complete, skipped", stage, job.fov)
    else:
        logger.info(
            "%s fov_%03d: wrote %s in %.1f s",
            stage,
            job.fov,
            ", ".join(result.written),
            result.seconds,
        )
    return result.as_dict()


def _transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry I/O hiccups, not deterministic data or parameter errors (a PyamaError would fail
    the same way again, only later)."""
    try:
        state.result(raise_on_failure=True)
    except PyamaError:
        return False
    except Exception:
        return True
    return False


def _stage_task(stage: str) -> Task:
    def run(job: FovJob) -> dict:
        return _run(stage, job)

    run.__name__ = f"{stage}_fov"
    run.__doc__ = f"Run the {stage} stage for one FOV (see pyama_lib.pipeline.stages)."
    return task(
        run,
        name=stage,
        task_run_name=f"{stage} fov_{{job.fov:03d}}",
        retries=RETRIES,
        retry_delay_seconds=RETRY_DELAYS,
        retry_condition_fn=_transient,
        cache_policy=NO_CACHE,
    )


#: The stage tasks by stage name: ``STAGE_TASKS["extract"].map(jobs)`` in a flow of your own.
STAGE_TASKS: dict[str, Task] = {stage: _stage_task(stage) for stage in STAGES}
