"""Scaling out: ``pyama process`` on 1 and 2 Dask workers next to the process runner's 1 and 2
workers, and a Dask worker's peak memory per FOV size.

Each Dask case starts a cluster first (a scheduler in this process, workers as separate
processes, one thread each), as a lab's long-lived cluster would be, runs one untimed command
on it (the workers' first import), then times whole commands with ``--dask-address``: start-up,
the temporary Prefect server and store I/O included, medians of the repeats. The process
runner's cases time the same command with ``--workers N``. Memory: one FOV per size on a
one-worker cluster, the worker's peak RSS (Prefect, Dask and the stages) read in the worker.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench_io import _timed
from common import OUT, Record, ensure_synthetic

SIZES = {"n_fovs": 4, "n_frames": 40, "size": 1024, "n_cells": 100}
QUICK = {"n_fovs": 2, "n_frames": 4, "size": 256, "n_cells": 16}
#: FOV side -> cells per FOV, for the memory case (one FOV of 40 frames each).
MEMORY = {512: 25, 1024: 100, 2048: 400}
MEMORY_QUICK = {256: 16}
REPEATS, REPEATS_QUICK = 3, 1


def _cluster(n_workers: int) -> Any:
    import distributed

    return distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )


def _worker_peaks_mb(cluster: Any) -> list[float]:
    import distributed

    with distributed.Client(cluster) as client:
        usage = client.run(resource.getrusage, resource.RUSAGE_SELF)
    return sorted(round(u.ru_maxrss / 1024, 1) for u in usage.values())  # KiB on Linux


def _walls(args: list[str], out: Path, env: dict[str, str], repeats: int) -> list[float]:
    walls = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        walls.append(_timed([*args, "-o", str(out)], env))
    return walls


def run(quick: bool = False) -> list[Record]:
    sizes = QUICK if quick else SIZES
    repeats = REPEATS_QUICK if quick else REPEATS
    name = f"scale_{sizes['n_fovs']}x{sizes['n_frames']}f_{sizes['size']}"
    path = ensure_synthetic(name, **sizes)
    OUT.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="prefect_home_", dir=OUT)
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # the embedded default, as a first-time user has it
    out = OUT / "scaling_out"
    walls: dict[str, list[float]] = {}
    peaks: dict[int, float] = {}
    try:
        _timed(["process", path, "-o", str(out)], env)  # creates Prefect's database: not timed
        for n in (1, 2):
            walls[f"process_{n}"] = _walls(
                ["process", path, "--workers", str(n)], out, env, repeats
            )
            with _cluster(n) as cluster:
                dask = ["process", path, "--runner", "dask"]
                dask += ["--dask-address", cluster.scheduler_address]
                _walls(dask, out, env, 1)  # the workers import Prefect and pyama_lib: not timed
                walls[f"dask_{n}"] = _walls(dask, out, env, repeats)
        for side, cells in (MEMORY_QUICK if quick else MEMORY).items():
            one = ensure_synthetic(
                f"mem_1x40f_{side}", n_fovs=1, n_frames=40, size=side, n_cells=cells
            )
            with _cluster(1) as cluster:
                dask = ["process", one, "--runner", "dask"]
                _walls([*dask, "--dask-address", cluster.scheduler_address], out, env, 1)
                peaks[side] = _worker_peaks_mb(cluster)[0]
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    median = {case: round(statistics.median(w), 2) for case, w in walls.items()}
    return [
        {
            "case": "scaling",
            "quick": quick,
            **sizes,
            "wall_s": median,
            "walls_s": {case: [round(x, 2) for x in w] for case, w in walls.items()},
            "speedup_dask": round(median["dask_1"] / median["dask_2"], 2),
            "speedup_process": round(median["process_1"] / median["process_2"], 2),
            "cpus": os.cpu_count(),
        },
        {"case": "worker_memory", "quick": quick, "n_frames": 40, "peak_rss_mb": peaks},
    ]


def table_rows(records: list[Record]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for r in records:
        if r["case"] == "scaling":
            label = f"{r['n_fovs']} FOV × {r['n_frames']}×{r['size']}², `pyama process` wall"
            w = r["wall_s"]
            for runner in ("process", "dask"):
                what = f"{label}, {runner} runner: 1 worker {w[f'{runner}_1']:.1f} s, 2 workers"
                what += f" {w[f'{runner}_2']:.1f} s ({r['cpus']} cores)"
                rows.append(["scaling", what, f"{r[f'speedup_{runner}']:.2f}×", "–", "–"])
        else:
            for side, mb in r["peak_rss_mb"].items():
                what = f"Dask worker peak RSS, one {side}² FOV of {r['n_frames']} frames"
                rows.append(["scaling", what, f"{mb:.0f} MB", "–", "–"])
    return rows
