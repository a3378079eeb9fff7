"""The Dask runner's part of a run: check the workers before any stage, name the FOV that a
lost worker took down, and let the workers' logs reach the API before the run ends.

A Dask worker that dies in the middle of a stage (SIGKILL, the kernel's OOM killer, the nanny's
memory limit) costs nothing but time: the scheduler runs the stage again on another worker and
the stage finds its half-written output by the store's completion markers. A stage that kills
every worker it lands on is given up by the scheduler after ``allowed-failures`` tries
(``KilledWorker``). The scheduler counts a death against every task waiting on that worker,
so an innocent stage queued behind a deadly one can be given up too: the run submits a given-up
stage once more (:meth:`DaskSession.failure`), and only a stage given up twice fails its FOV,
with an error that says so. Its task runs are marked crashed (the dead workers could not).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pyama_lib.core.errors import ClusterError
from pyama_lib.pipeline.access import probe_access

if TYPE_CHECKING:
    from distributed import Client
    from prefect import Task
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner

    from pyama_lib.pipeline.plan import FovJob

#: How long a run waits for the cluster's first worker (workers may still be starting).
WORKER_WAIT_S = 30.0
#: How often a run ending early asks the workers whether its stages still run.
STOP_POLL_S = 0.5
_GUIDE = "docs/scaling.md"


def check_workers(client: Client, job: FovJob) -> None:
    """Fail unless the cluster has a worker and every worker can read ``job``'s input and
    write into its output folder; the error names each worker that cannot and why."""
    address = client.scheduler.address
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise ClusterError(
            f"the Dask cluster at {address} has no workers after {WORKER_WAIT_S:g} s; start "
            f"them with `dask worker {address}` ({_GUIDE})"
        ) from None
    found = client.run(probe_access, job.input_path, job.output_dir, on_error="return")
    problems = []
    for worker, access in sorted(found.items()):
        if isinstance(access, BaseException):
            problems.append(f"Dask worker {worker}: the check itself failed: {access}")
        else:
            problems += [
                f"Dask worker {worker} (host {access['host']}): {p}" for p in access["problems"]
            ]
    if problems:
        raise ClusterError(
            f"{len(problems)} problem(s) on the Dask cluster at {address}; the input and the "
            "output folder must be on a filesystem every worker sees, under the same path "
            f"({_GUIDE}):\n" + "\n".join(f"  {p}" for p in problems)
        )


async def _drain_prefect_logs() -> None:
    # Runs on each worker, in its event loop (hence async): its task runs' logs go to the API
    # in batches every 2 s, and the run's temporary API server stops as soon as the run ends;
    # the last batch would be lost.
    from prefect.logging.handlers import APILogWorker

    await APILogWorker.drain_all(timeout=10, at_exit=False)


def _running_keys(dask_worker: Any) -> list[str]:
    # Runs on each worker: the tasks its threads still execute, cancelled ones included (Dask
    # cannot stop a running task; a cancelled one runs on until its function returns).
    busy = ("executing", "long-running", "cancelled", "resumed")
    return [str(ts.key) for ts in dask_worker.state.tasks.values() if ts.state in busy]


class DaskSession:
    """Around a run's stages on a ``DaskTaskRunner`` (entered after the runner):
    :func:`check_workers` on entry; on exit, the stages still in flight are cancelled and, if
    the run is ending early (Ctrl-C, an error), waited for until no worker runs them any more,
    so that the output folder's lock is not released while a stage still writes into it; then
    the workers' logs are flushed."""

    def __init__(
        self, task_runner: TaskRunner, job: FovJob, in_flight: Collection[PrefectFuture] = ()
    ) -> None:
        self.client: Client = task_runner.client  # type: ignore[attr-defined]
        self.job = job
        self.in_flight = in_flight  # the run's futures, as it submits and collects them
        self.given_up: set[tuple[int, str]] = set()  # (fov, stage) the scheduler gave up once

    def __enter__(self) -> DaskSession:
        check_workers(self.client, self.job)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None and self.in_flight:
            self.stop_stages()
        with contextlib.suppress(Exception):  # a cluster gone by now has no logs left to send
            self.client.run(_drain_prefect_logs, on_error="return")

    def stop_stages(self) -> None:
        """Cancel the run's stages on the cluster and wait until no worker runs them."""
        from prefect import get_run_logger

        wrapped = [getattr(f, "wrapped_future", None) for f in self.in_flight]
        futures = [f for f in wrapped if f is not None]
        keys = {str(f.key) for f in futures}
        logger = get_run_logger()
        try:
            self.client.cancel(futures, force=True)
            said = False
            while running := keys & self._running():
                if not said:
                    logger.warning(
                        "waiting for %d stage(s) still running on the Dask cluster to finish "
                        "(Dask cannot stop a running task; the output folder stays locked "
                        "until then; Ctrl-C again to leave at once)",
                        len(running),
                    )
                    said = True
                time.sleep(STOP_POLL_S)
        except KeyboardInterrupt:
            logger.warning(
                "%s: stopped waiting; stage(s) may still be writing into it on the Dask "
                "cluster: let them finish before running into this folder again",
                self.job.output_dir,
            )
            raise
        except Exception as exc:  # noqa: BLE001 (the cluster is gone: nothing runs there)
            logger.warning("could not ask the Dask cluster about its running stages: %s", exc)

    def _running(self) -> set[str]:
        found = self.client.run(_running_keys, on_error="return")
        return {k for keys in found.values() if isinstance(keys, list) for k in keys}

    def failure(
        self, future: PrefectFuture, exc: Exception, task: Task, job: FovJob
    ) -> Exception | None:
        """``exc`` as the error of ``task`` on ``job``'s FOV (the flow's log and summary name
        both), or None when the stage should be submitted once more: the first ``KilledWorker``
        of a stage. The second becomes a :class:`ClusterError` that says what happened. Either
        way the task run is marked crashed (recorded so, if its worker died before reporting
        it)."""
        from distributed import KilledWorker

        if not isinstance(exc, KilledWorker):
            return exc
        key = (job.fov, task.name)
        deaths = exc.allowed_failures + 1
        last = getattr(exc.last_worker, "address", exc.last_worker)
        if key not in self.given_up:
            self.given_up.add(key)
            _mark_crashed(
                future, task, job, f"{deaths} worker deaths (the last {last}); tried again"
            )
            return None
        error = ClusterError(
            f"the stage killed every Dask worker it ran on, {deaths} in a row twice (the "
            f"scheduler's allowed-failures + 1; the last was {last}); out of memory? See the "
            f"workers' memory limit in {_GUIDE}"
        )
        _mark_crashed(future, task, job, str(error))
        return error


