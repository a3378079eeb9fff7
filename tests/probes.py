"""Functions the tests run inside other processes (a subprocess, a Dask worker)."""

from __future__ import annotations

import resource

import numpy as np


def frame_faults(repeats: int = 5) -> int:
    """Minor page faults of allocating and filling a 2048² float64 frame (32 MB, as the
    background's spline surface) ``repeats`` more times after a first one. Fresh memory faults
    at least once per 2 MB page on first touch, so at least 16 times per frame."""

    def frame() -> float:
        a = np.empty((2048, 2048))
        a.fill(1.0)
        return float(a[-1, -1])

    frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        frame()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


#: The fewest page faults of one fresh 2048² float64 frame.
FRESH_FRAME_FAULTS = 2048 * 2048 * 8 // (2 << 20)


def running_tasks(dask_worker) -> list[str]:  # noqa: ANN001 (Dask passes its Worker)
    """The keys of the tasks a Dask worker's threads still execute, cancelled ones included."""
    busy = ("executing", "long-running", "cancelled", "resumed")
    return [str(ts.key) for ts in dask_worker.state.tasks.values() if ts.state in busy]
