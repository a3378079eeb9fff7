"""The curation panel of ``pyama view``: a FOV's traces and cells beside its images in napari,
to mark cells good or bad as on PyAMA's Visualization page.

:func:`add_curation` docks a :class:`CurationWidget` in a napari viewer: a plot of the traces of
one feature and channel (good cells in one colour, bad ones faded, the selected cell
highlighted) and the list of cells with a check box each (ticked: good). Selecting a cell
colours its label and track and moves the time slider to a frame where it exists; clicking a
cell in the image selects it. Saving writes through
:meth:`~pyama_lib.view.curation_state.CurationState.save`, i.e. PyAMA's ``_inspected.csv`` of
every channel; closing the window with unsaved marks asks first. Only this module and its plot
(:mod:`pyama_lib.view.trace_plot`) import Qt, and napari only once a viewer exists (the
``[view]`` extra).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QBrush, QColor, QKeySequence
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pyama_lib.core.errors import PyamaError
from pyama_lib.view.curation_state import CurationState, Series
from pyama_lib.view.trace_plot import BAD, GOOD, SELECTED, TracePlot

if TYPE_CHECKING:
    import napari
    from napari.layers import Labels, Tracks

KEYS = (
    "Keys (image or list focused): ↓ / ↑ next / previous cell, Space toggle good/bad, "
    "Ctrl+S save the marks (PyAMA's _inspected.csv of every channel). "
    "Click a cell in the image to select it."
)
_ROLE = Qt.ItemDataRole.UserRole  # a list item's cell id


class CurationWidget(QWidget):
    """Traces and cells of one FOV, their marks, and the buttons and keys to change them.

    Parameters
    ----------
    state
        The FOV's cells and marks (:func:`~pyama_lib.view.curation_state.load_curation`).
    viewer
        The napari viewer whose time slider follows the selected cell.
    labels, tracks
        The tracked labels and the tracks layers, coloured by mark; None where the viewer
        has none.
    """

    def __init__(
        self,
        state: CurationState,
        viewer: napari.Viewer,
        labels: Labels | None = None,
        tracks: Tracks | None = None,
    ) -> None:
        super().__init__()
        self.state, self.viewer, self.labels, self.tracks = state, viewer, labels, tracks
        self.selected: int | None = None
        self.setToolTip(KEYS)
        self.feature, self.channel = QComboBox(), QComboBox()
        self.channel.addItems([f"channel {c}" for c in state.channels])
        self.plot = TracePlot()
        self.summary, self.status = QLabel(), QLabel("\n".join(state.warnings))
        self.status.setWordWrap(True)
        self.cells = QListWidget()
        self.rule = QLineEdit()
        self.rule.setPlaceholderText("area<50, frames<40, border")
        self.rule.setToolTip("mark bad the cells these rules pick (commas between rules)")
        self._build_layout()
        self._fill_list()
        self.channel.currentIndexChanged.connect(self._on_channel)
        self.feature.currentIndexChanged.connect(self._draw_traces)
        self.cells.currentItemChanged.connect(self._on_current_item)
        self.cells.itemChanged.connect(self._on_item_changed)
        viewer.dims.events.current_step.connect(self._on_frame)
        if tracks is not None:
            from napari.utils.colormaps import Colormap  # napari is there: it made the viewer

            # 0 bad, 0.5 good, 1 selected (_colour_layers): the control points, no scaling
            tracks.colormaps_dict = {
                "curation": Colormap([BAD, GOOD, SELECTED], controls=[0.0, 0.5, 1.0])
            }
        self._on_channel()
        self._show_marks()

    # -- building ---------------------------------------------------------------------------

    def _build_layout(self) -> None:
        choose = QHBoxLayout()
        choose.addWidget(self.feature, 2)
        choose.addWidget(self.channel, 1)
        bulk = QHBoxLayout()
        for text, action in (("All good", lambda: self.mark_all(True)),
                             ("All bad", lambda: self.mark_all(False))):  # fmt: skip
            button = QPushButton(text)
            button.clicked.connect(action)
            bulk.addWidget(button)
        by_rule = QHBoxLayout()
        by_rule.addWidget(self.rule, 1)
        for text, action in (("Bad by rule", self.mark_by_rule), ("Save", self.save)):
            button = QPushButton(text)
            button.clicked.connect(action)
            by_rule.addWidget(button)
        self.rule.returnPressed.connect(self.mark_by_rule)
        layout = QVBoxLayout(self)
        layout.addLayout(choose)
        layout.addWidget(self.plot.canvas)
        layout.addWidget(self.summary)
        layout.addWidget(self.cells, 1)
        layout.addLayout(bulk)
        layout.addLayout(by_rule)
        layout.addWidget(self.status)

    def _fill_list(self) -> None:
        cells = self.state.cells
        states = cells[[f"ch_{c}" for c in self.state.channels]]
        partial = states.eq("mixed").any(axis=1) | (states.nunique(axis=1) > 1)
        self.cells.blockSignals(True)
        for (cell, row), good in zip(cells.iterrows(), self.state.good, strict=True):
            item = QListWidgetItem(
                f"cell {cell}   frames {row['first_frame']}-{row['last_frame']}"
                f"   area {row['area']:.0f}"
            )
            item.setData(_ROLE, int(cell))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            if partial[cell]:
                item.setToolTip("marked bad in some channel or frame only; a change here marks it")
            _show_mark(item, good)
            self.cells.addItem(item)
        self.cells.blockSignals(False)

    # -- what a person does ---------------------------------------------------------------

    def select(self, cell: int | None) -> None:
        """Select ``cell`` (None: none): list row, plot, label and track, and the time slider
        on a frame where it exists."""
        self.selected = cell
        if cell is not None:
            row = self.state.row(cell)
            if self.cells.currentRow() != row:
                self.cells.setCurrentRow(row)  # comes back here through the list's signal
                return
            self._jump_to(cell)
        self._draw_selected()
        self._colour_layers()
        self.plot.update_moving()

    def step(self, delta: int) -> None:
        """Select the next (``delta`` 1) or previous (-1) cell of the list."""
        row = self.cells.currentRow()
        row = 0 if row < 0 else min(max(row + delta, 0), self.cells.count() - 1)
        self.cells.setCurrentRow(row)

    def toggle(self) -> None:
        """Turn the selected cell good if it is bad, else bad."""
        if self.selected is not None:
            row = self.state.row(self.selected)
            self.state.set_good([self.selected], not self.state.good[row])
            self._show_marks()

    def mark_all(self, good: bool) -> None:
        """Mark every cell good or bad (not saved yet)."""
        self.state.set_all(good)
        self._show_marks()

    def mark_by_rule(self) -> None:
        """Mark bad the cells the rules typed in the rule box pick (not saved yet)."""
        try:
            picked = self.state.apply_rules(self.rule.text())
        except PyamaError as exc:
            self.status.setText(str(exc))
            return
        self.status.setText(f"{self.rule.text().strip()}: {len(picked)} cell(s) marked bad")
        self._show_marks()

    def save(self) -> bool:
        """Save the marks; False (and the reason shown) if they could not be written."""
        try:
            result = self.state.save()
        except PyamaError as exc:
            self.status.setText(f"not saved: {exc}")
            return False
        written = ", ".join(done.path.name for done in result.channels)
        self.status.setText("\n".join([*result.warnings, f"saved: {written}"]))
        self._show_marks()
        return True

    def cell_at(self, position: Any) -> int | None:
        """The cell under world ``position`` (as napari's mouse events give it), if any."""
        if self.labels is None:
            return None
        index = np.round(self.labels.world_to_data(position)).astype(int)
        if ((index < 0) | (index >= self.labels.data.shape)).any():
            return None
        label = int(np.asarray(self.labels.data[tuple(index)]))
        return label if label and label in self.state.ids else None

    def confirm_close(self) -> bool:
        """Whether the window may close: no unsaved marks, or the person saved or discarded
        them; False when they cancel (or saving failed)."""
        if not self.state.dirty:
            return True
        n = int((self.state.good != self.state.saved).sum())
        answer = QMessageBox.question(
            self,
            "Unsaved marks",
            f"The marks of {n} cell(s) of fov {self.state.fov} are not saved. Save them?",
            QMessageBox.StandardButton.Save
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save,
        )
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        if answer == QMessageBox.StandardButton.Discard:
            # thrown away, so a second close event (napari's teardown sends one) asks nothing
            self.state.discard()
            return True
        return False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        """On the main window: ask before it closes with unsaved marks, and take Ctrl+S from
        napari's "Save Selected Layers" while this panel is docked."""
        if event.type() == QEvent.Type.Close and not self.confirm_close():
            event.ignore()
            return True
        if event.type() == QEvent.Type.ShortcutOverride and event.matches(QKeySequence.Save):
            # accepting the override keeps the menu's Ctrl+S from firing
            event.accept()
            if not event.isAutoRepeat():
                self.save()
            return True
        return super().eventFilter(watched, event)

    # -- keeping the views in step ----------------------------------------------------------

    def _on_channel(self) -> None:
        channel = self.state.channels[self.channel.currentIndex()]
        kept = self.feature.currentText()
        self.feature.blockSignals(True)
        self.feature.clear()
        self.feature.addItems(self.state.features(channel))
        self.feature.setCurrentIndex(max(self.feature.findText(kept), 0))
        self.feature.blockSignals(False)
        self._draw_traces()

    def _on_current_item(self, item: QListWidgetItem | None, _: Any = None) -> None:
        self.select(None if item is None else int(item.data(_ROLE)))

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        good = item.checkState() == Qt.CheckState.Checked
        cell = int(item.data(_ROLE))
        if bool(self.state.good[self.state.row(cell)]) != good:
            self.state.set_good([cell], good)
            self._show_marks()

    def _series(self) -> Series | None:
        if not self.feature.currentText():  # while the channel's features are filled in
            return None
        channel = self.state.channels[self.channel.currentIndex()]
        return self.state.series(channel, self.feature.currentText())

    def _draw_traces(self) -> None:
        series = self._series()
        if series is None:
            return
        self.plot.show_traces(series, self.state.good, self.feature.currentText())
        self._draw_selected()
        self._place_frame()

    def _draw_selected(self) -> None:
        series = self._series()
        if series is None or self.selected is None:
            self.plot.show_selected(np.array([]), np.array([]))
        else:
            self.plot.show_selected(series.hours, series.values[self.state.row(self.selected)])

    def _on_frame(self, _: Any = None) -> None:
        self._place_frame()
        self.plot.update_moving()

    def _place_frame(self) -> None:
        series = self._series()
        if series is not None and len(series.frames):
            frame = self.viewer.dims.current_step[0]
            at = min(int(np.searchsorted(series.frames, frame)), len(series.frames) - 1)
            self.plot.show_frame(series.hours[at])

    def _jump_to(self, cell: int) -> None:
        frames = self.state.frames_of(cell)
        now = self.viewer.dims.current_step[0]
        if len(frames) and now not in frames:
            self.viewer.dims.set_current_step(0, int(frames[np.abs(frames - now).argmin()]))

    def _show_marks(self) -> None:
        """Every view of the marks after they changed: list, summary, plot, layers."""
        self.cells.blockSignals(True)
        for row, good in enumerate(self.state.good):
            item = self.cells.item(row)
            if (item.checkState() == Qt.CheckState.Checked) != good:  # touch only what changed
                _show_mark(item, good)
        self.cells.blockSignals(False)
        n_bad = int((~self.state.good).sum())
        unsaved = "unsaved changes" if self.state.dirty else "saved"
        self.summary.setText(
            f"fov {self.state.fov}: {len(self.state.good)} cells, {n_bad} bad · {unsaved}"
        )
        self._draw_traces()
        self._colour_layers()

    def _colour_layers(self) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        bad = self.state.ids[~self.state.good].tolist()
        if self.labels is not None:
            colours: dict[int | None, Any] = {None: GOOD, 0: "transparent"}
            colours |= dict.fromkeys(bad, BAD)
            if self.selected is not None:
                colours[self.selected] = SELECTED
            self.labels.colormap = DirectLabelColormap(color_dict=colours)
        if self.tracks is not None:
            ids = self.tracks.data[:, 0].astype(np.int64)
            value = np.where(np.isin(ids, bad), 0.0, 0.5)
            value[ids == (self.selected if self.selected is not None else -1)] = 1.0
            self.tracks.features = self.tracks.features.assign(curation=value)
            self.tracks.color_by = "curation"


def _show_mark(item: QListWidgetItem, good: bool) -> None:
    """A list row's check box, and its text in the bad colour when bad (napari's theme draws
    an unticked box faintly)."""
    item.setCheckState(Qt.CheckState.Checked if good else Qt.CheckState.Unchecked)
    item.setData(Qt.ItemDataRole.ForegroundRole, None if good else QBrush(QColor(BAD)))


def add_curation(
    viewer: napari.Viewer,
    state: CurationState,
    labels: Labels | None = None,
    tracks: Tracks | None = None,
) -> CurationWidget:
    """Dock the curation panel of ``state``'s FOV in ``viewer``, with its keys and its
    click-to-select, and guard the window against closing with unsaved marks."""
    widget = CurationWidget(state, viewer, labels, tracks)
    viewer.window.add_dock_widget(widget, name="Curate cells", area="right")
    widget.window().installEventFilter(widget)

    # On the viewer rather than the labels layer: napari calls a layer's mouse callbacks
    # only while that layer is the active one, and the keys work whichever layer is.
    def on_mouse(_: Any, event: Any) -> Generator[None, None, None]:
        return _click(widget, event)

    viewer.mouse_drag_callbacks.append(on_mouse)
    bindings = {
        "Down": lambda _: widget.step(1),
        "Up": lambda _: widget.step(-1),
        "Space": lambda _: widget.toggle(),  # napari's hold-Space-to-pan is for painting
    }
    for key, action in bindings.items():
        viewer.bind_key(key, action, overwrite=True)
    widget.step(1)  # the first cell, so the arrow keys and Space act at once
    return widget


def _click(widget: CurationWidget, event: Any) -> Generator[None, None, None]:
    """Select the cell clicked in the image; a drag (panning) selects nothing."""
    position = event.position
    yield
    dragged = False
    while event.type == "mouse_move":
        dragged = True
        yield
    if not dragged:
        cell = widget.cell_at(position)
        if cell is not None:
            widget.select(cell)