def _mark_crashed(future: PrefectFuture, task: Task, job: FovJob, message: str) -> None:
    """Record the task run as crashed; a failure to do so is logged, never raised (it would
    end the run of every other FOV)."""
    try:
        _set_crashed(future, task, job, message)
    except Exception as exc:  # noqa: BLE001 (the API is only told; the run goes on)
        from prefect import get_run_logger

        get_run_logger().warning("could not mark task run %s crashed: %s", future.task_run_id, exc)


def _set_crashed(future: PrefectFuture, task: Task, job: FovJob, message: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.runtime import flow_run
    from prefect.states import Crashed

    name = task.task_run_name.format(job=job)  # type: ignore[union-attr]
    with get_client(sync_client=True) as client:
        for _ in range(8):
            try:
                client.set_task_run_state(future.task_run_id, Crashed(message=message), force=True)
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
            else:  # the worker may have died before it gave the run its name
                client.set_task_run_name(future.task_run_id, name)
                return
            # The server records a task run from its worker's events, a moment after they are
            # sent; a stage that killed its worker at once may never have been recorded.
            time.sleep(0.25)
        client.create_task_run(
            task,
            flow_run.id,
            dynamic_key=str(future.task_run_id),
            id=future.task_run_id,
            name=name,
            state=Crashed(message=message),
        )


class NoSession:
    """The same interface for the process and thread runners: nothing to check or flush (their
    workers are this machine's processes, which the run stops itself)."""

    def __enter__(self) -> NoSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def failure(
        self, future: PrefectFuture, exc: Exception, task: Task, job: FovJob
    ) -> Exception | None:
        return exc


def runner_session(
    task_runner: TaskRunner, job: FovJob, in_flight: Collection[PrefectFuture] = ()
) -> DaskSession | NoSession:
    """What a run does around its stages on ``task_runner`` (entered after it); ``in_flight``
    is the run's collection of submitted, uncollected futures."""
    if type(task_runner).__name__ == "DaskTaskRunner":  # no prefect_dask import otherwise
        return DaskSession(task_runner, job, in_flight)
    return NoSession()
