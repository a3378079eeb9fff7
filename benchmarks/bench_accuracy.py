"""Accuracy against ground truth: ``pyama process`` then ``pyama score`` on hard synthetic
acquisitions (cells arriving late, leaving, faint, small: ``pyama synth --hard``), with the
defaults (= PyAMA), the tracking options beyond PyAMA and ``--preset accurate``, averaged
over several seeds.

Whole commands, as a person runs them; the mean of each score over the seeds, and each
configuration's median wall time relative to the defaults'.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench_io import _timed
from common import OUT, Record, ensure_synthetic

SIZES = {"n_fovs": 4, "n_frames": 60, "size": 640, "n_cells": 64}
QUICK = {"n_fovs": 1, "n_frames": 32, "size": 320, "n_cells": 16}
SEEDS, SEEDS_QUICK = (1, 2, 3), (1,)
#: name -> the options of ``pyama process`` ("defaults" reproduce PyAMA), the intensity
#: column scored, and the synthetic reporter's brightness (1: dim, shot noise alone puts a
#: cell's summed intensity 2-3% off; 5: a bright reporter, the same cells otherwise).
TRACKING = OUT / "accuracy_tracking.yaml"  # written by run()
PRESET = ["--preset", "accurate"]
CONFIGS = {
    "defaults": ([], "intensity_total", 1.0),
    "new tracks + gaps": (["--params", str(TRACKING)], "intensity_total", 1.0),
    "preset accurate": (PRESET, "intensity_local_trimmed", 1.0),
    "defaults, 5× brighter reporter": ([], "intensity_total", 5.0),
    "preset accurate, 5× brighter reporter": (PRESET, "intensity_local_trimmed", 5.0),
}
#: The accuracy issue's targets for its preset.
TARGETS = {"recall": 0.97, "precision": 0.99, "purity": 0.999, "median_abs": 0.015}
TARGETS |= {"border_signed": 0.01}


def _score(out: Path, truth: Path, feature: str) -> dict[str, Any]:
    from pyama_lib.synthetic.scoring import score_output

    return score_output(out, truth, feature=feature).as_dict()


def run(quick: bool = False) -> list[Record]:
    sizes = QUICK if quick else SIZES
    seeds = SEEDS_QUICK if quick else SEEDS
    OUT.mkdir(parents=True, exist_ok=True)
    TRACKING.write_text("tracking:\n  start_new_tracks: true\n  max_gap: 2\n")
    home = tempfile.mkdtemp(prefix="prefect_home_", dir=OUT)
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    out = OUT / "accuracy_out"
    scores: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    walls: dict[str, list[float]] = {name: [] for name in CONFIGS}
    try:
        for seed in seeds:
            for config, (options, feature, brightness) in CONFIGS.items():
                name = f"hard_{sizes['n_fovs']}x{sizes['n_frames']}f_{sizes['size']}_s{seed}"
                extra = {"brightness": brightness} if brightness != 1.0 else {}
                name += f"_b{brightness:g}" if extra else ""
                path = ensure_synthetic(name, **sizes, seed=seed, hard=True, **extra)
                if not walls["defaults"]:  # creates Prefect's database: not timed
                    _timed(["process", path, "-o", str(out)], env)
                shutil.rmtree(out, ignore_errors=True)
                walls[config].append(_timed(["process", path, "-o", str(out), *options], env))
                scores[config].append(_score(out, Path(path).parent, feature))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    base_wall = statistics.median(walls["defaults"])
    records = []
    for config in CONFIGS:
        runs = scores[config]

        def mean(get: Any, runs: list[dict[str, Any]] = runs) -> float:
            return round(statistics.fmean(get(r) for r in runs), 4)

        records.append(
            {
                "case": "accuracy",
                "quick": quick,
                "config": config,
                **sizes,
                "seeds": list(seeds),
                "true_cells_per_seed": [r["n_true_cells"] for r in runs],
                "recall": mean(lambda r: r["recall"]),
                "precision": mean(lambda r: r["precision"]),
                "purity": mean(lambda r: r["purity"]),
                "median_abs_error": mean(lambda r: r["intensity_error"]["median_abs"]),
                "border_signed_median": mean(
                    lambda r: r["intensity_error"]["border_signed_median"]
                ),
                "misses": {k: sum(r["misses"][k] for r in runs) for k in runs[0]["misses"]},
                "wall_ratio_to_defaults": round(statistics.median(walls[config]) / base_wall, 2),
            }
        )
    return records


def table_rows(records: list[Record]) -> list[list[Any]]:
    rows = []
    for r in records:
        what = (
            f"{r['config']}: recall / precision / purity, {r['n_fovs']} FOV × {r['n_frames']}"
            f"×{r['size']}² hard synthetic, mean of seeds {r['seeds']}"
        )
        value = f"{r['recall']:.3f} / {r['precision']:.3f} / {r['purity']:.4f}"
        target = f"≥ {TARGETS['recall']} / ≥ {TARGETS['precision']} / ≥ {TARGETS['purity']}"
        rows.append(["accuracy", what, value, target, "–"])
        what = f"{r['config']}: median \\|intensity error\\|, signed median at the border"
        value = f"{r['median_abs_error']:.1%}, {r['border_signed_median']:+.1%}"
        target = f"≤ {TARGETS['median_abs']:.1%}, within ±{TARGETS['border_signed']:.0%}"
        rows.append(["accuracy", what, value, target, "–"])
        misses = ", ".join(f"{k} {n}" for k, n in r["misses"].items())
        rows.append(["accuracy", f"{r['config']}: missed cells (all seeds)", misses, "–", "–"])
        what = f"{r['config']}: `pyama process` wall / the defaults'"
        rows.append(["accuracy", what, f"{r['wall_ratio_to_defaults']:.2f}×", "≤ 1.5×", "–"])
    return rows
