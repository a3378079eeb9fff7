"""Log-std segmentation of phase-contrast frames (PyAMA's algorithm and masks, faster).

Pipeline for one frame (DESIGN.md, "Algorithms / Segmentation"):

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
* Fill holes: one labelling of the background instead of iterated propagation.
* Morphology, where PyAMA spends most of its time (iterated binary erosion and dilation with
  a 49-pixel element): separable running min/max of boolean rows computed by doubling, which
  gives the identical mask:

  - 3 iterations of a 7x7 square = one 19x19 square (the Minkowski sum), and a square is the
    product of a row and a column, so each erosion/dilation is two 1-D running AND/OR passes.
  - Erosion with outside = 0 is a running AND over a zero-padded line. Dilation with outside
    = 0 is a running OR; iterating it on a rectangle equals one big dilation because any pixel
    reachable through an outside pixel is also reachable through an inside one.
  - The opening's dilation and the closing's dilation are consecutive, so they merge into one
    37x37 dilation: erode(19) -> dilate(37) -> erode(19).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import Field
from scipy import ndimage as ndi

from pyama_lib.errors import InputDataError
from pyama_lib.params import OddSize, Params

__all__ = [
    "SegmentationParams",
    "dilate_square",
    "erode_square",
    "fill_holes",
    "log_std",
    "open_close",
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
    """Return a C-contiguous transpose, copied tile by tile (about 2x numpy's plain copy)."""
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
    C-ordered frame is ~5x slower than its axis-1 pass, so both passes here run along rows of
    contiguous arrays (transposing in between); each line sees the very same arithmetic, so the
    result is identical.
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


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes like ``scipy.ndimage.binary_fill_holes`` with its default structure.

    A hole is a 4-connected background component that does not touch the image border.
    Labelling the background once is several times faster than scipy's iterative
    propagation and gives the same mask.

    Parameters
    ----------
    mask : np.ndarray
        2-D boolean mask.

    Returns
    -------
    np.ndarray
        Boolean mask with every hole set to True.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndi.label(~mask)  # default structure: 4-connectivity, as binary_fill_holes
    if n == 0:
        return mask.copy()
    border = np.unique(np.concatenate((labels[0], labels[-1], labels[:, 0], labels[:, -1])))
    border = border[border > 0]  # label 0 = foreground pixels
    if border.size == 1:  # the usual case: one background around the cells; cheaper than a gather
        return labels != border[0]
    outside = np.zeros(n + 1, dtype=bool)
    outside[border] = True
    return ~outside[labels]


def _running_reduce(
    mask: np.ndarray, size: int, axis: int, op: Callable[..., np.ndarray]
) -> np.ndarray:
    """Running AND/OR of length ``size`` (odd, centred) along ``axis``, outside = False.

    Uses doubling: after step j every entry combines 2**j neighbours, and one final shifted
    combination covers the remaining length; O(log size) whole-array boolean operations.
    """
    r = size // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    acc = np.pad(mask, pad)  # constant False: pixels outside the image count as 0

    def shifted(a: np.ndarray, start: int, stop: int) -> np.ndarray:
        index = [slice(None), slice(None)]
        index[axis] = slice(start, stop)
        return a[tuple(index)]

    length = 1
    while 2 * length <= size:
        n = acc.shape[axis]
        acc = op(shifted(acc, 0, n - length), shifted(acc, length, n))
        length *= 2
    if length < size:
        shift = size - length  # <= length, so the two windows overlap and cover `size`
        n = acc.shape[axis]
        acc = op(shifted(acc, 0, n - shift), shifted(acc, shift, n))
    return acc


def erode_square(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary erosion with a ``size`` x ``size`` square (odd), pixels outside counting as 0.

    Equal to ``scipy.ndimage.binary_erosion(mask, np.ones((s, s)))`` (``border_value=0``):
    every pixel closer than ``size // 2`` to the border becomes False.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = _running_reduce(mask, size, 0, np.logical_and)
    return _running_reduce(rows, size, 1, np.logical_and)


def dilate_square(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation with a ``size`` x ``size`` square (odd), pixels outside counting as 0.

    Equal to ``scipy.ndimage.binary_dilation(mask, np.ones((s, s)))`` and to
    ``scipy.ndimage.maximum_filter(mask, s)``.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = _running_reduce(mask, size, 0, np.logical_or)
    return _running_reduce(rows, size, 1, np.logical_or)


def open_close(mask: np.ndarray, size: int = 7, iterations: int = 3) -> np.ndarray:
    """PyAMA's opening then closing, via equivalent single large squares.

    Equal to ``binary_closing(binary_opening(mask, s, iterations), s, iterations)`` with
    ``s = np.ones((size, size))`` and scipy's default ``border_value=0``.

    Parameters
    ----------
    mask : np.ndarray
        2-D boolean mask.
    size : int
        Side of the square structuring element (odd).
    iterations : int
        Repetitions of each erosion/dilation.

    Returns
    -------
    np.ndarray
        The cleaned boolean mask.
    """
    big = 2 * (size // 2) * iterations + 1  # `iterations` squares of `size` = one of `big`
    opened_eroded = erode_square(mask, big)
    # opening's dilation and closing's dilation merged: two `big` squares = one of 2*big-1
    dilated = dilate_square(opened_eroded, 2 * big - 1)
    return erode_square(dilated, big)


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
