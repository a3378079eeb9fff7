"""Log-std segmentation of phase-contrast frames (PyAMA's algorithm and masks, faster).

Pipeline for one frame (docs/fidelity.md, segmentation):

1. :func:`log_std`: local variance from 3x3 means of x and x**2 (scipy ``uniform_filter``,
   ``reflect`` edges, float32), log-std = 0.5 * ln(variance) where variance > 0, else 0.
2. :func:`threshold_by_histogram`: mode of a 200-bin histogram (centre of the first fullest
   bin) plus 3 standard deviations of the values at or below the mode.
3. ``log_std > threshold``, :func:`fill_holes`, then :func:`open_close`: an opening (3
   erosions, 3 dilations) followed by a closing (3 dilations, 3 erosions) with a 7x7 square,
   pixels outside the image counting as 0 (scipy's ``border_value=0``).

The result equals PyAMA's bit for bit, and each step is faster than PyAMA's way:

* Log-std of camera frames (integers of up to 16 bits): scipy's vertical pass is its slow one
  (it walks columns of a row-major frame); its sums are exact for such integers, so they are
  taken over whole rows instead, in row blocks that stay in cache (see _log_std_integer).
  Other frames get scipy's two passes along contiguous rows of a transposed copy.
* Histogram: numpy's own bin estimate, with numpy's correction applied only to the values
  that lie near a bin edge (see _histogram_counts); same counts, fewer passes.
* Fill holes and the morphology, where PyAMA spends most of its time: see
  :mod:`~pyama_lib.processing.morphology`.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy import ndimage as ndi

from pyama_lib.core.errors import InputDataError
from pyama_lib.core.params import OddSize, Params
from pyama_lib.processing.morphology import fill_holes, open_close

__all__ = [
    "SegmentationParams",
    "log_std",
    "segment_frame",
    "threshold_by_histogram",
    "validate_frame",
]

# Block edge (pixels) of the cache-friendly transpose used by the general log-std path.
_TRANSPOSE_BLOCK = 256
# Output rows per block of the integer log-std path: its float64 intermediates stay in cache.
_ROW_BLOCK = 32
# Widest window whose sums of 16-bit integers are exact in float32 (size * 65535 < 2**24).
_MAX_EXACT_WINDOW = 255


class SegmentationParams(Params):
    """Parameters of the log-std segmentation; the defaults are PyAMA's.

    Attributes
    ----------
    filter_size : int
        Side of the square window of the local mean and variance (odd). PyAMA: 3.
    n_bins : int
        Number of histogram bins used to find the background mode. PyAMA: 200.
    n_sigma : float
        Threshold = mode + ``n_sigma`` standard deviations of the background. PyAMA: 3.
    structure_size : int
        Side of the square structuring element of the opening and closing (odd). PyAMA: 7.
    iterations : int
        How often each erosion/dilation of the opening and closing is repeated. PyAMA: 3.
        (Below 1 scipy would iterate "until nothing changes": not PyAMA's meaning.)

    Raises
    ------
    ParamsError
        When a value is out of range (a ``ValueError``).

    Examples
    --------
    >>> SegmentationParams(n_sigma=2.5).as_dict()["n_sigma"]
    2.5
    """

    filter_size: OddSize = 3
    n_bins: int = Field(200, ge=1, strict=True)
    n_sigma: float = Field(3.0, ge=0)
    structure_size: OddSize = 7
    iterations: int = Field(3, ge=1, strict=True)


def validate_frame(frame: np.ndarray, name: str = "frame") -> np.ndarray:
    """Check that ``frame`` is a finite, non-empty 2-D real array and return it as float32.

    Parameters
    ----------
    frame : np.ndarray
        Input frame, any integer, boolean or real floating dtype.
    name : str
        How the frame is called in error messages (e.g. ``"pc frame"``).

    Returns
    -------
    np.ndarray
        The frame as float32 (no copy when it already is float32).

    Raises
    ------
    InputDataError
        If the frame is not 2-D, is empty, is not real-numeric, or holds NaN or infinity.
    """
    arr = np.asarray(frame)
    if arr.ndim != 2:
        raise InputDataError(
            f"{name} must be a 2-D (height, width) array, got shape {arr.shape}; "
            "pass one frame at a time (select the time point first)."
        )
    if arr.size == 0:
        raise InputDataError(f"{name} is empty (shape {arr.shape}); nothing to process.")
    if arr.dtype.kind not in "biuf":
        raise InputDataError(
            f"{name} has dtype {arr.dtype}; expected an integer or real floating image."
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputDataError(
            f"{name} contains NaN or infinite values; check the acquisition or the stage that "
            "produced this frame (raw camera frames are never NaN)."
        )
    # PyAMA converts every frame to float32 before any arithmetic; float64 input is rounded.
    return arr.astype(np.float32, copy=False)


def _blocked_transpose(a: np.ndarray) -> np.ndarray:
    """Return a C-contiguous transpose, copied tile by tile (numpy's plain copy strides across
    the whole frame and misses the cache)."""
    h, w = a.shape
    out = np.empty((w, h), dtype=a.dtype)
    b = _TRANSPOSE_BLOCK
    for i in range(0, h, b):
        for j in range(0, w, b):
            out[j : j + b, i : i + b] = a[i : i + b, j : j + b].T
    return out


def _uniform_filter_from_transposed(a_t: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.uniform_filter(a, size)`` for 2-D float32, given ``a_t = a.T``.

    scipy filters axis 0 then axis 1, rounding to float32 in between. Its axis-0 pass over a
    C-ordered frame is far slower than its axis-1 pass (it walks columns), so both passes here run
    along rows of contiguous arrays (transposing in between); each line sees the very same
    arithmetic, so the result is identical.
    """
    along_axis0 = ndi.uniform_filter1d(a_t, size, axis=1)
    return ndi.uniform_filter1d(_blocked_transpose(along_axis0), size, axis=1)


def _log_of_variance(var: np.ndarray) -> np.ndarray:
    """``0.5 * ln(var)`` where ``var > 0``, else 0, computed in place in ``var`` (float32)."""
    positive = var > 0
    # log of every pixel at once (element-wise identical to logging only the positive ones),
    # with non-positive variances lifted to the smallest float32 so no warning is raised.
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    out = np.log(np.maximum(var, tiny, out=var), out=var)
    out *= np.float32(0.5)
    out[~positive] = 0
    return out


def _reflect_rows(n: int, half: int) -> np.ndarray:
    """Row indices of ``n`` rows padded by ``half`` on each side in scipy's ``reflect`` mode."""
    idx = np.arange(-half, n + half)
    idx = np.where(idx < 0, -idx - 1, idx)
    return np.where(idx >= n, 2 * n - 1 - idx, idx)


def _log_std_integer(img: np.ndarray, size: int) -> np.ndarray:
    """:func:`log_std` of a frame whose values are integers of at most 16 bits (as float32).

    scipy's axis-0 pass keeps a running sum in float64 (add the entering value, subtract the
    leaving one) and stores ``sum / size`` as float32. For such integers every partial sum is
    exact (below 2**53), so that pass equals the plain window sum divided by ``size``, which is
    computed here with whole rows at a time (fast, no transposes): the mean's sums are exact
    even in float32 (below 2**24), and float32 division of an exact integer by an odd
    ``size`` < 2**8 rounds as float64-then-float32 does (k / size is never within 2**-53 of
    a float32 midpoint unless equal to it); the squares' sums go through float64 as in scipy.
    The axis-1 pass is scipy's own. Row blocks keep the intermediates in cache.
    """
    height = img.shape[0]
    half = size // 2
    rows_index = _reflect_rows(height, half)
    var = np.empty_like(img)
    for r0 in range(0, height, _ROW_BLOCK):
        r1 = min(r0 + _ROW_BLOCK, height)
        n = r1 - r0
        rows = img[rows_index[r0 : r1 + 2 * half]]
        sums = rows[:n].copy()
        squares = np.multiply(rows, rows).astype(np.float64)  # float32 squares, as PyAMA's
        sums_sq = squares[:n].copy()
        for k in range(1, size):
            sums += rows[k : k + n]
            sums_sq += squares[k : k + n]
        sums /= np.float32(size)
        sums_sq /= float(size)
        mean = ndi.uniform_filter1d(sums, size, axis=1)
        block = ndi.uniform_filter1d(sums_sq.astype(np.float32), size, axis=1)
        block -= mean * mean
        var[r0:r1] = block
    return var


def log_std(frame: np.ndarray, size: int = 3) -> np.ndarray:
    """Per-pixel log standard deviation, as PyAMA computes it (float32).

    Parameters
    ----------
    frame : np.ndarray
        2-D phase-contrast frame (converted to float32).
    size : int
        Side of the square averaging window (scipy ``reflect`` edges).

    Returns
    -------
    np.ndarray
        float32 array, ``0.5 * ln(E[x^2] - E[x]^2)`` where that variance is > 0, else 0.
        A constant frame therefore gives all zeros.
    """
    img = validate_frame(frame, "pc frame")
    raw = np.asarray(frame).dtype
    exact_sums = size % 2 == 1 and size <= min(_MAX_EXACT_WINDOW, 2 * img.shape[0])
    if raw.kind in "biu" and raw.itemsize <= 2 and exact_sums:
        # camera frames (uint16): exact row-wise sums, see _log_std_integer
        return _log_of_variance(_log_std_integer(img, size))
    img_t = _blocked_transpose(img)
    mean = _uniform_filter_from_transposed(img_t, size)
    var = _uniform_filter_from_transposed(img_t * img_t, size)
    var -= mean * mean
    return _log_of_variance(var)


def threshold_by_histogram(values: np.ndarray, n_bins: int = 200, n_sigma: float = 3.0) -> float:
    """PyAMA's histogram threshold: background mode + ``n_sigma`` background std.

    Parameters
    ----------
    values : np.ndarray
        Log-std values (any shape; flattened). Must be finite and non-empty.
    n_bins : int
        Number of equal-width histogram bins over [min, max] (numpy's rules; a constant input
        gets the range [v - 0.5, v + 0.5]).
    n_sigma : float
        Number of standard deviations above the mode.

    Returns
    -------
    float
        ``mode + n_sigma * std(values[values <= mode])`` where mode is the centre of the
        fullest bin (the first one when several are equally full). Computed in the dtype of
        ``values`` (float32 for log-std images), as PyAMA does.
    """
    flat = np.asarray(values).ravel()
    if flat.size == 0 or not np.isfinite(flat).all():
        raise InputDataError(
            "threshold_by_histogram needs a non-empty array of finite values "
            f"(got {flat.size} values); compute them with log_std first."
        )
    return _threshold(flat, n_bins, n_sigma)


def _histogram_counts(flat: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(flat, n_bins)`` for a flat float array, in fewer passes over the data.

    numpy estimates each value's bin as ``int((v - first) / (last - first) * n_bins)`` and then
    corrects it by one against the bin edges, which costs two gathers per value. Here the same
    estimate ``f`` is computed, but only values whose ``f`` lies within ``delta`` of an
    integer get numpy's correction, where ``delta`` is how far the edges themselves land from
    integers under the same formula. ``f`` is monotonic in ``v`` (every step is a rounded
    subtraction, division or multiplication by a positive constant), so a value farther than
    ``delta`` from any integer lies strictly inside the bin of its estimate, where numpy's
    correction changes nothing. The counts and edges are numpy's.
    """
    try:
        edges = np.histogram_bin_edges(flat, n_bins)
    except ValueError as exc:  # numpy: "Too many bins for data range"
        raise InputDataError(
            f"the log-std values span too narrow a range ({flat.min()} to {flat.max()}) for "
            f"{n_bins} histogram bins: the frame is nearly constant. Check the phase-contrast "
            "channel, or lower segmentation.n_bins."
        ) from exc
    first, last = edges[0], edges[-1]
    dtype = edges.dtype

    def estimate(v: np.ndarray) -> np.ndarray:  # numpy's formula and operand types
        f = np.subtract(v.astype(dtype, copy=False), first, dtype=dtype)
        f /= last - first
        f *= n_bins
        return f

    delta = float(np.max(np.abs(estimate(edges) - np.arange(n_bins + 1))))
    f = estimate(flat)
    bins = f.astype(np.intp)
    f -= np.rint(f)
    np.abs(f, out=f)
    near = np.flatnonzero(f <= delta)
    if near.size:  # numpy's own correction, on the few values near an edge
        v, b = flat[near].astype(dtype, copy=False), bins[near]
        b[b == n_bins] -= 1
        b[v < edges[b]] -= 1
        b[(v >= edges[b + 1]) & (b != n_bins - 1)] += 1
        bins[near] = b
    return np.bincount(bins, minlength=n_bins), edges


def _threshold(flat: np.ndarray, n_bins: int, n_sigma: float) -> float:
    """:func:`threshold_by_histogram` of a checked, flat array."""
    counts, edges = _histogram_counts(flat, n_bins)
    centres = (edges[:-1] + edges[1:]) * 0.5
    mode = centres[int(np.argmax(counts))]  # argmax: first bin wins a tie
    background = flat[flat <= mode]  # never empty: the minimum lies in or below the mode bin
    # float(n_sigma): a numpy float64 factor would promote PyAMA's float32 arithmetic
    return float(mode + float(n_sigma) * np.std(background))


def segment_frame(pc: np.ndarray, params: SegmentationParams | None = None) -> np.ndarray:
    """Segment one phase-contrast frame into a cell (True) / background (False) mask.

    With default parameters the mask equals PyAMA's ``segment_cell`` for this frame.

    Parameters
    ----------
    pc : np.ndarray
        2-D phase-contrast frame (any integer or real dtype; processed as float32).
    params : SegmentationParams, optional
        Algorithm parameters; PyAMA's defaults when omitted.

    Returns
    -------
    np.ndarray
        Boolean mask of the frame's shape. A constant (e.g. all-zero) frame has a log-std of 0
        everywhere and yields an all-False mask.

    Raises
    ------
    InputDataError
        If ``pc`` is not a non-empty 2-D real array or holds NaN/infinite values.
    """
    p = params if params is not None else SegmentationParams()
    logstd = log_std(pc, p.filter_size)
    threshold = _threshold(logstd.ravel(), p.n_bins, p.n_sigma)  # log-std is always finite
    binary = logstd > np.float32(threshold)
    return open_close(fill_holes(binary), p.structure_size, p.iterations)
