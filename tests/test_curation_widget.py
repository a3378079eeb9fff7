"""The curation panel of `pyama view`, driven as a person drives it: a click on a cell in the
image, keys, buttons, the rule box, saving, closing the window, opening it again.

The marks it keeps without Qt (:mod:`pyama_lib.view.curation_state`) are checked first; the
tests marked ``view`` run napari in this process (pytest-qt's ``qtbot``) on an X display, an
Xvfb of their own when none is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyama_lib.analysis.merge import merge_samples
from pyama_lib.core.errors import ParamsError
from pyama_lib.core.selection import STAGES, Channels
from pyama_lib.io.analysis_csv import read_analysis_csv
from pyama_lib.io.marks import fov_marks, inspected_csv_path, mark_cells
from pyama_lib.io.results_yaml import update_results_file
from pyama_lib.io.samples import Sample
from pyama_lib.io.traces import read_traces_csv, traces_csv_path
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.stages import results_entries, run_stage
from pyama_lib.synthetic.generator import make_synthetic
from pyama_lib.view.curation_state import load_curation

CELLS, FRAMES = [1, 2, 3, 4], 32


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """One processed FOV of 4 cells, fluorescence channels 1 and 2, with its results YAML."""
    root = tmp_path_factory.mktemp("curation")
    acq = make_synthetic(root / "acq", n_fovs=1, n_frames=FRAMES, size=128, n_cells=4, n_fl=2)
    plan = plan_jobs(acq.path, root / "out", Channels(pc=0, fl=[1, 2]))
    for stage in STAGES:
        run_stage(stage, plan.jobs[0])
    update_results_file(results_entries(plan, [0]))
    return root / "out"


@pytest.fixture
def run(processed, tmp_path) -> Path:
    return Path(shutil.copytree(processed, tmp_path / "run"))


def _traces(out: Path, channel: int) -> pd.DataFrame:
    return read_traces_csv(traces_csv_path(out, "synthetic", 0, channel))


def _inspected(out: Path, channel: int) -> Path:
    return inspected_csv_path(traces_csv_path(out, "synthetic", 0, channel))


# -- the marks, without Qt --------------------------------------------------------------------


def test_state_saves_only_what_the_person_changed(run):
    mark_cells(run, 0, channel=2, bad=[3])  # someone marked cell 3 in one channel only
    state = load_curation(run, 0)
    assert state.ids.tolist() == CELLS and state.channels == [1, 2]
    assert state.good.tolist() == [True, True, False, True]  # bad somewhere: shown bad
    assert state.features(1)[:2] == ["intensity_total", "area"]
    series = state.series(2, "area")
    table = _traces(run, 2)
    assert series.values.shape == (4, FRAMES)
    assert series.values[1, 5] == table.query("cell == 2 and frame == 5")["area"].item()
    np.testing.assert_allclose(series.hours[:2], [0.0, 10 / 60])  # 10 min a frame
    state.set_good([1], False)
    assert state.dirty
    state.save()
    assert not state.dirty
    cells = fov_marks(run, 0).cells
    assert cells.loc[1, ["ch_1", "ch_2"]].tolist() == ["bad", "bad"]
    # cell 3 was not touched here: its one-channel mark stays as it was
    assert cells.loc[3, ["ch_1", "ch_2"]].tolist() == ["good", "bad"]
    with pytest.raises(ParamsError, match="bad rule 'size<3'"):
        state.apply_rules("size<3")
    with pytest.raises(ParamsError, match="fov 0 has no cell 9"):
        state.set_good([9], False)


# -- the panel in napari ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def qt_display() -> str:
    """An X display for Qt in this process, kept until the process ends.

    pytest-qt keeps one QApplication for the session and Qt never lets go of its display: an
    X server stopped under it ends the process with an X IO error. So an Xvfb started here is
    stopped by a watcher once this process is gone. Qt draws through the ``offscreen``
    platform, whose OpenGL goes through the display (the ``xcb`` one needs system libraries
    that napari's wheels do not bring).
    """
    if not os.environ.get("DISPLAY"):
        if shutil.which("Xvfb") is None:
            pytest.skip("no X display and no Xvfb (apt install xvfb)")
        read_end, write_end = os.pipe()  # Xvfb picks a free display and writes its number
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1920x1200x24"]
            + ["-nolisten", "tcp"],
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_end)
        with os.fdopen(read_end) as numbers:
            os.environ["DISPLAY"] = f":{numbers.readline().strip()}"
        watch = f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; kill {xvfb.pid}"
        subprocess.Popen(["sh", "-c", watch], start_new_session=True)
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    return os.environ["DISPLAY"]


Opener = Callable[[], tuple]


@pytest.fixture
def curate(qt_display, qtbot, run) -> Iterator[Opener]:
    """Opens FOV 0 of ``run`` as `pyama view` does, window shown; closes what is left open."""
    from pyama_lib.view.layers import fov_layers, open_viewer

    opened = []

    def open_fov() -> tuple:
        viewer, widget = open_viewer(fov_layers(run, 0), frame=10, curation=load_curation(run, 0))
        viewer.window.resize(1400, 900)
        viewer.reset_view()
        qtbot.waitExposed(widget.window())
        opened.append((viewer, widget))
        return viewer, widget

    yield open_fov
    for viewer, widget in opened:
        widget.state.discard()  # a failed test's marks: nobody to ask
        viewer.close()  # again, if the test closed it: napari then does nothing


def _canvas(viewer):
    return viewer.window._qt_viewer.canvas  # napari's vispy canvas: where a person clicks


def _click_cell(qtbot, viewer, cell: int, frame: int, out: Path) -> None:
    """Click in the image where the traces put ``cell`` at ``frame``."""
    from qtpy.QtCore import QPoint, Qt

    viewer.dims.set_current_step(0, frame)
    row = _traces(out, 1).query(f"cell == {cell} and frame == {frame}")
    _, sy, sx = viewer.layers["seg_labeled_ch_0"].scale
    canvas = _canvas(viewer)
    world_to_canvas = canvas.view.transform * canvas.view.scene.transform
    x, y = world_to_canvas.map([row["position_x"].item() * sx, row["position_y"].item() * sy])[:2]
    qtbot.mouseClick(canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))


def _rgba(colour: str) -> list[float]:
    return [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)] + [1.0]


def _key(qtbot, widget, key, modifier=None) -> None:
    from qtpy.QtCore import Qt

    qtbot.keyClick(widget, key, modifier or Qt.KeyboardModifier.NoModifier)


@pytest.mark.view
def test_click_toggle_save_reopen_and_merge(curate, qtbot, run, processed, tmp_path, monkeypatch):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMessageBox

    from pyama_lib.view.trace_plot import BAD, SELECTED

    monkeypatch.setattr(QMessageBox, "question", lambda *a: pytest.fail("asked with no changes"))
    viewer, widget = curate()
    assert widget.selected == 1  # the first cell, so keys act at once
    _click_cell(qtbot, viewer, 3, 20, run)
    assert widget.selected == 3 and widget.cells.currentRow() == 2
    assert viewer.dims.current_step[0] == 20  # the cell is there: the slider stays
    labels, tracks = viewer.layers["seg_labeled_ch_0"], viewer.layers["tracks (ch 1)"]
    np.testing.assert_allclose(labels.colormap.color_dict[3], _rgba(SELECTED))
    on_track = tracks.data[:, 0] == 3
    assert (tracks.features["curation"][on_track] == 1.0).all()
    assert (tracks.features["curation"][~on_track] == 0.5).all()
    trace = _traces(run, 1).query("cell == 3").sort_values("frame")["intensity_total"]
    np.testing.assert_allclose(widget.plot.selected_line.get_ydata(), trace)

    canvas = _canvas(viewer).native
    _key(qtbot, canvas, Qt.Key.Key_Space)  # bad
    assert widget.state.good.tolist() == [True, True, False, True]
    assert widget.cells.item(2).checkState() == Qt.CheckState.Unchecked
    assert widget.summary.text() == "fov 0: 4 cells, 1 bad · unsaved changes"
    np.testing.assert_allclose(labels.colormap.color_dict[3], _rgba(SELECTED))
    _key(qtbot, canvas, Qt.Key.Key_Down)  # to cell 4: cell 3 shows as bad now
    assert widget.selected == 4
    np.testing.assert_allclose(labels.colormap.color_dict[3], _rgba(BAD))
    assert (tracks.features["curation"][on_track] == 0.0).all()
    # Ctrl+S saves the marks (napari's Save Selected Layers would wait in a file dialog)
    _key(qtbot, canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert not widget.state.dirty and widget.summary.text().endswith("1 bad · saved")

    # the files are what mark_cells writes for the same marks, byte for byte
    reference = Path(shutil.copytree(processed, tmp_path / "reference"))
    mark_cells(reference, 0, bad=[3])
    for channel in (1, 2):
        assert _inspected(run, channel).read_bytes() == _inspected(reference, channel).read_bytes()
    widget.window().close()  # nothing unsaved: closes without asking
    assert not widget.window().isVisible()
    viewer.close()  # what the end of napari's event loop does in `pyama view`

    _, again = curate()
    assert again.state.good.tolist() == [True, True, False, True]
    checks = [again.cells.item(row).checkState() for row in range(4)]
    assert checks == [Qt.CheckState.Checked] * 2 + [Qt.CheckState.Unchecked, Qt.CheckState.Checked]

    merged = merge_samples(run, [Sample("s", [0])], tmp_path / "merged")
    assert merged.left_out == {"s": 1}
    for csv in merged.files.values():
        columns = read_analysis_csv(csv).columns.tolist()
        assert [c for c in columns if c.startswith("fov_")] == [
            "fov_000_cell_1",
            "fov_000_cell_2",
            "fov_000_cell_4",
        ]


@pytest.mark.view
def test_closing_with_unsaved_marks_asks(curate, qtbot, run, monkeypatch):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMessageBox

    Button = QMessageBox.StandardButton
    answers, asked = [Button.Cancel, Button.Discard, Button.Save], []

    def question(parent, title, text, *_):
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr(QMessageBox, "question", question)
    viewer, widget = curate()
    window = widget.window()
    _key(qtbot, widget.cells, Qt.Key.Key_Down)  # the list's own keys: cell 2
    _key(qtbot, widget.cells, Qt.Key.Key_Space)  # bad
    assert widget.state.good.tolist() == [True, False, True, True]
    window.close()  # Cancel: still open, still unsaved
    assert asked == ["The marks of 1 cell(s) of fov 0 are not saved. Save them?"]
    assert window.isVisible() and widget.state.dirty
    window.close()  # Discard: closed, nothing written
    assert not window.isVisible() and not _inspected(run, 1).exists()
    viewer.close()

    _, widget = curate()
    assert widget.state.good.all()  # what was discarded is gone
    widget.cells.setFocus()
    for key in (Qt.Key.Key_Down, Qt.Key.Key_Down, Qt.Key.Key_Space, Qt.Key.Key_Up):
        _key(qtbot, widget.cells, key)
    assert widget.selected == 2 and widget.state.good.tolist() == [True, True, False, True]
    widget.window().close()  # Save: written, then closed
    assert len(asked) == 3 and not widget.window().isVisible()
    assert fov_marks(run, 0).cells["ch_1"].tolist() == ["good", "good", "bad", "good"]


@pytest.mark.view
def test_bulk_marks_rules_and_the_plot(curate, qtbot, run):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QPushButton

    viewer, widget = curate()
    buttons = {b.text(): b for b in widget.findChildren(QPushButton)}
    qtbot.mouseClick(buttons["All bad"], Qt.MouseButton.LeftButton)
    assert not widget.state.good.any() and widget.summary.text().startswith("fov 0: 4 cells, 4 bad")
    assert len(widget.plot.good_line.get_ydata()) == 0
    qtbot.mouseClick(buttons["All good"], Qt.MouseButton.LeftButton)
    assert widget.state.good.all()

    # a rule: the cell of the smallest median area, and no other
    area = pd.concat([_traces(run, 1), _traces(run, 2)]).groupby("cell")["area"].median()
    smallest, next_up = area.sort_values().iloc[:2]
    qtbot.keyClicks(widget.rule, f"area<{(smallest + next_up) / 2:g}")
    _key(qtbot, widget.rule, Qt.Key.Key_Return)
    assert widget.state.ids[~widget.state.good].tolist() == [area.idxmin()]
    assert widget.status.text().endswith(": 1 cell(s) marked bad")
    widget.rule.setText("size<3")
    qtbot.mouseClick(buttons["Bad by rule"], Qt.MouseButton.LeftButton)
    assert widget.status.text().startswith("bad rule 'size<3': write e.g. 'area<50'")
    assert int((~widget.state.good).sum()) == 1

    # the plot: the chosen feature and channel, good cells drawn apart from bad ones
    widget.channel.setCurrentIndex(1)
    widget.feature.setCurrentText("area")
    table = _traces(run, 2)
    good = table[table["cell"] != area.idxmin()]
    drawn = widget.plot.good_line.get_ydata()
    np.testing.assert_allclose(np.sort(drawn[np.isfinite(drawn)]), np.sort(good["area"]))
    bad = widget.plot.bad_line.get_ydata()
    assert np.isfinite(bad).sum() == FRAMES
    assert widget.plot.axes.get_ylabel() == "area"

    # a cell first seen at frame 12: selecting it at frame 3 moves the time slider there
    widget.state.tables = {
        c: t[(t["cell"] != 4) | (t["frame"] >= 12)] for c, t in widget.state.tables.items()
    }
    viewer.dims.set_current_step(0, 3)
    widget.cells.setCurrentRow(3)
    assert widget.selected == 4 and viewer.dims.current_step[0] == 12


@pytest.mark.view
def test_screenshot_shows_the_panel_beside_the_fov(qt_display, qtbot, run, tmp_path):
    import imageio.v3 as iio

    from pyama_lib.view.layers import fov_layers, show

    png = show(
        fov_layers(run, 0), screenshot=tmp_path / "curation.png", curation=load_curation(run, 0)
    )
    image = iio.imread(png)[..., :3].astype(int)
    assert image.shape[:2] == (900, 1600)

    def near(colour: str, tolerance: int = 30) -> np.ndarray:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        return np.abs(image - rgb).max(axis=-1) < tolerance

    right = slice(1100, None)  # the docked panel: the traces in the good colour, cell 1's
    assert near("#4da6ff", 60)[:, right].sum() > 200 and near("#ffd21f")[:, right].sum() > 50
