"""The plot of the curation panel (:mod:`pyama_lib.view.curation`): every cell's trace of one
feature, good cells in one colour, bad ones faded, the selected cell highlighted, and the frame
on show, in a matplotlib canvas for Qt.

A FOV has hundreds of cells of a few hundred frames, and the selected cell and the frame change
with every key and every frame the viewer plays: the good and the bad cells are one line each
(the cells separated by NaN), and the selected trace and the frame marker are drawn over a copy
of the rest (blitting), which is drawn again only when the marks, the feature or the size
change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from pyama_lib.view.curation_state import Series

GOOD, BAD, SELECTED = "#4da6ff", "#ff5050", "#ffd21f"
"""The colours of good, bad and selected cells, in the plot, the list and the image."""
_BACKGROUND, _INK = "#262930", "#d0d4dc"  # napari's dark theme, so the plot sits in it


class TracePlot:
    """The traces of one feature of a FOV's cells, on :attr:`canvas` (a Qt widget)."""

    def __init__(self) -> None:
        # fixed margins: a constrained layout would cost a tenth of a second per draw
        self.figure = Figure(figsize=(4.2, 2.8), dpi=100, facecolor=_BACKGROUND)
        self.figure.subplots_adjust(left=0.2, right=0.96, top=0.95, bottom=0.19)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        ax = self.axes = self.figure.add_subplot(facecolor=_BACKGROUND)
        ax.tick_params(colors=_INK, labelsize=8)
        for spine in ax.spines.values():
            spine.set_color(_INK)
        ax.set_xlabel("time (h)", color=_INK, fontsize=9)
        (self.bad_line,) = ax.plot([], [], color="0.55", lw=0.6, alpha=0.3)
        (self.good_line,) = ax.plot([], [], color=GOOD, lw=0.8, alpha=0.8)
        (self.selected_line,) = ax.plot([], [], color=SELECTED, lw=2.2, zorder=3, animated=True)
        self.frame_line = ax.axvline(0.0, color=_INK, lw=0.8, ls=":", animated=True)
        self._background: Any = None
        self.canvas.mpl_connect("draw_event", self._on_draw)

    def show_traces(self, series: Series, good: np.ndarray, feature: str) -> None:
        """Draw the cells of ``series``, those where ``good`` is true in the good colour."""
        for line, rows in ((self.good_line, good), (self.bad_line, ~good)):
            line.set_data(*_joined(series.hours, series.values[rows]))
        self.axes.set_ylabel(feature, color=_INK, fontsize=9)
        self.axes.relim()
        self.axes.autoscale_view()
        self.canvas.draw_idle()

    def show_selected(self, hours: np.ndarray, values: np.ndarray) -> None:
        """Highlight one trace (empty arrays: none) once :meth:`update_moving` draws."""
        self.selected_line.set_data(hours, values)

    def show_frame(self, hours: float) -> None:
        """Mark the time on show once :meth:`update_moving` draws."""
        self.frame_line.set_xdata([hours, hours])

    def update_moving(self) -> None:
        """Draw the selected trace and the frame marker over the copy of the last full draw."""
        if self._background is None:  # not drawn yet: the first draw draws them too
            self.canvas.draw_idle()
            return
        self.canvas.restore_region(self._background)
        self._draw_moving()
        self.canvas.blit(self.figure.bbox)

    def _on_draw(self, _: Any) -> None:
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_moving()

    def _draw_moving(self) -> None:
        self.axes.draw_artist(self.selected_line)
        self.axes.draw_artist(self.frame_line)


def _joined(x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows as one line: each row against ``x``, separated by NaN (a break in the line).

    Examples
    --------
    >>> xs, ys = _joined(np.array([0.0, 1.0]), np.array([[5.0, 6.0], [7.0, 8.0]]))
    >>> xs.tolist(), ys.tolist()
    ([0.0, 1.0, nan, 0.0, 1.0, nan], [5.0, 6.0, nan, 7.0, 8.0, nan])
    """
    gap = np.full((len(rows), 1), np.nan)
    xs = np.hstack([np.broadcast_to(x, rows.shape), gap]).ravel()
    return xs, np.hstack([rows, gap]).ravel()
