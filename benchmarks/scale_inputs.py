"""Inputs of the ``scale`` case at a lab's volume, built here and cached under ``out/data``.

- :func:`ensure_traces_folder`: a processing output folder as a run leaves it for the merge
  (``processing_results.yaml`` and one traces CSV per FOV), FOVs × cells × frames of
  plausible traces: cells appear at a random frame and stay, about one in ten is marked bad,
  intensities rise as a maturing fluorophore would.
- :func:`ensure_fit_csv`: one analysis CSV of ``n_cells`` maturation traces (the fit bench's
  generator) as ``pyama merge`` writes it.

Both are deterministic; a ``params.json`` written last marks a complete set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import DATA


def _cached(name: str, wanted: dict[str, Any]) -> tuple[Path, bool]:
    folder = DATA / name
    marker = folder / "params.json"
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return folder, True
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder, False


def ensure_traces_folder(n_fovs: int, n_cells: int, n_frames: int, seed: int = 0) -> Path:
    """The output folder (made when missing): ``n_fovs`` FOVs of ``n_cells`` cells, channel 1."""
    from pyama_lib.core.selection import Channels
    from pyama_lib.io.results_yaml import FovResults, ProcessingResults, save_results

    wanted = {"n_fovs": n_fovs, "n_cells": n_cells, "n_frames": n_frames, "seed": seed}
    folder, done = _cached(f"traces_{n_fovs}x{n_cells}x{n_frames}", wanted)
    if done:
        return folder
    rng = np.random.default_rng(seed)
    results = ProcessingResults(folder, Channels(pc=0, fl=(1,)), time_units="min")
    for fov in range(n_fovs):
        tag = f"fov_{fov:03d}"
        csv = folder / tag / f"scale_{tag}_traces_ch_1.csv"
        csv.parent.mkdir()
        _fov_traces(rng, fov, n_cells, n_frames).to_csv(
            csv, index=False, float_format="%.6f", lineterminator="\n"
        )
        results.results_paths[fov] = FovResults(traces_csv=[(1, csv)])
    save_results(results)
    (folder / "params.json").write_text(json.dumps(wanted))
    return folder


def _fov_traces(rng: np.random.Generator, fov: int, n_cells: int, n_frames: int) -> pd.DataFrame:
    first = rng.integers(0, n_frames // 4, n_cells)  # the frame each cell is first tracked in
    good = rng.random(n_cells) > 0.1
    onset = rng.uniform(0.0, 10.0, n_cells)
    level = rng.uniform(500.0, 5000.0, n_cells)
    cells, frames = [], []
    for cell in range(n_cells):
        f = np.arange(first[cell], n_frames)
        cells.append(np.full(f.size, cell + 1))
        frames.append(f)
    cell = np.concatenate(cells)
    frame = np.concatenate(frames)
    hours = frame / 6.0
    i = cell - 1
    rise = level[i] * (1.0 - np.exp(-np.clip(hours - onset[i], 0.0, None) / 3.0))
    return pd.DataFrame(
        {
            "fov": fov,
            "cell": cell,
            "frame": frame,
            "time": frame * 10.0,
            "good": good[i],
            "position_x": rng.uniform(0, 2048, cell.size),
            "position_y": rng.uniform(0, 2048, cell.size),
            "intensity_total": rise + rng.normal(0.0, 50.0, cell.size) + 200.0,
            "area": np.round(rng.normal(300.0, 30.0, cell.size)),
        }
    )


def ensure_fit_csv(n_cells: int, n_t: int = 180, seed: int = 0) -> Path:
    """One wide analysis CSV of ``n_cells`` maturation traces (made when missing)."""
    from pyama_lib.io.analysis_csv import write_analysis_csv
    from pyama_lib.synthetic.cells import maturation_traces

    wanted = {"n_cells": n_cells, "n_t": n_t, "seed": seed}
    folder, done = _cached(f"fit_{n_cells}x{n_t}", wanted)
    csv = folder / f"scale_intensity_total_ch_1_{n_cells}.csv"
    if done:
        return csv
    t, y, _ = maturation_traces(n_cells, n_t, seed)
    names = [f"fov_{i // 1000:03d}_cell_{i % 1000}" for i in range(n_cells)]
    table = pd.DataFrame(y.T, columns=names)
    table.insert(0, "time", t * 60.0)
    write_analysis_csv(table, csv)
    (folder / "params.json").write_text(json.dumps(wanted))
    return csv


def traces_folder_path(n_fovs: int, n_cells: int, n_frames: int) -> dict[str, str]:
    """:func:`ensure_traces_folder` as a benchmark child's result."""
    return {"path": str(ensure_traces_folder(n_fovs, n_cells, n_frames))}


def fit_csv_path(n_cells: int) -> dict[str, str]:
    """:func:`ensure_fit_csv` as a benchmark child's result."""
    return {"path": str(ensure_fit_csv(n_cells))}
