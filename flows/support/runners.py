"""Task runners for the per-FOV stages, and sharing one Prefect API with worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pyama_lib.core.errors import ParamsError

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

RUNNERS = ("process", "thread", "dask")


def make_task_runner(runner: str, n_workers: int, dask_address: str | None = None) -> TaskRunner:
    """The Prefect task runner of the stage tasks for ``runner``.

    ``process`` and ``thread`` run the tasks on ``n_workers`` threads; with ``process`` the
    flow also opens a stage pool (:func:`stage_workers`), so the stages themselves run in
    worker processes. ``dask`` connects to the cluster at ``dask_address``
    (``tcp://host:8786``) or, when it is None, starts a local cluster of ``n_workers``
    single-threaded worker processes.
    """
    if n_workers < 1:
        raise ParamsError(f"n_workers must be at least 1, got {n_workers}")
    if runner in ("process", "thread"):
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=n_workers)
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True}
        )
    raise ParamsError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")


@contextmanager
def stage_workers(runner: str, n_workers: int) -> Iterator[None]:
    """What the stage tasks' workers need during a run.

    ``process``: ``n_workers`` worker processes for the stages
    (:mod:`pyama_lib.pipeline.pool`). ``dask``: this run's Prefect API, published to the Dask
    workers (:func:`workers_share_api`).
    ``thread``: nothing.
    """
    if runner == "process":
        from pyama_lib.pipeline.pool import stage_pool

        with stage_pool(n_workers):
            yield
    elif runner == "dask":
        with workers_share_api():
            yield
    else:
        yield


@contextmanager
def workers_share_api() -> Iterator[None]:
    """Point worker processes that run Prefect tasks (Dask's) at this run's Prefect API.

    Without ``PREFECT_API_URL`` Prefect runs a temporary server for this process, and every
    worker would start one of its own, seconds each. Workers inherit the environment, so
    publishing the URL the current client talks to makes them share.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    # Spawned processes read the environment; prefect-dask ships the current *settings* to
    # Dask workers, so publish the URL both ways.
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
