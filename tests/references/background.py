"""Plain reference of PyAMA's tiled-median background correction (slow, obviously correct).

Written from the algorithm (docs/fidelity.md) with the calls PyAMA makes: ``maximum_filter`` for the
mask dilation, one ``np.nanmedian`` per window in a Python loop, the frame-wide ``np.nanmedian``
fallback and ``RectBivariateSpline`` fitted through (x, y) and transposed back, as PyAMA does. Where
PyAMA cannot work (an axis with fewer than 4 windows) it lowers the spline degree the way
:mod:`pyama_lib.processing.background` documents, so both can be compared at every size.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi
from scipy.interpolate import InterpolatedUnivariateSpline, RectBivariateSpline


def masked_reference(fl: np.ndarray, seg: np.ndarray, size: int = 21) -> np.ndarray:
    """float32 copy of ``fl`` with NaN wherever the mask dilated by ``size`` x ``size`` is True."""
    dilated = ndi.maximum_filter(np.asarray(seg, dtype=bool), size=size) > 0
    out = np.full(fl.shape, np.nan, dtype=np.float32)
    np.copyto(out, fl.astype(np.float32), where=~dilated)
    return out


def tiles_reference(
    masked: np.ndarray, tile: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window centres along y and x and the per-window NaN-median (with the fallback)."""
    edges = []
    for n in masked.shape:
        d = max(int(np.ceil(n / tile)) + 1, 2)
        edges.append(np.rint(np.linspace(0, n, 2 * d - 1)).astype(int))
    ey, ex = edges
    support = np.full((ey.size - 2, ex.size - 2), np.nan, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows are expected
        for i in range(ey.size - 2):
            for j in range(ex.size - 2):
                window = masked[ey[i] : ey[i + 2], ex[j] : ex[j + 2]]
                support[i, j] = np.nanmedian(window)
        support[np.isnan(support)] = np.nanmedian(masked)
    cy = (ey[:-2] + ey[2:]) * 0.5
    cx = (ex[:-2] + ex[2:]) * 0.5
    return cy, cx, support


def _profile(centres: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    if centres.size == 1:
        return np.full(n, values[0])
    spline = InterpolatedUnivariateSpline(centres, values, k=min(3, centres.size - 1))
    return spline(np.clip(np.arange(n), centres[0], centres[-1]))


def background_reference(fl: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """PyAMA's background surface for one frame (float32)."""
    masked = masked_reference(fl, seg)
    cy, cx, support = tiles_reference(masked)
    h, w = masked.shape
    if cy.size > 1 and cx.size > 1:
        spline = RectBivariateSpline(
            cx, cy, support.T, kx=min(3, cx.size - 1), ky=min(3, cy.size - 1)
        )
        return spline(np.arange(w), np.arange(h)).astype(np.float32).T
    # An axis with a single window: the surface is constant along it, a 1-D spline along
    # the other axis (or a constant when both have one window).
    if cy.size == 1:
        col, row = np.zeros(h), _profile(cx, support[0, :].astype(np.float64), w)
    else:
        col, row = _profile(cy, support[:, 0].astype(np.float64), h), np.zeros(w)
    return (col[:, None] + row[None, :]).astype(np.float32)


def correct_frame_reference(fl: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """PyAMA's background-corrected frame (float32)."""
    return fl.astype(np.float32) - background_reference(fl, seg)
