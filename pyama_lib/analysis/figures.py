"""Quality-control figures: what a person would rather look at than read.

Each function takes arrays or tables and returns a :class:`matplotlib.figure.Figure` built
without pyplot (no global state, no display: the Agg canvas), so figures can be made in worker
processes and tests alike; :func:`save_png` writes one atomically and frees it.

- :func:`traces_figure`: every cell's trace of a sample and channel, with the median.
- :func:`fit_examples_figure`: a grid of example cells with their fitted curves and R².
- :func:`histograms_figure`: histograms of the fitted parameters and of R².
- :func:`segmentation_figure`: segmentation outlines and track ids over phase-contrast frames.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from pyama_lib.io.atomic import atomic_target

__all__ = [
    "example_cells",
    "fit_examples_figure",
    "histograms_figure",
    "png_data_uri",
    "save_png",
    "segmentation_figure",
    "traces_figure",
]

_DPI = 100
_OUTLINED = [patheffects.withStroke(linewidth=2, foreground="black")]


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def traces_figure(
    time_h: np.ndarray,
    values: np.ndarray,
    title: str,
    ylabel: str = "intensity_total",
    median: np.ndarray | None = None,
    n_cells: int | None = None,
) -> Figure:
    """Traces (thin, translucent) and their median over cells (thick).

    Parameters
    ----------
    time_h : np.ndarray
        (n_t,) times in hours.
    values : np.ndarray
        (n_t, n_drawn) values; NaN where a cell has no point.
    title, ylabel : str
        Axis annotations.
    median : np.ndarray, optional
        (n_t,) median over all of the sample's cells when ``values`` holds only some of
        them; by default the median of ``values``.
    n_cells : int, optional
        The sample's cells, when ``values`` holds only some of them.

    Examples
    --------
    >>> fig = traces_figure(np.arange(3.0), np.ones((3, 2)), "sample A")
    >>> fig.axes[0].get_title()
    'sample A (2 cells)'
    >>> traces_figure(np.empty(0), np.empty((0, 0)), "sample B").axes[0].get_title()
    'sample B (0 cells)'
    >>> fig = traces_figure(np.arange(3.0), np.ones((3, 2)), "C", median=np.ones(3), n_cells=9)
    >>> fig.axes[0].get_title()
    'C (9 cells, 2 drawn)'
    """
    values = np.asarray(values, dtype=np.float64)
    # a sample without good cells has no rows and no columns: nothing to reshape
    values = values.reshape(len(time_h), -1) if values.size else np.empty((len(time_h), 0))
    n_drawn = values.shape[1]
    n_cells = n_drawn if n_cells is None else int(n_cells)
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    if n_drawn:
        # Faint enough that many traces show where most cells lie, never invisible.
        alpha = min(1.0, max(0.03, 8 / n_drawn))
        ax.plot(time_h, values, color="tab:blue", alpha=alpha, lw=0.6)
        if median is None:
            with np.errstate(all="ignore"):
                finite = np.isfinite(values).any()
                median = np.nanmedian(values, axis=1) if finite else values[:, 0]
        ax.plot(time_h, median, color="black", lw=2.2, label="median")
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no good cells", ha="center", va="center", transform=ax.transAxes)
    shown = f"{n_cells} cells" if n_drawn == n_cells else f"{n_cells} cells, {n_drawn} drawn"
    ax.set(title=f"{title} ({shown})", xlabel="time [h]", ylabel=ylabel)
    return fig


def example_cells(r_squared: np.ndarray, n_examples: int = 12) -> np.ndarray:
    """Positions of up to ``n_examples`` cells spread over the R² range, lowest R² first
    (NaN counts as lowest): the cells :func:`fit_examples_figure` draws.

    Examples
    --------
    >>> example_cells(np.array([0.9, 0.1, np.nan, 0.5, 0.99]), 3).tolist()
    [2, 3, 4]
    """
    order = np.argsort(np.nan_to_num(np.asarray(r_squared, dtype=np.float64), nan=-1.0))
    n_cells = order.size
    spread = np.unique(np.linspace(0, n_cells - 1, min(n_examples, n_cells)).round().astype(int))
    return order[spread]


def fit_examples_figure(
    time_h: np.ndarray,
    values: np.ndarray,
    curve_time_h: np.ndarray,
    curves: np.ndarray,
    r_squared: np.ndarray,
    names: Sequence[str],
    title: str,
    n_examples: int = 12,
) -> Figure:
    """A grid of up to ``n_examples`` cells (spread over the R² range): points and fit.

    ``values`` is (n_t, n_cells), ``curves`` (n_dense, n_cells) evaluated at ``curve_time_h``,
    ``r_squared`` (n_cells,) and ``names`` the cells' column names. For many cells, pass only
    the :func:`example_cells` columns: the curves of all would be drawn for a dozen.

    Examples
    --------
    >>> t = np.linspace(0, 5, 6)
    >>> fig = fit_examples_figure(t, np.ones((6, 3)), t, np.ones((6, 3)), np.ones(3),
    ...                           ["a", "b", "c"], "sample A")
    >>> len(fig.axes)
    3
    """
    picked = example_cells(r_squared, n_examples)
    cols = 4 if len(picked) > 4 else max(len(picked), 1)
    rows = max(1, int(np.ceil(len(picked) / cols)))
    fig = _figure(3 * cols, 2.4 * rows)
    fig.suptitle(f"{title}: example fits, lowest to highest R²")
    for k, cell in enumerate(picked):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.plot(time_h, values[:, cell], ".", ms=3, color="tab:blue")
        ax.plot(curve_time_h, curves[:, cell], color="tab:red", lw=1.5)
        ax.set_title(f"{names[cell]}  R²={r_squared[cell]:.3f}", fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def histograms_figure(columns: Mapping[str, np.ndarray], title: str) -> Figure:
    """One histogram per named column (fitted parameters, R²), finite values only.

    Examples
    --------
    >>> fig = histograms_figure({"t0": np.array([1.0, 2.0]), "r_squared": np.array([0.9, 1])},
    ...                         "sample A")
    >>> [ax.get_title() for ax in fig.axes]
    ['t0', 'r_squared']
    """
    names = list(columns)
    cols = min(len(names), 4) or 1
    rows = max(1, int(np.ceil(len(names) / cols)))
    fig = _figure(3 * cols, 2.4 * rows)
    fig.suptitle(title)
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        data = np.asarray(columns[name], dtype=np.float64)
        data = data[np.isfinite(data)]
        if data.size:
            ax.hist(data, bins=min(30, max(5, data.size // 5)), color="tab:gray")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    return fig


def segmentation_figure(
    frames: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    frame_indices: Sequence[int],
    title: str,
) -> Figure:
    """Segmentation outlines (yellow) and track ids over phase-contrast frames.

    ``frames`` and ``labels`` are 2-D arrays of one FOV at the time points ``frame_indices``;
    ``labels`` are the tracked labels (0 = background, else the track id).

    Examples
    --------
    >>> lab = np.zeros((8, 8), dtype=np.uint16); lab[2:5, 2:5] = 1
    >>> fig = segmentation_figure([np.zeros((8, 8))], [lab], [0], "fov_000")
    >>> fig.axes[0].texts[0].get_text()
    '1'
    """
    fig = _figure(3.2 * len(frames), 3.6)
    fig.suptitle(title)
    for k, (frame, label, index) in enumerate(zip(frames, labels, frame_indices, strict=True)):
        ax = fig.add_subplot(1, len(frames), k + 1)
        image = np.asarray(frame, dtype=np.float64)
        low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
        ax.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1e-9))
        edges = find_boundaries(np.asarray(label), mode="inner")
        overlay = np.zeros((*edges.shape, 4))
        overlay[edges] = (1.0, 0.85, 0.0, 1.0)
        ax.imshow(overlay, interpolation="nearest")
        ids = np.unique(label)
        ids = ids[ids > 0]
        for track, (y, x) in zip(ids, ndi.center_of_mass(label > 0, label, ids), strict=True):
            ax.text(
                x,
                y,
                str(int(track)),
                color="cyan",
                fontsize=7,
                ha="center",
                va="center",
                path_effects=_OUTLINED,  # legible over dark cells and bright background alike
            )
        ax.set_title(f"frame {index}", fontsize=9)
        ax.set_axis_off()
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (atomically: never a half-written file) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(target) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    fig.clear()
    return target


def png_data_uri(fig: Figure, width_px: int = 480) -> str:
    """A small ``data:image/png;base64,...`` rendering of ``fig`` for an embedded preview
    (the Prefect UI renders them inside markdown artifacts; links to local files it cannot)."""
    from io import BytesIO

    buffer = BytesIO()
    dpi = width_px / fig.get_figwidth()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
