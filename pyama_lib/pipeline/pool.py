"""Where a stage task's work runs: in a pool of worker processes, or right where the task runs.

With ``runner="process"`` the flow runs its Prefect tasks on threads and opens a :func:`stage_pool`;
each stage task then hands its FOV's stage to a worker process and waits for the small result.
Prefect's own process task runner would import Prefect in every worker and rebuild its settings and
API client for every task run, which on short stages costs more than the work. Here the workers
import only pyama_lib (no Prefect), and each task's orchestration (states, retries, logs) stays in
the flow's process, a little per task. Without an open pool (thread or Dask runner, a user's own
flow) :func:`execute_stage` runs the stage in the calling thread. Other CPU-bound work of a flow
(the fit's chunks of cells) goes the same way through :func:`execute_in_pool`.

A worker that dies (OOM kill, segfault) breaks the whole pool and every stage in it; the pool
replaces itself and runs those stages again one at a time, which finds the one that kills its
worker (see :class:`StagePool`). Workers exit with the flow's process.
"""

from __future__ import annotations

import ast
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from importlib import import_module
from multiprocessing import get_all_start_methods, get_context, parent_process
from multiprocessing.connection import wait
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, TypeVar

from pyama_lib.core.errors import PyamaError
from pyama_lib.pipeline.faults import maybe_inject_fault
from pyama_lib.pipeline.memory import reuse_freed_memory

if TYPE_CHECKING:
    from pyama_lib.pipeline.plan import FovJob
    from pyama_lib.pipeline.stages import StageResult

# What a worker imports before its first stage (the scientific stack: seconds, not ms). Kept out
# of this module's own imports so that the CLI, importing this module, does not pay for it;
# the forkserver loads it.
_STAGES_MODULE = "pyama_lib.pipeline.stages"
_PRELOAD_MODULE = "pyama_lib.pipeline.preload"  # the stages, this module and the readers

R = TypeVar("R")

# The pool of the flow run in progress. Prefect's thread task runner copies the submitting
# context into each task thread, so the tasks of that run (and only they) see it.
_ACTIVE: ContextVar[StagePool | None] = ContextVar("pyama_stage_pool", default=None)


def execute_stage(stage: str, job: FovJob) -> StageResult:
    """Run one stage for one FOV: in the open stage pool if there is one, else here."""
    pool = _ACTIVE.get()
    if pool is not None:
        return pool.run(stage, job)
    # Here: a Dask worker or the thread runner. Dask's nanny starts its workers with
    # MALLOC_TRIM_THRESHOLD_=65536, which returns every frame-sized temporary to the kernel and
    # faults it in anew for the next frame; a pool worker sets the same thresholds on start.
    reuse_freed_memory()
    return _execute(stage, job)


def execute_in_pool(label: str, work: str, fn: Callable[..., R], *args: object) -> R:
    """``fn(*args)`` in the open stage pool if there is one (see :meth:`StagePool.call`), else
    here: CPU-bound work that would hold the GIL on the task threads."""
    pool = _ACTIVE.get()
    if pool is not None:
        return pool.call(label, work, fn, *args)
    return fn(*args)


def _execute(stage: str, job: FovJob) -> StageResult:
    maybe_inject_fault(stage, job.fov, job.output_dir)  # in the worker: a "crash" kills it
    return import_module(_STAGES_MODULE).run_stage(stage, job)


def _init_worker(environment: dict[str, str]) -> None:
    """Worker initializer: adopt the flow's environment as of the pool's start (a forkserver's
    workers would otherwise see the server's, from whenever it started), keep freed memory for
    the next frame (:mod:`~pyama_lib.pipeline.memory`), and die with the flow's process."""
    os.environ.clear()
    os.environ.update(environment)
    reuse_freed_memory()
    # Ctrl-C reaches the whole process group; the flow's process decides what to stop (it
    # terminates the workers), so a stage is never cut short by a stray KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = parent_process()
    if parent is not None:
        watch = threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True)
        watch.start()


def _exit_with_parent(sentinel: int) -> None:
    """Exit as soon as the flow's process is gone (SIGKILL, OOM kill). An orphaned worker
    would wait on its queue forever, or worse, go on writing into an output folder whose lock
    the next run has taken over; its half-written array is redone by that run."""
    wait([sentinel])
    os._exit(1)


