"""Fitting: cells/s per core of ``fit_cells`` against PyAMA's one-cell-at-a-time loop.

Traces: 600 cells x 180 frames (every 10 min, 30 h) from
``pyama_lib.synthetic.cells.maturation_traces``: the kinetics the synthetic acquisitions draw
(t0 0.1-0.9 h, ktl 1e3-1e4, km 0.5-3/h, delta 0.05-0.3/h, beta 0.002-0.03/h, log-uniform),
an offset of +-200, and 75 % of the cells expressing (the others flat at their offset);
Gaussian noise of 5 % of the cell's peak (of the peak it would have had, for a
non-expressing cell). The reference is PyAMA's way: per
cell, NaN points dropped, ``scipy.optimize.least_squares`` from the defaults within the
bounds (finite-difference Jacobian). Both run single-threaded (BLAS pinned to one thread)
and are timed on CPU time, so the number is per core; ours is the best of three passes.
Reported: both throughputs and the speed-up, median R^2 of each, and the fraction of cells
where our R^2 is at least the loop's (within 1e-9), overall and for expressing cells; the
same for ``fit_cells(..., thorough=True)`` (``pyama fit --thorough``), best of two passes.

A second record times the command a person runs, ``pyama fit`` on the same cells written as
one analysis CSV: the whole command (start-up, Prefect's temporary server, reading, fitting,
writing the results and figures; median of 3), against the loop's wall time on those cells.
"""

from __future__ import annotations

import time
from typing import Any

from common import OUT, REPO, Record, run_in_subprocess, shown_verdict, verdict

TARGET_CELLS_PER_S = 1000.0
TARGET_COMMAND_RATIO = 0.5  # pyama fit must take well under half the loop's time
FULL = {"n_cells": 600, "n_t": 180, "seed": 0}
QUICK = {"n_cells": 60, "n_t": 180, "seed": 0}


def traces(n_cells: int, n_t: int, seed: int) -> tuple[Any, Any, Any]:
    """(t_hours, y (n_cells, n_t), expresses) from a fixed seed (``maturation_traces``)."""
    from pyama_lib.synthetic.cells import maturation_traces

    return maturation_traces(n_cells, n_t, seed)


def pyama_loop(t: Any, y: Any) -> Any:
    """R^2 per cell of PyAMA's fit: one ``least_squares`` per cell from the defaults."""
    import numpy as np
    from scipy.optimize import least_squares

    from pyama_lib.analysis.models import get_model, resolve_start_and_bounds

    model = get_model("maturation")
    x0, lower, upper = resolve_start_and_bounds(model)
    r2 = np.zeros(y.shape[0])
    for i, row in enumerate(y):
        keep = np.isfinite(row) & np.isfinite(t)
        tt, yy = t[keep], row[keep]
        if yy.size < x0.size:
            continue
        fit = least_squares(
            lambda p, tt=tt, yy=yy: yy - model.evaluate(tt, p[None, :])[0],
            x0,
            bounds=(lower, upper),
        )
        ss_tot = float(((yy - yy.mean()) ** 2).sum())
        if ss_tot > 0:
            r2[i] = min(1.0, max(0.0, 1.0 - float((fit.fun**2).sum()) / ss_tot))
    return r2


def fit_case(n_cells: int, n_t: int, seed: int) -> Record:
    """Child side: time fit_cells (best of 3, CPU) and the per-cell loop on the same cells."""
    import numpy as np

    from pyama_lib.analysis.fitting import fit_cells

    t, y, expresses = traces(n_cells, n_t, seed)
    fit_cells(t, y[:8])  # first-call costs (imports, allocator) out of the timing

    def best_of(passes: int, thorough: bool) -> tuple[Any, float, float]:
        """The fit, and its least CPU and wall time over ``passes`` passes."""
        cpu = wall = float("inf")
        for _ in range(passes):
            w0, c0 = time.perf_counter(), time.process_time()
            fitted = fit_cells(t, y, thorough=thorough)
            cpu = min(cpu, time.process_time() - c0)
            wall = min(wall, time.perf_counter() - w0)
        return fitted, cpu, wall

    result, cpu, wall = best_of(3, thorough=False)
    thorough, thorough_cpu, _ = best_of(2, thorough=True)
    w0, c0 = time.perf_counter(), time.process_time()
    r2_loop = pyama_loop(t, y)
    loop_cpu, loop_wall = time.process_time() - c0, time.perf_counter() - w0
    ours = result.r_squared
    at_least = ours >= r2_loop - 1e-9
    return {
        "n_cells": n_cells,
        "n_t": n_t,
        "expressing": int(expresses.sum()),
        "cells_per_s_core": round(n_cells / cpu, 1),
        "wall_s": round(wall, 3),
        "loop_cells_per_s_core": round(n_cells / loop_cpu, 2),
        "loop_wall_s": round(loop_wall, 2),
        "speedup": round(loop_cpu / cpu, 1),
        "median_r2": round(float(np.median(ours)), 5),
        "median_r2_loop": round(float(np.median(r2_loop)), 5),
        "frac_r2_at_least_loop": round(float(at_least.mean()), 4),
        "frac_r2_at_least_loop_expressing": round(float(at_least[expresses].mean()), 4),
        "worst_r2_deficit": float(np.min(ours - r2_loop)),
        "min_r2_expressing": round(float(ours[expresses].min()), 4),
        "success": round(float(result.success.mean()), 4),
        "thorough_cells_per_s_core": round(n_cells / thorough_cpu, 1),
        "thorough_speedup": round(loop_cpu / thorough_cpu, 1),
        "thorough_frac_r2_at_least_loop": round(
            float((thorough.r_squared >= r2_loop - 1e-9).mean()), 4
        ),
        "thorough_worst_r2_deficit": float(np.min(thorough.r_squared - r2_loop)),
    }


