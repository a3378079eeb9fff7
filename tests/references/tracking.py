"""Plain reference tracker: PyAMA's algorithm written the obvious way.

Holds every frame's regions (with their pixel coordinates) in memory, labels with
``skimage.measure.label(connectivity=1)`` as PyAMA does, and fills the cost matrix with a
Python double loop over region pairs. Used to check the fast tracker and by the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.measure import label, regionprops


def bbox_iou_pair(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """IoU of two ``(y0, x0, y1, x1)`` boxes with exclusive ends; 0 when disjoint."""
    inter_h = min(a[2], b[2]) - max(a[0], b[0])
    inter_w = min(a[3], b[3]) - max(a[1], b[1])
    if inter_h <= 0 or inter_w <= 0:
        return 0.0
    inter = inter_h * inter_w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter) / float(union)


def _regions(mask: np.ndarray, min_area: int | None, max_area: int | None) -> list:
    kept = []
    for p in regionprops(label(np.asarray(mask, dtype=bool), connectivity=1)):
        if min_area is not None and p.area < min_area:
            continue
        if max_area is not None and p.area > max_area:
            continue
        kept.append(p)
    return kept


def track_reference(
    masks: np.ndarray | Sequence[np.ndarray],
    min_iou: float = 0.1,
    min_area: int | None = None,
    max_area: int | None = None,
    start_new_tracks: bool = False,
    max_gap: int = 0,
) -> np.ndarray:
    """Track a stack of masks; uint16 (T, H, W) with each tracked region set to its id."""
    n_frames = len(masks)
    out = np.zeros((n_frames, *np.shape(masks[0])), dtype=np.uint16)
    regions = [_regions(masks[t], min_area, max_area) for t in range(n_frames)]

    # live tracks as [track id, last bbox, frames missed], always in ascending id
    live: list[list] = []
    for k, p in enumerate(regions[0], start=1):
        live.append([k, p.bbox, 0])
        out[0][p.coords[:, 0], p.coords[:, 1]] = k
    next_id = len(live) + 1

    for t in range(1, n_frames):
        regs = regions[t]
        match: dict[int, int] = {}  # live row -> region column
        if live and regs:
            cost = np.ones((len(live), len(regs)))
            valid = np.zeros((len(live), len(regs)), dtype=bool)
            for i, track in enumerate(live):
                for j, p in enumerate(regs):
                    iou = bbox_iou_pair(track[1], p.bbox)
                    if iou >= min_iou:
                        cost[i, j] = 1.0 - iou
                        valid[i, j] = True
            rows, cols = linear_sum_assignment(cost)
            match = {int(r): int(c) for r, c in zip(rows, cols, strict=True) if valid[r, c]}

        new_live = []
        for i, (track_id, bbox, missed) in enumerate(live):
            if i in match:
                p = regs[match[i]]
                out[t][p.coords[:, 0], p.coords[:, 1]] = track_id
                new_live.append([track_id, p.bbox, 0])
            elif missed + 1 <= max_gap:
                new_live.append([track_id, bbox, missed + 1])
        if start_new_tracks:
            taken = set(match.values())
            for j, p in enumerate(regs):
                if j not in taken:
                    out[t][p.coords[:, 0], p.coords[:, 1]] = next_id
                    new_live.append([next_id, p.bbox, 0])
                    next_id += 1
        live = sorted(new_live, key=lambda track: track[0])
    return out
