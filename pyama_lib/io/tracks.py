"""napari Tracks tables: each FOV's cell tracks as napari's Tracks layer reads them.

``<out>/fov_XXX/<base>_fov_XXX_tracks_ch_<c>.csv`` (and a ``.parquet`` twin) beside the traces:
one row per cell and frame, ``track_id, t, y, x`` first (the Tracks layer's column order;
``track_id`` is the traces' ``cell``, ``t`` their ``frame``, ``y``/``x`` the cell's centre in
pixels), then the per-point features a layer can colour by: ``good``, ``intensity_total``,
``area`` and the run's extra features. Rows are sorted by track, then time, as napari wants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pyama_lib.core.errors import ResultsFileError
from pyama_lib.io.atomic import atomic_target
from pyama_lib.io.traces import BASE_COLUMNS

TRACK_COLUMNS = ("track_id", "t", "y", "x")


def tracks_csv_path(out_dir: str | Path, base_name: str, fov: int, channel: int) -> Path:
    """Return ``<out>/fov_XXX/<base>_fov_XXX_tracks_ch_<c>.csv``."""
    fov_tag = f"fov_{int(fov):03d}"
    return Path(out_dir) / fov_tag / f"{base_name}_{fov_tag}_tracks_ch_{int(channel)}.csv"


def tracks_table(traces: pd.DataFrame) -> pd.DataFrame:
    """The Tracks table of one FOV × channel traces table.

    Examples
    --------
    >>> traces = pd.DataFrame({"fov": 0, "cell": [2, 1, 2], "frame": [0, 1, 1],
    ...     "time": 0.0, "good": True, "position_x": [10.0, 30.0, 11.0],
    ...     "position_y": [5.0, 6.0, 5.5], "intensity_total": [1.0, 2.0, 3.0], "area": 9.0})
    >>> tracks_table(traces)[["track_id", "t", "y", "x", "intensity_total"]].to_numpy().tolist()
    [[1.0, 1.0, 6.0, 30.0, 2.0], [2.0, 0.0, 5.0, 10.0, 1.0], [2.0, 1.0, 5.5, 11.0, 3.0]]
    """
    features = [c for c in traces.columns if c not in BASE_COLUMNS]
    table = pd.DataFrame(
        {
            "track_id": traces["cell"].to_numpy(np.int64),
            "t": traces["frame"].to_numpy(np.int64),
            "y": traces["position_y"].to_numpy(np.float64),
            "x": traces["position_x"].to_numpy(np.float64),
            "good": traces["good"].to_numpy(np.bool_),
        }
    )
    for name in features:
        table[name] = traces[name].to_numpy()
    return table.sort_values(["track_id", "t"], kind="stable").reset_index(drop=True)


def write_tracks(traces: pd.DataFrame, csv_path: str | Path) -> list[Path]:
    """Write the Tracks table of ``traces`` to ``csv_path`` and its ``.parquet`` twin
    (atomically each); returns both paths."""
    csv_path = Path(csv_path)
    parquet_path = csv_path.with_suffix(".parquet")
    table = tracks_table(traces)
    try:
        with atomic_target(csv_path) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
        with atomic_target(parquet_path) as tmp:
            table.to_parquet(tmp, index=False)
    except OSError as exc:
        raise ResultsFileError(csv_path, f"cannot write the tracks table ({exc})") from exc
    return [csv_path, parquet_path]