def _ready() -> int:
    """Warm-up call: import the stages now (already done if the worker came from the
    forkserver)."""
    import_module(_STAGES_MODULE)
    return os.getpid()


def _context() -> BaseContext:
    """Where workers come from: never ``fork``, since the flow's process runs threads.

    With ``forkserver`` (Linux, macOS) one clean server process imports pyama_lib once and
    forks each worker from it, ready at once, for this and every later pool of the process;
    elsewhere each worker is spawned and imports pyama_lib itself.
    """
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload([_PRELOAD_MODULE])  # takes effect when the server starts
    return context


def prestart() -> None:
    """Start the forkserver and its import of pyama_lib now, without waiting for them.

    Call it before a run with ``runner="process"`` (the CLI does, while it waits for its
    temporary Prefect server): the run's first workers then fork ready to work. A no-op where
    workers are spawned.
    """
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def unguarded_main_call() -> str | None:
    """``"script.py:12"`` when the caller runs at the top level of the main script, outside an
    ``if __name__ == "__main__":`` block; otherwise None.

    Stage workers, like every worker of a non-``fork`` process pool, import the main script
    when they start: such a script would start the whole run again in every worker (and fail
    with multiprocessing's bootstrapping error). A script that cannot be read counts as guarded.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame = sys._getframe(1)
    while frame is not None and not (
        frame.f_globals is getattr(main, "__dict__", None) and frame.f_code.co_name == "<module>"
    ):
        frame = frame.f_back
    if frame is None or path is None:  # not running the main script's top level
        return None
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    guards = [node for node in tree.body if isinstance(node, ast.If) and _is_main_test(node.test)]
    if any(node.lineno <= line <= (node.end_lineno or node.lineno) for node in guards):
        return None
    return f"{path}:{line}"


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"``, either way round."""
    if not isinstance(test, ast.Compare) or [type(op) for op in test.ops] != [ast.Eq]:
        return False
    sides = (test.left, test.comparators[0])
    names = [side.id for side in sides if isinstance(side, ast.Name)]
    values = [side.value for side in sides if isinstance(side, ast.Constant)]
    return names == ["__name__"] and values == ["__main__"]


class WorkerDiedError(PyamaError):
    """A stage's worker process died while it ran that stage alone: the stage itself kills it
    (most often the kernel's out-of-memory killer)."""


class PoolStoppedError(PyamaError):
    """The run was interrupted: its workers were stopped while this stage ran (not retried;
    the next run redoes the stage's unmarked output)."""


