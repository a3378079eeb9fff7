"""Marking cells without a screen: ``mark_cells``, its rules and ``pyama inspect``, on a real
processing output and on hand-built PyAMA-style folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from flows.cli.main import main as cli_main
from pyama_lib.analysis.merge import merge_samples
from pyama_lib.core.errors import ParamsError, ResultsFileError
from pyama_lib.core.selection import Channels
from pyama_lib.io.analysis_csv import read_analysis_csv
from pyama_lib.io.mark_rules import MarkRule, border_cells
from pyama_lib.io.marks import ALL, fov_marks, inspected_csv_path, mark_cells, read_marked_traces
from pyama_lib.io.results_yaml import ProcessingResults, save_results
from pyama_lib.io.samples import Sample
from pyama_lib.io.traces import read_traces_csv, traces_csv_path, write_traces_csv
from tests.runs import processed_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A processed synthetic run: 2 FOVs of 4 cells, fluorescence channels 1 and 2."""
    return processed_run(tmp_path_factory.mktemp("marks"), n_fovs=2)


@pytest.fixture
def run(processed, tmp_path):
    """A private copy of the run to mark."""
    return Path(shutil.copytree(processed, tmp_path / "run"))


def _traces(out: Path, fov: int, channel: int) -> Path:
    return traces_csv_path(out, "synthetic", fov, channel)


def _pyama_number(text: str) -> str:
    """A traces CSV field as PyAMA's page writes it again: integers as they are, floats in
    Python's shortest form ("12.500000" -> "12.5"), empty stays empty."""
    return text if text == "" or "." not in text else repr(float(text))


