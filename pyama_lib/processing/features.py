"""Per-cell feature registry used by trace extraction.

A feature is a function that computes one number per cell of one frame, for all cells at once::

    func(labels, fl, label_ids, context) -> np.ndarray  # shape (len(label_ids),)

``labels`` is the 2-D tracked label image, ``fl`` the 2-D float32 fluorescence frame,
``label_ids`` the ascending cell ids present in the frame and ``context`` a
:class:`FeatureContext` holding per-cell quantities the extractor already computed in its one
pass over the image (pixel values grouped by cell, areas, bounding boxes, total intensity), so a
feature rarely needs to touch the full image again.

``intensity_total`` and ``area`` are always extracted (PyAMA's two features, in that order).
``intensity_mean``, ``local_background``, ``intensity_local`` and the last two's ``_trimmed``
variants are built in and optional.

How a lab adds its own feature
------------------------------
Register it at import time of a module that the processing code imports (in spawned worker
processes the module must be imported there too, e.g. from the flow's entry module)::

    import numpy as np
    from pyama_lib.processing.features import register_feature

    @register_feature("intensity_max")
    def intensity_max(labels, fl, label_ids, context):
        # context.values holds each cell's pixels contiguously; offsets delimit the cells
        return np.maximum.reduceat(context.values, context.offsets[:-1]).astype(np.float64)

and ask for it with ``ExtractionParams(features=("intensity_max",))``; the traces then carry an
``intensity_max`` column after ``area``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from pyama_lib.core.errors import InputDataError
from pyama_lib.io.traces import STANDARD_FEATURES

#: Half-width in pixels of the ring around a cell's bounding box used by ``local_background``.
LOCAL_BACKGROUND_RING_PX = 10

#: Share of a ring's lowest and of its highest pixels ``local_background_trimmed`` leaves out.
LOCAL_BACKGROUND_TRIM = 0.1

#: Feature columns every trace table has, in PyAMA's order.
BUILTIN_FEATURES: tuple[str, ...] = STANDARD_FEATURES  # always computed, always columns

#: Non-feature trace columns; a feature may not take one of these names.
RESERVED_COLUMNS: frozenset[str] = frozenset(
    {"fov", "cell", "frame", "time", "good", "position_x", "position_y", "near_border"}
)


@dataclass(frozen=True)
class FeatureContext:
    """Per-cell quantities of one frame, shared by all features.

    Cell ``i`` (``label_ids[i]``) owns ``values[offsets[i]:offsets[i + 1]]`` and the raster
    (row-major flat) indices ``flat_index[offsets[i]:offsets[i + 1]]``, in raster order.

    Attributes
    ----------
    values : np.ndarray
        float32 fluorescence of every cell pixel, grouped by cell.
    flat_index : np.ndarray
        int64 raster index of each entry of ``values``.
    offsets : np.ndarray
        int64, length ``n_cells + 1``.
    area : np.ndarray
        int64 pixel count per cell.
    bbox : np.ndarray
        int64 ``(n_cells, 4)``: ``y0, x0, y1, x1`` with exclusive ends (slice convention).
    intensity_total : np.ndarray
        float32 sum of ``values`` per cell, summed exactly as ``fl[labels == c].sum()``.
    """

    values: np.ndarray
    flat_index: np.ndarray
    offsets: np.ndarray
    area: np.ndarray
    bbox: np.ndarray
    intensity_total: np.ndarray


FeatureFunc = Callable[[np.ndarray, np.ndarray, np.ndarray, FeatureContext], np.ndarray]

# The registry is module state on purpose: it is how a lab's own module plugs a feature in.
_REGISTRY: dict[str, FeatureFunc] = {}


def register_feature(name: str, *, replace: bool = False) -> Callable[[FeatureFunc], FeatureFunc]:
    """Return a decorator registering ``func`` as feature ``name``.

    Parameters
    ----------
    name : str
        Column name of the feature in the traces (a Python identifier).
    replace : bool
        Allow replacing an already registered feature of that name (default: refuse).

    Raises
    ------
    ValueError
        If ``name`` is not an identifier, is a reserved trace column, or is taken.
    """
    if not name.isidentifier():
        raise ValueError(f"feature name {name!r} must be a Python identifier (letters, _, digits)")
    if name in RESERVED_COLUMNS:
        raise ValueError(f"feature name {name!r} is a trace column; choose another name")

    def decorator(func: FeatureFunc) -> FeatureFunc:
        if name in _REGISTRY and not replace and _REGISTRY[name] is not func:
            raise ValueError(
                f"feature {name!r} is already registered; pass replace=True to override it"
            )
        _REGISTRY[name] = func
        return func

    return decorator


def unregister_feature(name: str) -> None:
    """Remove feature ``name`` (built-ins cannot be removed)."""
    if name in BUILTIN_FEATURES:
        raise ValueError(f"built-in feature {name!r} cannot be unregistered")
    _REGISTRY.pop(name, None)


def list_features() -> list[str]:
    """Registered feature names, in registration order."""
    return list(_REGISTRY)


def get_feature(name: str) -> FeatureFunc:
    """Look up a registered feature, raising InputDataError naming the registered ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputDataError(
            f"unknown feature {name!r}; registered features are: {', '.join(_REGISTRY)}. "
            "Fix the feature name or import the module that registers it."
        ) from None


def resolve_features(names: Iterable[str]) -> tuple[str, ...]:
    """Extra feature columns to compute: deduplicated, built-ins dropped, all registered.

    Raises
    ------
    InputDataError
        If a name is not registered.
    """
    out: list[str] = []
    for name in names:
        get_feature(name)
        if name not in BUILTIN_FEATURES and name not in out:
            out.append(name)
    return tuple(out)