class StagePool:
    """``n_workers`` worker processes running stages (and other work: :meth:`call`); replaced
    when one dies.

    A dead worker fails every stage in the pool at that moment, not only the one that killed
    it, and nothing tells which that was. So each of them runs once more *alone*, the other
    stages waiting: the innocent ones finish, and a stage that kills its worker again, alone,
    is the culprit (:class:`WorkerDiedError`, not retried). Stages that died of two at once
    (two large FOVs filling memory together) also finish this way.
    """

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers
        self._lock = threading.Lock()
        self._executor = self._start()
        self._gate = threading.Condition()
        self._running = 0  # stages in the workers now
        self._alone_waiting = 0  # stages waiting to run alone, or running alone
        self._alone = threading.Lock()
        self._stopped = False  # set by terminate(): no replacement, no re-runs

    def _start(self) -> Future[ProcessPoolExecutor]:
        """Start the workers on a helper thread: starting one blocks until it exists (with
        ``forkserver``, until the server has imported pyama_lib), and the flow meanwhile has
        its own start-up to do."""
        starting: Future[ProcessPoolExecutor] = Future()

        def start() -> None:
            try:
                executor = ProcessPoolExecutor(
                    self.n_workers,
                    mp_context=_context(),
                    initializer=_init_worker,
                    initargs=(dict(os.environ),),
                )
                for _ in range(self.n_workers):  # one call per worker starts them all now
                    executor.submit(_ready)
                starting.set_result(executor)
            except BaseException as exc:  # surfaces in run()
                starting.set_exception(exc)

        threading.Thread(target=start, name="pyama-stage-pool-start", daemon=True).start()
        return starting

    def run(self, stage: str, job: FovJob) -> StageResult:
        """Run the stage in a worker and return its result (exceptions re-raised here)."""
        return self.call(f"fov_{job.fov:03d}", stage, _execute, stage, job)

    def call(self, label: str, work: str, fn: Callable[..., R], *args: object) -> R:
        """Run ``fn(*args)`` (picklable, module level) in a worker: other long CPU work than
        a stage, such as a chunk of fits. ``label`` and ``work`` name it in errors."""
        try:
            with self._shared():
                return self._submit(fn, args)
        except BrokenProcessPool:
            if self._stopped:
                raise PoolStoppedError(f"{label}: {work} stopped: interrupted") from None
            # some worker died; the pool is replaced
        with self._by_itself():
            try:
                return self._submit(fn, args)
            except BrokenProcessPool as exc:
                raise WorkerDiedError(
                    f"{label}: the worker process died running {work} on its own "
                    "(killed, most likely out of memory); the other work went on. Free memory "
                    "or use a larger machine, then run the same command again (finished work "
                    "is skipped)."
                ) from exc

    def _submit(self, fn: Callable[..., R], args: tuple[object, ...]) -> R:
        starting = self._executor
        executor = starting.result()
        try:
            return executor.submit(fn, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is starting and not self._stopped:  # first to notice replaces
                    # Wait until every old worker is gone: one still finishing a write must not
                    # overlap the re-run of its stage (one writer per array, always). Tasks
                    # that noticed too wait on the lock, so none re-runs before this returns.
                    executor.shutdown(wait=True, cancel_futures=True)
                    self._executor = self._start()
            raise

    def _shared(self) -> AbstractContextManager[None]:
        """Run alongside other stages, unless some stage waits to run alone."""
        return self._slot(lambda: self._alone_waiting == 0)

    @contextmanager
    def _by_itself(self) -> Iterator[None]:
        """Run with no other stage in the workers (new ones wait, running ones finish)."""
        with self._gate:
            self._alone_waiting += 1
        try:
            with self._alone, self._slot(lambda: self._running == 0):
                yield
        finally:
            with self._gate:
                self._alone_waiting -= 1
                self._gate.notify_all()

    @contextmanager
    def _slot(self, ready: Callable[[], bool]) -> Iterator[None]:
        """Count a stage as running in the workers, once ``ready()`` holds."""
        with self._gate:
            self._gate.wait_for(ready)
            self._running += 1
        try:
            yield
        finally:
            with self._gate:
                self._running -= 1
                self._gate.notify_all()

    def terminate(self) -> None:
        """Stop the workers now, mid-stage (the run was interrupted): their unmarked outputs
        are redone by the next run. Stages waiting on them fail with PoolStoppedError."""
        with self._lock:
            self._stopped = True
            starting = self._executor
        if starting.done() and starting.exception() is None:
            executor = starting.result()
            # The executor has no public way to stop running work (terminate_workers is
            # Python 3.14+): signal its processes, then let shutdown join them.
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.terminate()
            executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        starting = self._executor
        if starting.exception() is None:  # a failed start was reported by run() already
            starting.result().shutdown(wait=True, cancel_futures=True)


@contextmanager
def stop_workers_on_interrupt() -> Iterator[None]:
    """On Ctrl-C or SIGTERM inside the block, stop the open stage pool's workers at once.

    Put it inside the task runner's block: the runner waits for its running tasks on exit,
    and those wait for their stages in the workers, which would otherwise run to the end.
    (Without a pool, stages run on the task threads, which cannot be stopped: the runner then
    finishes the running stages before the interruption is recorded.)
    """
    try:
        yield
    except BaseException as exc:
        pool = _ACTIVE.get()
        if pool is not None and not isinstance(exc, Exception):
            pool.terminate()
        raise


@contextmanager
def stage_pool(n_workers: int) -> Iterator[StagePool]:
    """Open a :class:`StagePool` for the stage tasks submitted inside this block."""
    pool = StagePool(n_workers)
    token = _ACTIVE.set(pool)
    try:
        with stop_workers_on_interrupt():
            yield pool
    finally:
        _ACTIVE.reset(token)
        pool.close()