def _good_by_line(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    at = lines[0].split(",").index("good")
    return [line.split(",")[at] for line in lines[1:]]


# -- the file ---------------------------------------------------------------------------------


def test_the_file_is_the_traces_csv_as_pyamas_page_saves_it(run):
    result = mark_cells(run, 0, bad=[2])
    assert [c.channel for c in result.channels] == [1, 2]
    for done in result.channels:
        traces = _traces(run, 0, done.channel)
        assert done.path == inspected_csv_path(traces) and done.path.is_file()
        assert (done.newly_bad, done.newly_good, done.n_cells, done.n_bad) == ([2], [], 4, 1)
        before = traces.read_text().splitlines()
        after = done.path.read_text().splitlines()
        assert after[0] == before[0]  # the same columns in the same order
        assert len(after) == len(before) == 1 + 4 * 32
        header = before[0].split(",")
        for old, new in zip(before[1:], after[1:], strict=True):
            old_fields, new_fields = old.split(","), new.split(",")
            row = dict(zip(header, old_fields, strict=True))
            for name, was, now in zip(header, old_fields, new_fields, strict=True):
                if name == "good":
                    assert now == ("False" if row["cell"] == "2" else "True"), old
                else:
                    assert now == _pyama_number(was), (name, old, new)
        assert "0,2,0,0.0,False," in done.path.read_text()  # PyAMA's "0.0", not "0.000000"
        assert not list(done.path.parent.glob(".*.tmp"))  # written through a temp file

        # What PyAMA's Visualization page (pyama-qt, October 2025) writes for the same marks:
        # pandas.read_csv of the file, good set for each cell, to_csv(index=False).
        pyama = pd.read_csv(traces)
        pyama["good"] = pyama["cell"].map({1: True, 2: False, 3: True, 4: True})
        assert done.path.read_text() == pyama.to_csv(index=False, lineterminator="\n")

        marked = read_marked_traces(traces)  # current, not stale: no warnings
        assert marked.source == done.path and marked.warnings == []
        assert sorted(marked.table.loc[~marked.table.good, "cell"].unique()) == [2]
        original = read_traces_csv(traces)
        pd.testing.assert_frame_equal(
            marked.table.drop(columns="good"), original.drop(columns="good")
        )


def test_a_channel_marks_its_own_file_and_none_marks_every_channel(run):
    mark_cells(run, 0, 2, bad=[3])
    assert not inspected_csv_path(_traces(run, 0, 1)).exists()
    assert set(_good_by_line(inspected_csv_path(_traces(run, 0, 2)))) == {"True", "False"}
    mark_cells(run, 0, bad=[1])
    cells = fov_marks(run, 0).cells
    assert cells["ch_1"].to_dict() == {1: "bad", 2: "good", 3: "good", 4: "good"}
    assert cells["ch_2"].to_dict() == {1: "bad", 2: "good", 3: "bad", 4: "good"}
    assert not inspected_csv_path(_traces(run, 1, 1)).exists()  # other FOVs are untouched


def test_marks_add_up_and_the_same_marks_again_change_nothing(run):
    mark_cells(run, 0, 1, bad=[2])
    second = mark_cells(run, 0, 1, bad=[3]).channels[0]
    assert (second.newly_bad, second.n_bad) == ([3], 2)  # 2 stays bad
    written = second.path.read_bytes()
    again = mark_cells(run, 0, 1, bad=[3]).channels[0]
    assert (again.newly_bad, again.newly_good, again.n_bad) == ([], [], 2)
    assert again.path.read_bytes() == written
    back = mark_cells(run, 0, 1, good=[2]).channels[0]
    assert (back.newly_good, back.n_bad) == ([2], 1)


def test_all_then_rules_then_ids(run):
    only = mark_cells(run, 0, 1, bad=ALL, good=[1, 4]).channels[0]
    assert (only.newly_bad, only.n_bad) == ([2, 3], 2)
    reset = mark_cells(run, 0, 1, good=ALL, bad=[3]).channels[0]
    assert (reset.newly_good, reset.newly_bad, reset.n_bad) == ([2], [], 1)
    assert mark_cells(run, 0, 1, good=ALL, rules=["frames>1"]).channels[0].n_bad == 4
    mark_cells(run, 0, 1, good=ALL)
    spared = mark_cells(run, 0, 1, rules=[MarkRule("frames", ">", 1)], good=[4]).channels[0]
    assert (spared.newly_bad, spared.n_bad) == ([1, 2, 3], 3)


def test_marks_of_a_stale_file_are_carried_onto_the_current_traces(run):
    """The person marked cells 3 and 4 bad; the FOV was extracted again since (new values,
    cell 4 gone). Marking cell 1 writes today's rows with the marks that still apply."""
    traces = _traces(run, 0, 1)
    old = read_traces_csv(traces)
    marks = old.assign(good=~old.cell.isin([3, 4]))
    inspected = inspected_csv_path(traces)
    write_traces_csv(marks, inspected)
    os.utime(inspected, (time.time() - 3600, time.time() - 3600))
    new = old[old.cell != 4].assign(area=lambda t: t.area + 1000.0)
    write_traces_csv(new, traces)

    result = mark_cells(run, 0, 1, bad=[1])
    said = "\n".join(result.warnings)
    assert "is older than the traces it marks" in said and "(4) that the current" in said
    assert result.channels[0].newly_bad == [1] and result.channels[0].n_bad == 2
    marked = read_marked_traces(traces)
    assert marked.warnings == [] and marked.source == inspected
    assert sorted(marked.table.loc[~marked.table.good, "cell"].unique()) == [1, 3]
    assert marked.table["area"].min() > 1000.0  # today's values


def test_rows_keep_the_traces_order_when_the_current_file_lists_them_otherwise(run):
    traces = _traces(run, 0, 1)
    table = read_traces_csv(traces)
    by_cell = table.sort_values(["cell", "frame"]).assign(good=lambda t: t.cell != 3)
    write_traces_csv(by_cell, inspected_csv_path(traces))  # saved by another tool, its order

    done = mark_cells(run, 0, 1, bad=[1]).channels[0]
    cells = [line.split(",")[1] for line in done.path.read_text().splitlines()[1:]]
    assert cells == [str(c) for c in table["cell"]]  # the traces' order, frame by frame
    good = _good_by_line(done.path)
    assert good == ["False" if c in ("1", "3") else "True" for c in cells]


def test_merge_leaves_the_bad_cells_out(run, tmp_path):
    mark_cells(run, 0, bad=[2])
    result = merge_samples(run, [Sample("all", [0, 1])], tmp_path / "merged")
    for (_, channel, feature), csv in result.files.items():
        columns = read_analysis_csv(csv).columns.tolist()
        assert "fov_000_cell_2" not in columns, (channel, feature)
        assert {"fov_000_cell_1", "fov_001_cell_2"} <= set(columns)  # marks are per FOV
    tidy = pd.read_parquet(result.parquet)
    assert not ((tidy.fov == 0) & (tidy.cell == 2)).any()
    assert ((tidy.fov == 1) & (tidy.cell == 2)).any()
    assert result.cells == {"all": 7}
    assert result.left_out == {"all": 1}  # what the summary and its artifact report


# -- errors -----------------------------------------------------------------------------------


def test_unknown_fovs_channels_and_cells_are_named(run):
    with pytest.raises(ParamsError, match=r"fov 7 has no traces in .*; FOVs with traces: 0, 1$"):
        mark_cells(run, 7, bad=[1])
    with pytest.raises(ParamsError, match=r"^fov 0 has no traces of channel 3; .*: 1, 2$"):
        mark_cells(run, 0, 3, bad=[1])
    with pytest.raises(ParamsError) as info:
        mark_cells(run, 0, bad=[2, 99, 12])
    assert str(info.value) == "fov 0 has no cell(s) 12, 99; it has 4 cell(s) (1, 2, 3, 4)"
    with pytest.raises(ParamsError, match=r"^fov 0: 1 cell\(s\) \(2\) given as both bad and good"):
        mark_cells(run, 0, bad=[2, 3], good=[2])
    with pytest.raises(ParamsError, match="both bad and good"):
        mark_cells(run, 0, bad=ALL, good=ALL)
    with pytest.raises(ParamsError, match=r"cell ids '2,3': give a list of integers or 'all'"):
        mark_cells(run, 0, bad="2,3")
    with pytest.raises(ResultsFileError, match="no processing results here"):
        mark_cells(run / "nowhere", 0, bad=[1])
    assert not list(run.rglob("*_inspected.csv"))  # nothing was written by any of them


# -- rules ------------------------------------------------------------------------------------


def _folder(tmp_path: Path, rows: list[tuple[int, int, float]], labels: np.ndarray | None) -> Path:
    """A PyAMA-style output folder of FOV 0, channel 1: traces rows (cell, frame, area) and,
    if given, tracked labels as PyAMA's ``.npy``."""
    out = tmp_path / "out"
    table = pd.DataFrame(rows, columns=["cell", "frame", "area"]).assign(
        fov=0, time=lambda t: 10.0 * t.frame, good=True, position_x=5.0, position_y=7.5
    )
    table["intensity_total"] = 100.0 * table["cell"] + table["frame"]
    results = ProcessingResults(output_dir=out, channels=Channels(pc=0, fl=[1]))
    results.fov(0).put("traces_csv", 1, write_traces_csv(table, traces_csv_path(out, "exp", 0, 1)))
    if labels is not None:
        npy = out / "fov_000" / "exp_fov_000_seg_labeled_ch_0.npy"
        np.save(npy, labels)
        results.fov(0).put("seg_labeled", 0, npy)
    save_results(results)
    return out


def _labels() -> np.ndarray:
    """Two 12 x 12 frames: cell 1 inside, cell 2 at the right edge in frame 1 only, cell 3 in
    the top-left corner, cell 4 inside; 9 is a label the traces do not have."""
    stack = np.zeros((2, 12, 12), dtype=np.uint16)
    stack[:, 4:6, 4:6] = 1
    stack[0, 4:6, 8:10] = 2
    stack[1, 4:6, 10:12] = 2
    stack[:, 0:2, 0:2] = 3
    stack[:, 8:10, 4:6] = 4
    stack[1, 11, 6] = 9
    return stack


RULE_ROWS = (
    [(1, f, a) for f, a in enumerate([40.0, 45.0, 30.0, 5000.0, 44.0])]  # small, one outlier
    + [(2, f, 2500.0) for f in range(5)]  # large
    + [(3, f, 300.0) for f in range(2)]  # short
    + [(4, f, 300.0 + f) for f in range(5)]  # fine
)


@pytest.mark.parametrize(
    ("rules", "bad"),
    [
        (["area<50"], [1]),
        (["area>2000"], [2]),
        (["area >= 2500"], [2]),
        (["frames<3"], [3]),
        (["border"], [2, 3]),
        (["area<50", "area>2000", "frames<3"], [1, 2, 3]),
        ([MarkRule("area", "<=", 44.0)], [1]),
    ],
)
def test_rules_pick_the_cells_they_describe(tmp_path, rules, bad):
    out = _folder(tmp_path, RULE_ROWS, _labels())
    done = mark_cells(out, 0, 1, rules=rules).channels[0]
    assert done.newly_bad == bad
    listed = fov_marks(out, 0)
    assert listed.cells.index[listed.cells["ch_1"] == "bad"].tolist() == bad
    assert listed.cells.loc[1, "area"] == 44.0 and listed.cells.loc[3, "frames"] == 2


@pytest.mark.parametrize("form", ["npy", "zarr"])
def test_border_cells_are_read_from_pyamas_npy_and_our_zarr_labels(tmp_path, form):
    if form == "npy":
        path = tmp_path / "labels.npy"
        np.save(path, _labels())
    else:
        path = tmp_path / "labels.zarr"
        array = zarr.create_array(path, shape=(2, 12, 12), chunks=(1, 12, 12), dtype="uint16")
        array[:] = _labels()
    assert border_cells(path) == {2, 3, 9}


def test_rules_the_results_cannot_evaluate_say_why(tmp_path):
    out = _folder(tmp_path, RULE_ROWS, None)
    with pytest.raises(ParamsError, match=r"rule 'border': fov 0 has no tracked labels in "):
        mark_cells(out, 0, rules=["border"])
    no_area = traces_csv_path(out, "exp", 0, 1)
    read_traces_csv(no_area).drop(columns="area").to_csv(no_area, index=False)
    with pytest.raises(ParamsError, match=r"^rule area<50: the traces of fov 0 have no 'area'"):
        mark_cells(out, 0, rules=["area<50"])
    with pytest.raises(ParamsError, match=r"^bad rule 'size<5': write e.g. 'area<50'"):
        mark_cells(out, 0, rules=["size<5"])
    gone = tmp_path / "gone.npy"
    with pytest.raises(ResultsFileError, match="cannot read the tracked labels"):
        border_cells(gone)


def test_a_cell_marked_in_some_frames_is_listed_as_mixed_and_kept_so(tmp_path):
    out = _folder(tmp_path, RULE_ROWS, None)
    traces = traces_csv_path(out, "exp", 0, 1)
    table = read_traces_csv(traces)
    table.loc[(table.cell == 4) & (table.frame < 2), "good"] = False  # edited by hand
    write_traces_csv(table, traces)
    assert fov_marks(out, 0).cells["ch_1"].to_dict() == {
        1: "good",
        2: "good",
        3: "good",
        4: "mixed",
    }
    done = mark_cells(out, 0, bad=[1]).channels[0]
    assert done.n_bad == 1  # a mixed cell is not counted bad
    assert _good_by_line(done.path)[-5:] == ["False", "False", "True", "True", "True"]
    assert mark_cells(out, 0, good=[4]).channels[0].newly_good == [4]
    assert _good_by_line(done.path)[-5:] == ["True"] * 5


# -- pyama inspect ----------------------------------------------------------------------------


def test_pyama_inspect_lists_the_cells_when_nothing_is_marked(run, capsys):
    mark_cells(run, 0, 2, bad=[3])
    assert cli_main(["inspect", str(run), "--fov", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "fov 0: 4 cell(s); channel 1: 4 good; channel 2: 1 bad, 3 good"
    assert out[1] == "".join(
        f"{h:>11}" for h in ("cell", "frames", "first-last", "area", "x", "y", "ch 1", "ch 2")
    )
    row = out[4].split()
    assert row[:3] == ["3", "32", "0-31"] and row[-2:] == ["good", "bad"]
    assert float(row[3]) == fov_marks(run, 0).cells.loc[3, "area"]
    assert not inspected_csv_path(_traces(run, 0, 1)).exists()  # listing writes nothing


def test_pyama_inspect_marks_and_says_what_changed(run, capsys):
    code = cli_main(
        ["inspect", str(run), "--fov", "1", "--channel", "1", "--bad", "1,3", "--bad", "4"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    written = inspected_csv_path(_traces(run, 1, 1))
    assert out == [
        "fov 1 channel 1: 3 cell(s) newly bad (1, 3, 4), none newly good; 3 of 4 cells bad",
        f"wrote: {written}",
    ]
    code = cli_main(
        ["inspect", str(run), "--fov", "1", "--good", "all", "--rule", "frames<40", "--list"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "fov 1 channel 1: 1 cell(s) newly bad (2), none newly good; 4 of 4 cells bad"
    assert out[4] == "fov 1: 4 cell(s); channel 1: 4 bad; channel 2: 4 bad"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fov", "0", "--bad", "2,x"], "--bad '2,x': give cell ids as integers"),
        (["--fov", "0", "--bad", "42"], "fov 0 has no cell(s) 42; it has 4 cell(s)"),
        (["--fov", "9", "--bad", "1"], "fov 9 has no traces in "),
        (["--fov", "0", "--channel", "5", "--list"], "fov 0 has no traces of channel 5"),
        (["--fov", "0", "--rule", "area<<3"], "bad rule 'area<<3'"),
    ],
)
def test_pyama_inspect_bad_input_exits_2_with_one_line(run, capsys, argv, message):
    assert cli_main(["inspect", str(run), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"pyama inspect: error: {message}")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not list(run.rglob("*_inspected.csv"))


def test_pyama_inspect_needs_neither_napari_nor_prefect(run):
    probe = (
        "import sys; sys.modules['napari'] = None; from flows.cli.main import main; "
        "code = main(sys.argv[1:]); print('prefect' in sys.modules); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "inspect", str(run), "--fov", "0", "--bad", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False"
    assert inspected_csv_path(_traces(run, 0, 2)).is_file()
