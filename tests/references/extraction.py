"""Plain reference extraction: one boolean mask per cell per frame, as PyAMA does it.

O(cells x pixels) per frame; used to check the fast extractor and by the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

RING_PX = 10  # must equal pyama_lib.processing.features.LOCAL_BACKGROUND_RING_PX


def _local_background(labels: np.ndarray, fl: np.ndarray, y0, x0, y1, x1) -> float:
    """Median of fl over (bbox grown by RING_PX) minus bbox, background pixels only."""
    height, width = labels.shape
    ring = np.zeros(labels.shape, dtype=bool)
    ring[max(y0 - RING_PX, 0) : min(y1 + 1 + RING_PX, height),
         max(x0 - RING_PX, 0) : min(x1 + 1 + RING_PX, width)] = True  # fmt: skip
    ring[y0 : y1 + 1, x0 : x1 + 1] = False
    ring &= labels == 0
    return float(np.median(fl[ring])) if ring.any() else float("nan")


def extract_reference(
    labels: np.ndarray | Sequence[np.ndarray],
    fl: np.ndarray | Sequence[np.ndarray],
    times_min: Sequence[float],
    fov: int,
    min_frames: int = 30,
    features: Sequence[str] = (),
    border_margin: int | None = None,
    sort_by_cell: bool = False,
) -> pd.DataFrame:
    """Trace table of one FOV: rows frame by frame, cells ascending, like PyAMA."""
    records = []
    near_border: set[int] = set()
    for t in range(len(labels)):
        lab = np.asarray(labels[t])
        img = np.asarray(fl[t]).astype(np.float32)
        height, width = lab.shape
        cells = np.unique(lab)
        for c in cells[cells > 0]:
            mask = lab == c
            total = img[mask].sum()
            area = int(mask.sum())
            rows = np.where(mask.any(axis=1))[0]
            cols = np.where(mask.any(axis=0))[0]
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            rec = {
                "fov": fov,
                "cell": int(c),
                "frame": t,
                "time": float(times_min[t]),
                "good": True,
                "position_x": float((x0 + x1) / 2.0),
                "position_y": float((y0 + y1) / 2.0),
                "intensity_total": float(total),
                "area": float(area),
            }
            for name in features:
                if name == "intensity_mean":
                    rec[name] = float(total) / area
                elif name == "local_background":
                    rec[name] = _local_background(lab, img, y0, x0, y1, x1)
                else:
                    raise ValueError(f"reference knows no feature {name!r}")
            records.append(rec)
            if border_margin is not None:
                m = border_margin
                if y0 < m or x0 < m or height - 1 - y1 < m or width - 1 - x1 < m:
                    near_border.add(int(c))

    columns = [
        "fov", "cell", "frame", "time", "good", "position_x", "position_y",
        "intensity_total", "area", *features,
    ]  # fmt: skip
    df = pd.DataFrame.from_records(records, columns=columns)
    counts = df["cell"].value_counts()
    good_cells = set(counts.index[counts >= min_frames]) - near_border
    df = df[df["cell"].isin(good_cells)]
    if sort_by_cell:
        df = df.sort_values(["cell", "frame"], kind="stable")
    return df.reset_index(drop=True)
