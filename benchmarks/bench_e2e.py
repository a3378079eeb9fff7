"""End to end: the ``process_acquisition`` flow on the ephemeral Prefect API.

Each configuration (runner, workers) runs in a fresh process with a fresh output folder (in
``--quick`` mode all three share one process, so the smoke run pays one server start). Prefect
state lives in a temporary ``PREFECT_HOME`` shared by the runs of one benchmark
invocation (the first run creates its database; that happens before the flow body starts, so
it never counts in the flow's wall time).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from common import OUT, Record, ensure_synthetic, run_in_subprocess, shown_verdict, verdict

TARGET_SPEEDUP = 1.7
TARGET_OVERHEAD = 0.05  # orchestration share of the flow's wall time, default runner, 2 workers
CONFIGS = (("process", 1), ("process", 2), ("thread", 2))
FULL = {"n_fovs": 8, "n_frames": 60, "size": 1024, "n_cells": 64}
QUICK = {"n_fovs": 2, "n_frames": 32, "size": 256, "n_cells": 16}


def flow_case(input_path: str, out_dir: str, runner: str, n_workers: int) -> Record:
    """Child side: run the flow once; wall times and the summed per-stage seconds."""
    from flows.process import process_acquisition

    shutil.rmtree(out_dir, ignore_errors=True)
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    summary = process_acquisition(
        input_path, out_dir, pc=0, fl=[1], n_workers=n_workers, runner=runner, batch_size=2
    )
    call_wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    per_stage: dict[str, float] = {}
    for fov in summary.fovs:
        for stage, seconds in fov.seconds.items():
            if isinstance(seconds, float | int):  # "skipped" never happens in a fresh folder
                per_stage[stage] = per_stage.get(stage, 0.0) + float(seconds)
    stage_sum = sum(per_stage.values())
    wall = summary.wall_seconds
    # If the stage work were spread perfectly over the workers with nothing else going on, the
    # flow would take exactly Σstage / workers. Whatever the wall time exceeds that by is
    # orchestration (worker spawn, task submission and state round-trips to the API, result
    # pickling, run-level outputs) plus idle workers (imbalance, the tail where one FOV is
    # left). Share of the wall time: (wall − Σstage / workers) / wall.
    overhead = (wall - stage_sum / n_workers) / wall
    return {
        "runner": runner,
        "n_workers": n_workers,
        "batch_size": 2,
        "fovs_done": len(summary.fovs_done),
        "fovs_failed": len(summary.fovs_failed),
        "flow_wall_s": round(wall, 2),
        "call_wall_s": round(call_wall, 2),  # + ephemeral server start, flow-run creation
        "stage_sum_s": round(stage_sum, 2),
        "stage_sum_by_stage_s": {k: round(v, 2) for k, v in per_stage.items()},
        "overhead_share": round(overhead, 4),
        # busy CPU seconds of the whole machine during the call (this process, the stage
        # workers, the Prefect server, anything else) per wall second: how many cores worked
        "machine_cpu_s": round(cpu, 1),
        "cores_used": round(cpu / call_wall, 2),
    }


def _cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far (/proc/stat): the stage workers fork from a
    forkserver, so they are not this process's children and rusage would miss them."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def flow_cases(input_path: str, out_root: str, configs: list[list[Any]]) -> Record:
    """Child side, quick mode: every configuration in one process (one server start)."""
    runs = []
    for runner, workers in configs:
        out_dir = f"{out_root}/e2e_{runner}_{workers}"
        try:
            runs.append(flow_case(input_path, out_dir, runner, workers))
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {"runs": runs}


def _run_configs(path: str, env: dict[str, str], quick: bool) -> list[Record]:
    """Full mode: each configuration in a fresh process and output folder. Quick mode: all in
    one process, since the 10-30 s start of the ephemeral server would dominate a smoke run."""
    unset = ("PREFECT_API_URL",)  # always the ephemeral API
    if quick:
        kwargs = {"input_path": path, "out_root": str(OUT), "configs": list(CONFIGS)}
        res = run_in_subprocess("bench_e2e", "flow_cases", kwargs, env=env, unset_env=unset)
        return [{**run, "shared_process": True} for run in res["runs"]]
    results = []
    for runner, workers in CONFIGS:
        out_dir = OUT / f"e2e_{runner}_{workers}"
        kwargs = {"input_path": path, "out_dir": str(out_dir), "runner": runner,
                  "n_workers": workers}  # fmt: skip
        try:
            results.append(
                run_in_subprocess("bench_e2e", "flow_case", kwargs, env=env, unset_env=unset)
            )
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    return results


def run(quick: bool = False) -> list[Record]:
    """One record per configuration, then one with the 2-vs-1-worker speed-up."""
    sizes = QUICK if quick else FULL
    name = f"e2e_{sizes['n_fovs']}x{sizes['n_frames']}f_{sizes['size']}"
    path = ensure_synthetic(name, **sizes)
    OUT.mkdir(parents=True, exist_ok=True)
    prefect_home = tempfile.mkdtemp(prefix="prefect_home_", dir=OUT)
    env = {
        "PREFECT_HOME": prefect_home,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # a loaded shared machine can take longer than the default 20 s to start the server
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    records: list[Record] = []
    try:
        for res in _run_configs(path, env, quick):
            res.pop("child_seconds", None)
            records.append({"case": "e2e", "quick": quick, **sizes, **res})
    finally:
        shutil.rmtree(prefect_home, ignore_errors=True)
    by = {(r["runner"], r["n_workers"]): r for r in records}
    one, two = by[("process", 1)], by[("process", 2)]
    two["target_overhead_share"] = TARGET_OVERHEAD
    two["verdict"] = verdict(two["overhead_share"], TARGET_OVERHEAD, higher_is_better=False)
    speedup = one["flow_wall_s"] / two["flow_wall_s"]
    records.append(
        {
            "case": "e2e",
            "quick": quick,
            "metric": "speedup_process_2_vs_1",
            "speedup": round(speedup, 2),
            "speedup_call_wall": round(one["call_wall_s"] / two["call_wall_s"], 2),
            "target_speedup": TARGET_SPEEDUP,
            "verdict": verdict(speedup, TARGET_SPEEDUP, higher_is_better=True),
        }
    )
    return records


def table_rows(records: list[Record]) -> list[list[Any]]:
    """Rows of the summary table: case, measurement, value, target, verdict."""
    rows = []
    for r in records:
        if "runner" in r:
            what = (
                f"flow {r['n_fovs']} FOV × {r['n_frames']}×{r['size']}², {r['runner']} runner, "
                f"{r['n_workers']} worker(s): wall (Σstage {r['stage_sum_s']:.1f} s, "
                f"orchestration share {100 * r['overhead_share']:.1f}%, "
                f"call incl. server start {r['call_wall_s']:.1f} s, "
                f"cores used {r['cores_used']:.2f})"
            )
            if "target_overhead_share" in r:
                target = f"≤ {100 * r['target_overhead_share']:g}% orchestration"
                rows.append(["e2e", what, f"{r['flow_wall_s']:.1f} s", target, shown_verdict(r)])
            else:
                rows.append(["e2e", what, f"{r['flow_wall_s']:.1f} s", "–", "–"])
        else:
            what = "speed-up, process runner 2 vs 1 workers (flow wall"
            if not r.get("quick"):  # quick runs share one process: one server start in all
                what += f"; with server start {r['speedup_call_wall']:.2f}×"
            what += ")"
            target = f"≥ {r['target_speedup']:g}×"
            rows.append(["e2e", what, f"{r['speedup']:.2f}×", target, shown_verdict(r)])
    return rows
