"""The whole command as a person times it, at 2048²: ``pyama process`` on a zlib OME-TIFF.

Three fresh runs of ``pyama process`` (start-up, the temporary Prefect server and store I/O
included) on 2 FOVs × 40 frames × 2048² with one phase-contrast and one fluorescence channel;
per-stage ms per FOV-frame from each run's ``run.yaml``; then the fixed cost: a no-op re-run
over the complete output, a ``--stages`` typo, and the issue's small case (4 FOVs × 60 frames
× 640²) as a whole command. Medians of the three.

PyAMA is not installed here, so no ratio against it is printed: its times on these
acquisitions were taken on another host and day, and a ratio counts only side by side.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import OUT, Record, ensure_synthetic, verdict

SIZES = {"n_fovs": 2, "n_frames": 40, "size": 2048, "n_cells": 400, "compression": "zlib"}
QUICK = {"n_fovs": 1, "n_frames": 4, "size": 256, "n_cells": 16, "compression": "zlib"}
#: Per-stage guides incl. store I/O, ms per FOV-frame (set on another host: guides, not limits).
TARGET_MS = {"copy": 130, "segment": 110, "correct": 100, "track": 30, "extract": 25}
TARGET_SUM_MS = 400
#: A smaller case: 4 FOVs x 60 frames x 640² zlib.
SMALL = {"n_fovs": 4, "n_frames": 60, "size": 640, "n_cells": 64, "compression": "zlib"}
PYAMA = str(Path(sys.executable).parent / "pyama")


def _timed(args: list[str], env: dict[str, str], status: int = 0) -> float:
    """Wall seconds of ``pyama ARGS``; RuntimeError unless it exits with ``status``."""
    start = time.perf_counter()
    done = subprocess.run([PYAMA, *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != status:
        raise RuntimeError(f"pyama {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return seconds


def _stage_ms(out: Path, n_frames: int) -> dict[str, float]:
    run = yaml.safe_load((out / "run.yaml").read_text())["runs"][-1]
    per: dict[str, float] = {}
    for stages in run["timings"].values():
        for stage, seconds in stages.items():
            per[stage] = per.get(stage, 0.0) + float(seconds)
    n_fov_frames = n_frames * len(run["timings"])
    return {stage: 1000 * s / n_fov_frames for stage, s in per.items()}


def _ngff_ms_per_fov(out: Path, path: str) -> float:
    """What the OME-Zarr metadata costs a FOV's first run: each array's writer lists the
    store once it is complete, and the extract stage, which writes no array, once."""
    from pyama_lib.io.readers.acquisition import acquisition_base_name
    from pyama_lib.io.store import FovStore

    store = FovStore(out, acquisition_base_name(Path(path)), 0)
    seconds = []
    for _ in range(20):
        start = time.perf_counter()
        store.write_ngff_metadata()
        seconds.append(time.perf_counter() - start)
    return 1000 * (len(store.array_names()) + 1) * statistics.median(seconds)


def run(quick: bool = False) -> list[Record]:
    sizes = QUICK if quick else SIZES
    name = f"e2e_{sizes['n_fovs']}x{sizes['n_frames']}f_{sizes['size']}_zlib"
    path = ensure_synthetic(name, **sizes)
    small = QUICK if quick else SMALL
    small_path = ensure_synthetic(
        f"e2e_{small['n_fovs']}x{small['n_frames']}f_{small['size']}_zlib", **small
    )
    OUT.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="prefect_home_", dir=OUT)
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # the embedded default, as a first-time user has it
    out = OUT / "io_out"
    walls, stages, noops, typos, small_walls, ngff = [], [], [], [], [], []
    try:
        _timed(["process", path, "-o", str(out)], env)  # creates Prefect's database: not timed
        for _ in range(1 if quick else 3):
            shutil.rmtree(out, ignore_errors=True)
            walls.append(_timed(["process", path, "-o", str(out)], env))
            stages.append(_stage_ms(out, sizes["n_frames"]))
            ngff.append(_ngff_ms_per_fov(out, path))
            noops.append(_timed(["process", path, "-o", str(out)], env))
            run = yaml.safe_load((out / "run.yaml").read_text())["runs"][-1]
            if {v for stages in run["timings"].values() for v in stages.values()} != {"skipped"}:
                raise RuntimeError(f"the no-op re-run over {out} did work: {run['timings']}")
            typo = ["process", path, "-o", str(out), "--stages", "segmnt"]
            typos.append(_timed(typo, env, status=2))
            shutil.rmtree(out, ignore_errors=True)
            small_walls.append(_timed(["process", small_path, "-o", str(out)], env))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    ms = {s: statistics.median(run[s] for run in stages) for s in stages[0]}
    return [
        {
            "case": "io",
            "quick": quick,
            **sizes,
            "wall_s": round(statistics.median(walls), 2),
            "walls_s": [round(w, 2) for w in walls],
            "stage_ms_per_frame": {s: round(v, 1) for s, v in ms.items()},
            "stage_sum_ms": round(sum(ms.values()), 1),
            "noop_rerun_s": round(statistics.median(noops), 2),
            "stage_typo_s": round(statistics.median(typos), 2),
            "ngff_metadata_ms_per_fov": round(statistics.median(ngff), 1),
            "small": small,
            "small_wall_s": round(statistics.median(small_walls), 2),
            "small_walls_s": [round(w, 2) for w in small_walls],
        }
    ]


def table_rows(records: list[Record]) -> list[list[Any]]:
    rows = []
    for r in records:
        label = f"{r['n_fovs']} FOV × {r['n_frames']}×{r['size']}² zlib"
        for stage, value in r["stage_ms_per_frame"].items():
            what = f"{stage}, {label}, incl. store I/O: ms/frame"
            target = TARGET_MS[stage]
            ok = "–" if r["quick"] else verdict(value, target, higher_is_better=False)
            rows.append(["io", what, f"{value:.0f}", f"≤ {target}", ok])
        total = r["stage_sum_ms"]
        ok = "–" if r["quick"] else verdict(total, TARGET_SUM_MS, higher_is_better=False)
        rows.append(["io", "Σ stages, ms/frame", f"{total:.0f}", f"≤ {TARGET_SUM_MS}", ok])
        what = f"{label}, `pyama process` wall, start-up included (runs {r['walls_s']})"
        rows.append(["io", what, f"{r['wall_s']:.1f} s", "–", "–"])
        rows.append(["io", "no-op re-run over the complete output (embedded API)",
                     f"{r['noop_rerun_s']:.1f} s", "≤ 8 s", "–"])  # fmt: skip
        rows.append(["io", "`--stages` typo reported", f"{r['stage_typo_s']:.1f} s", "< 2 s", "–"])
        rows.append(["io", "OME-Zarr metadata writes, ms per FOV (of its stages' seconds)",
                     f"{r['ngff_metadata_ms_per_fov']:.0f}", "–", "–"])  # fmt: skip
        small = r["small"]
        what = (
            f"{small['n_fovs']} FOV × {small['n_frames']}×{small['size']}² zlib, `pyama process` "
            f"wall, start-up included (runs {r['small_walls_s']})"
        )
        rows.append(["io", what, f"{r['small_wall_s']:.1f} s", "–", "–"])
    return rows