@register_feature("intensity_total")
def intensity_total(
    labels: np.ndarray, fl: np.ndarray, label_ids: np.ndarray, context: FeatureContext
) -> np.ndarray:
    """Sum of the cell's fluorescence (float32 summation, as PyAMA)."""
    return context.intensity_total


@register_feature("area")
def area(
    labels: np.ndarray, fl: np.ndarray, label_ids: np.ndarray, context: FeatureContext
) -> np.ndarray:
    """Pixel count of the cell."""
    return context.area


@register_feature("intensity_mean")
def intensity_mean(
    labels: np.ndarray, fl: np.ndarray, label_ids: np.ndarray, context: FeatureContext
) -> np.ndarray:
    """``intensity_total / area`` in float64 (the float32 total divided by the pixel count)."""
    return context.intensity_total.astype(np.float64) / context.area


def _ring_background(
    labels: np.ndarray, fl: np.ndarray, context: FeatureContext, stat: Callable[[np.ndarray], float]
) -> np.ndarray:
    """``stat`` of each cell's background ring (see :func:`local_background`), NaN if empty."""
    r = LOCAL_BACKGROUND_RING_PX
    height, width = labels.shape
    out = np.full(context.bbox.shape[0], np.nan, dtype=np.float64)
    for i, (y0, x0, y1, x1) in enumerate(context.bbox.tolist()):
        wy0, wx0 = max(y0 - r, 0), max(x0 - r, 0)
        wy1, wx1 = min(y1 + r, height), min(x1 + r, width)
        keep = labels[wy0:wy1, wx0:wx1] == 0
        # the box itself is not part of the ring, even its background pixels
        keep[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = False
        ring = fl[wy0:wy1, wx0:wx1][keep]
        if ring.size:
            out[i] = stat(ring)
    return out


def _trimmed_mean(ring: np.ndarray) -> float:
    """Mean of the ring without its lowest and highest ``LOCAL_BACKGROUND_TRIM`` share."""
    values = np.sort(ring.astype(np.float64))
    cut = int(LOCAL_BACKGROUND_TRIM * values.size)
    return float(values[cut : values.size - cut].mean())


@register_feature("local_background")
def local_background(
    labels: np.ndarray, fl: np.ndarray, label_ids: np.ndarray, context: FeatureContext
) -> np.ndarray:
    """Median fluorescence in a ring around the cell, away from every labelled cell.

    The ring is the cell's bounding box grown by ``LOCAL_BACKGROUND_RING_PX`` on each side
    (clipped to the image) minus the box itself; pixels of any labelled cell (``labels > 0``)
    are left out, so touching neighbours do not inflate it. Segmented regions that are not
    tracked carry label 0 and therefore count as background. The median is taken in float32
    (``np.median``) and returned as float64; NaN when the ring holds no background pixel.
    Cost is one small window per cell, O(cells x ring area), independent of the image size.
    """
    return _ring_background(labels, fl, context, np.median)


@register_feature("local_background_trimmed")
def local_background_trimmed(
    labels: np.ndarray, fl: np.ndarray, label_ids: np.ndarray, context: FeatureContext
) -> np.ndarray:
    """Option beyond PyAMA: the ring of :func:`local_background`, its trimmed mean.

    The mean of the ring's pixels without the lowest and the highest ``LOCAL_BACKGROUND_TRIM``
    (10%) of them, in float64; NaN when the ring holds no background pixel. Camera counts are
    integers and a ring's median is one of them (or halfway between two): on a smooth
    background its error is up to half a count per pixel, which ``intensity_local``
    multiplies by the cell's area, on top of the median's larger sampling noise (its
    efficiency is 64% of the mean's on Gaussian noise). The trimmed mean has neither and still
    ignores a few bright or dark outliers (an unsegmented cell, a hot pixel) in the ring.
    """
    return _ring_background(labels, fl, context, _trimmed_mean)


@register_feature("intensity_local")
def intensity_local(
    labels: np.ndarray, fl: np.ndarray, label_ids: np.ndarray, context: FeatureContext
) -> np.ndarray:
    """Option beyond PyAMA: ``intensity_total`` minus ``local_background`` × ``area``.

    The frame-wide background correction leaves a residual that varies across the image (a
    few thousand counts per cell at 640², so tens of percent of a dim cell's total, and more
    near the border where the background spline is least constrained). Subtracting each cell's
    own ring median removes it; float64, NaN when the ring holds no background pixel.

    Examples
    --------
    >>> labels = np.zeros((40, 40), dtype=np.uint16)
    >>> labels[15:25, 15:25] = 1                      # a 10 x 10 cell
    >>> fl = np.full((40, 40), 7.0, dtype=np.float32)  # residual background 7
    >>> fl[labels == 1] += 10.0                        # the cell's own 10 per pixel
    >>> from pyama_lib.processing.extraction import extract_frame
    >>> row = extract_frame(labels, fl, 0, 0.0, features=["intensity_local"])
    >>> float(row["intensity_total"][0]), float(row["intensity_local"][0])
    (1700.0, 1000.0)
    """
    ring = local_background(labels, fl, label_ids, context)
    return context.intensity_total.astype(np.float64) - ring * context.area


@register_feature("intensity_local_trimmed")
def intensity_local_trimmed(
    labels: np.ndarray, fl: np.ndarray, label_ids: np.ndarray, context: FeatureContext
) -> np.ndarray:
    """Option beyond PyAMA: ``intensity_total`` minus ``local_background_trimmed`` × ``area``.

    ``intensity_local`` with the ring's trimmed mean instead of its median, which is less
    noisy (``make bench``, case ``accuracy``); float64, NaN when the ring holds no
    background pixel.
    """
    ring = local_background_trimmed(labels, fl, label_ids, context)
    return context.intensity_total.astype(np.float64) - ring * context.area
