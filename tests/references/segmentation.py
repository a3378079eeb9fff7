"""Plain reference of PyAMA's log-std segmentation (slow, obviously correct).

Written from the algorithm (docs/fidelity.md) with the scipy calls PyAMA uses: ``uniform_filter``
for the local moments, ``np.histogram`` for the threshold and iterated
``binary_opening``/``binary_closing`` with a 7x7 square for the clean-up. Used by the tests and the
benchmarks to check and time the fast implementation in :mod:`pyama_lib.processing.segmentation`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def log_std_reference(frame: np.ndarray, size: int = 3) -> np.ndarray:
    """0.5 * ln(local variance) on a float32 frame, 0 where the variance is not positive."""
    img = np.asarray(frame).astype(np.float32)
    mean = ndi.uniform_filter(img, size=size)
    mean_sq = ndi.uniform_filter(img * img, size=size)
    var = mean_sq - mean * mean
    out = np.zeros_like(img)
    positive = var > 0
    out[positive] = 0.5 * np.log(var[positive])
    return out


def threshold_reference(values: np.ndarray, n_bins: int = 200, n_sigma: float = 3.0) -> float:
    """Centre of the fullest of ``n_bins`` bins + ``n_sigma`` std of the values at or below it."""
    flat = values.ravel()
    counts, edges = np.histogram(flat, bins=n_bins)
    centres = (edges[:-1] + edges[1:]) * 0.5
    mode = centres[np.argmax(counts)]
    return mode + n_sigma * np.std(flat[flat <= mode])


def morphology_reference(mask: np.ndarray, size: int = 7, iterations: int = 3) -> np.ndarray:
    """Fill holes, then iterated binary opening and closing with a square (border_value=0)."""
    structure = np.ones((size, size), dtype=bool)
    out = ndi.binary_fill_holes(mask)
    out = ndi.binary_opening(out, structure=structure, iterations=iterations)
    return ndi.binary_closing(out, structure=structure, iterations=iterations)


def segment_frame_reference(pc: np.ndarray) -> np.ndarray:
    """PyAMA's segmentation of one frame with its default parameters."""
    logstd = log_std_reference(pc)
    return morphology_reference(logstd > threshold_reference(logstd))