def command_case(n_cells: int, n_t: int, seed: int, loop_wall_s: float) -> Record:
    """Time ``pyama fit`` (a fresh process each time, as a person runs it) on these cells."""
    import os
    import shutil
    import statistics
    import subprocess
    import sys

    import pandas as pd

    from pyama_lib.io.analysis_csv import write_analysis_csv

    t, y, _ = traces(n_cells, n_t, seed)
    folder = OUT / "fit_command"
    shutil.rmtree(folder, ignore_errors=True)
    table = pd.DataFrame(y.T, columns=[f"fov_000_cell_{i + 1}" for i in range(n_cells)])
    table.insert(0, "time", t * 60.0)
    csv = write_analysis_csv(table, folder / "bench_intensity_total_ch_1.csv")
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect"), "PREFECT_LOGGING_LEVEL": "ERROR"}
    env.pop("PREFECT_API_URL", None)  # the command's own temporary server, as on a fresh shell
    walls = []
    for _ in range(4):  # the first run creates Prefect's database: reported, not counted
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "flows.cli", "fit", str(csv)],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        walls.append(time.perf_counter() - start)
    median = statistics.median(walls[1:])
    return {
        "command_first_s": round(walls[0], 2),
        "command_median_s": round(median, 2),
        "loop_wall_s": round(loop_wall_s, 2),
        "ratio": round(median / loop_wall_s, 3),
    }


def run(quick: bool = False) -> list[Record]:
    """Two records: the fit in a fresh single-threaded process, and ``pyama fit``."""
    sizes = QUICK if quick else FULL
    threads = {v: "1" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    result = run_in_subprocess("bench_fit", "fit_case", sizes, env=threads)
    record: Record = {"case": "fit", "model": "maturation", "quick": quick, **result}
    record["target_cells_per_s_core"] = TARGET_CELLS_PER_S
    record["verdict"] = verdict(
        result["cells_per_s_core"], TARGET_CELLS_PER_S, higher_is_better=True
    )
    record["thorough_verdict"] = verdict(
        result["thorough_frac_r2_at_least_loop"], 1.0, higher_is_better=True
    )
    command = run_in_subprocess(
        "bench_fit", "command_case", {**sizes, "loop_wall_s": result["loop_wall_s"]}
    )
    timed: Record = {"case": "fit_command", "quick": quick, "n_cells": sizes["n_cells"], **command}
    timed["verdict"] = verdict(command["ratio"], TARGET_COMMAND_RATIO, higher_is_better=False)
    return [record, timed]


def table_rows(records: list[Record]) -> list[list[Any]]:
    """Rows of the summary table: case, measurement, value, target, verdict."""
    rows = []
    for r in records:
        if r["case"] == "fit_command":
            rows.append(
                [
                    "fit",
                    f"`pyama fit` on one CSV of {r['n_cells']} cells, start-up included: "
                    f"{r['command_median_s']:.1f} s (first run, new Prefect database: "
                    f"{r['command_first_s']:.1f} s) vs the loop's {r['loop_wall_s']:.1f} s",
                    f"{r['ratio']:.2f}×",
                    f"< {TARGET_COMMAND_RATIO}×",
                    shown_verdict(r),
                ]
            )
            continue
        what = f"fit_cells maturation, {r['n_cells']} cells × {r['n_t']} points, 5 % noise"
        rows.append(
            [
                "fit",
                f"{what}: cells/s per core (PyAMA's loop {r['loop_cells_per_s_core']:.1f}, "
                f"{r['speedup']:.0f}× faster)",
                f"{r['cells_per_s_core']:.0f}",
                f"≥ {TARGET_CELLS_PER_S:.0f}",
                shown_verdict(r),
            ]
        )
        rows.append(
            [
                "fit",
                f"{what}: R² ≥ the loop's (expressing cells "
                f"{100 * r['frac_r2_at_least_loop_expressing']:.1f} %; median R² "
                f"{r['median_r2']:.4f} vs {r['median_r2_loop']:.4f})",
                f"{100 * r['frac_r2_at_least_loop']:.1f} % of cells",
                "100 %",
                "–",
            ]
        )
        rows.append(
            [
                "fit",
                f"{what}, `thorough=True` (`pyama fit --thorough`): R² ≥ the loop's, at "
                f"{r['thorough_cells_per_s_core']:.0f} cells/s per core "
                f"({r['thorough_speedup']:.0f}× the loop)",
                f"{100 * r['thorough_frac_r2_at_least_loop']:.1f} % of cells",
                "100 %",
                shown_verdict({**r, "verdict": r["thorough_verdict"]}),
            ]
        )
    return rows
