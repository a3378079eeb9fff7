"""A lab's volume: merge 500 FOVs, fit up to 100 000 cells; time linear, memory bounded.

- ``merge``: ``pyama merge`` on a processing output of 500 FOVs × 100 cells × 180 frames (9 M
  trace rows, :func:`scale_inputs.ensure_traces_folder`), as a person runs it: a fresh process
  with Prefect's temporary server, start-up included; median of 3 after one run that creates
  Prefect's database. Peak RSS is the largest of the command's processes. Beside it the library
  call ``merge_samples`` alone, in a fresh process.
- ``fit``: ``pyama fit`` (2 workers) on one analysis CSV of 600, 20 000 and 100 000 cells ×
  180 points (the fit bench's traces), one run each; cells/s per core is cells / wall / 2,
  start-up included. The fixed cost is the same command on 60 cells; the rate past it is
  (cells − 60) / (wall − fixed) / 2. Beside them, in the same run, ``fit_cells``' own rate on
  one core (best of 2): the ceiling of the command's rate.

The many-FOV processing half of the case is :mod:`bench_scale_fovs`, a TIFF-sequence folder
of up to 100 000 files :mod:`bench_scale_sequence`; :func:`run` runs them last.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import bench_scale_fovs
import bench_scale_sequence
from common import OUT, REPO, Record, run_in_subprocess
from scale_inputs import ensure_fit_csv, ensure_traces_folder

MERGE = {"n_fovs": 500, "n_cells": 100, "n_frames": 180}
MERGE_QUICK = {"n_fovs": 20, "n_cells": 20, "n_frames": 30}
FIT_SIZES = (600, 20_000, 100_000)
FIT_QUICK = (60, 600)
WORKERS = 2
TARGET_MERGE_S = 30.0
TARGET_MERGE_MB = 1024.0
TARGET_FIT_MB = 1024.0
TARGET_FIT_PER_CORE = 1000.0


def _command(args: list[str], home: str) -> tuple[float, float]:
    """Wall seconds and the largest peak RSS (MiB) of ``pyama <args>`` and its children."""
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_LOGGING_LEVEL": "ERROR"}
    env.pop("PREFECT_API_URL", None)  # the command's own temporary server, as on a fresh shell
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
    )
    wall = time.perf_counter() - start
    # A child's ru_maxrss is the largest of the waited-for descendants so far; each
    # measurement runs in its own fresh process (run_in_subprocess), so this is this command's.
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def merge_command(n_fovs: int, n_cells: int, n_frames: int, runs: int) -> Record:
    """Child side: ``pyama merge`` ``runs`` + 1 times; the first is reported, not counted."""
    folder = ensure_traces_folder(n_fovs, n_cells, n_frames)
    home = str(OUT / "scale_prefect")
    walls, peak = [], 0.0
    for _ in range(runs + 1):
        out = OUT / "scale_merged"
        shutil.rmtree(out, ignore_errors=True)
        wall, peak = _command(["merge", str(folder), "-o", str(out)], home)
        walls.append(wall)
    shutil.rmtree(OUT / "scale_merged", ignore_errors=True)
    return {
        "first_s": round(walls[0], 2),
        "median_s": round(statistics.median(walls[1:]), 2),
        "runs_s": [round(w, 2) for w in walls[1:]],
        "command_peak_rss_mb": round(peak, 1),
    }


def merge_library(n_fovs: int, n_cells: int, n_frames: int) -> Record:
    """Child side: ``merge_samples`` alone, all FOVs one sample."""
    from pyama_lib.analysis.merge import merge_samples
    from pyama_lib.io.samples import Sample

    folder = ensure_traces_folder(n_fovs, n_cells, n_frames)
    out = OUT / "scale_merged_lib"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = merge_samples(folder, [Sample("all", tuple(range(n_fovs)))], out)
    wall = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": round(wall, 2), "cells": result.cells["all"]}


def fit_command(n_cells: int) -> Record:
    """Child side: ``pyama fit`` once on ``n_cells`` cells, and its fixed cost: the same
    command on 60 cells (after a first run that creates Prefect's database)."""
    home = str(OUT / "scale_prefect")
    small = ["fit", str(ensure_fit_csv(60)), "--workers", str(WORKERS)]
    _command(small, home)
    fixed, _ = _command(small, home)
    wall, peak = _command(["fit", str(ensure_fit_csv(n_cells)), "--workers", str(WORKERS)], home)
    return {
        "wall_s": round(wall, 2),
        "fixed_s": round(fixed, 2),
        "command_peak_rss_mb": round(peak, 1),
    }


def fit_rate(n_cells: int) -> Record:
    """Child side: ``fit_cells``' own cells/s on one core (CPU time, best of 2)."""
    from pyama_lib.analysis.fitting import fit_cells
    from pyama_lib.synthetic.cells import maturation_traces

    t, y, _ = maturation_traces(n_cells, 180, 0)
    fit_cells(t, y[:8])
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        fit_cells(t, y)
        best = min(best, time.process_time() - start)
    return {"cells_per_s_core": round(n_cells / best, 1)}


def run(quick: bool = False) -> list[Record]:
    """The merge and fit rows."""
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    size = MERGE_QUICK if quick else MERGE
    # Generated first, in a process of its own: the measured processes only read it.
    run_in_subprocess("scale_inputs", "traces_folder_path", size)
    command = run_in_subprocess("bench_scale", "merge_command", {**size, "runs": 1 if quick else 3})
    library = run_in_subprocess("bench_scale", "merge_library", size)
    records: list[Record] = [
        {
            "case": "scale_merge",
            "date": date,
            "quick": quick,
            **size,
            **command,
            "library_wall_s": library["wall_s"],
            "library_peak_rss_mb": library["peak_rss_mb"],
            "cells": library["cells"],
        }
    ]
    threads = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    ceiling = run_in_subprocess("bench_scale", "fit_rate", {"n_cells": 600}, env=threads)
    for n_cells in FIT_QUICK if quick else FIT_SIZES:
        run_in_subprocess("scale_inputs", "fit_csv_path", {"n_cells": n_cells})
        fit = run_in_subprocess("bench_scale", "fit_command", {"n_cells": n_cells})
        per_core = n_cells / fit["wall_s"] / WORKERS
        # Past the fixed cost (start-up, Prefect's server, figures of a small file)
        marginal = (n_cells - 60) / max(fit["wall_s"] - fit["fixed_s"], 1e-3) / WORKERS
        records.append(
            {
                "case": "scale_fit",
                "date": date,
                "quick": quick,
                "n_cells": n_cells,
                "workers": WORKERS,
                "wall_s": fit["wall_s"],
                "ms_per_cell": round(1000.0 * fit["wall_s"] / n_cells, 3),
                "cells_per_s_core": round(per_core, 1),
                "fixed_s": fit["fixed_s"],
                "marginal_cells_per_s_core": round(marginal, 1),
                "fit_cells_per_s_core": ceiling["cells_per_s_core"],
                "command_peak_rss_mb": fit["command_peak_rss_mb"],
            }
        )
    return records + bench_scale_sequence.run(quick=quick) + bench_scale_fovs.run(quick=quick)


def _mark(value: float, target: float, higher_is_better: bool, quick: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    return ("met" if met else "missed") + (" (quick sizes)" if quick else "")


def table_rows(records: list[Record]) -> list[list[Any]]:
    """Rows of the summary table: case, measurement, value, target, verdict."""
    rows: list[list[Any]] = []
    for r in records:
        if r["case"] not in ("scale_merge", "scale_fit"):
            continue
        if r["case"] == "scale_merge":
            what = (
                f"`pyama merge`, {r['n_fovs']} FOVs × {r['n_cells']} cells × {r['n_frames']} "
                f"frames, start-up included (median of {len(r['runs_s'])}); peak RSS "
                f"{r['command_peak_rss_mb']:.0f} MB; library alone {r['library_wall_s']:.1f} s, "
                f"{r['library_peak_rss_mb']:.0f} MB"
            )
            ok = r["median_s"] <= TARGET_MERGE_S and r["command_peak_rss_mb"] <= TARGET_MERGE_MB
            verdict = ("met" if ok else "missed") + (" (quick sizes)" if r["quick"] else "")
            rows.append(["scale", what, f"{r['median_s']:.1f} s", "≤ 30 s, ≤ 1 GB", verdict])
        elif r["case"] == "scale_fit":
            what = (
                f"`pyama fit`, {r['n_cells']} cells × 180 points, {r['workers']} workers: "
                f"{r['wall_s']:.1f} s ({r['ms_per_cell']:.2f} ms per cell), peak RSS "
                f"{r['command_peak_rss_mb']:.0f} MB; past the fixed {r['fixed_s']:.1f} s "
                f"(the command on 60 cells) {r['marginal_cells_per_s_core']:.0f} cells/s per "
                f"core; fit_cells alone {r['fit_cells_per_s_core']:.0f}"
            )
            rows.append(
                [
                    "scale",
                    what,
                    f"{r['cells_per_s_core']:.0f} cells/s per core",
                    "≥ 1000 cells/s per core, < 1 GB",
                    _mark(r["cells_per_s_core"], TARGET_FIT_PER_CORE, True, r["quick"]),
                ]
            )
    return rows + bench_scale_sequence.table_rows(records) + bench_scale_fovs.table_rows(records)
