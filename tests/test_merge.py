"""Merging FOV traces into samples: real processing output and a PyAMA-written results folder."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pyama_lib.analysis.merge import PARQUET_NAME, merge_samples
from pyama_lib.core.errors import OutputDirError, ParamsError, ResultsFileError
from pyama_lib.core.selection import Channels
from pyama_lib.io.analysis_csv import (
    cell_column,
    read_analysis_csv,
    read_long_csv,
    wide_to_long,
)
from pyama_lib.io.marks import inspected_csv_path
from pyama_lib.io.results_yaml import load_results
from pyama_lib.io.samples import Sample
from pyama_lib.io.traces import read_traces_csv, traces_csv_path, write_traces_csv
from tests.runs import processed_run

FEATURES = ("intensity_total", "area")
SAMPLES = [Sample("ctrl", "0-1"), Sample("dox 1uM", [2])]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A processed synthetic run: 3 FOVs, fluorescence channels 1 and 2, results YAML."""
    return processed_run(tmp_path_factory.mktemp("merge"), n_fovs=3)


@pytest.fixture
def run(processed, tmp_path):
    """A private copy of the run (a moved folder, so paths are re-rooted) to modify freely."""
    return Path(shutil.copytree(processed, tmp_path / "run"))


def _csv(out, base, fov, ch):
    return traces_csv_path(out, base, fov, ch)


def _expected_wide(traces: dict[int, pd.DataFrame], feature: str) -> pd.DataFrame:
    """The good cells of the traces, written out cell by cell (independently of merge.py)."""
    columns = {}
    for fov in sorted(traces):
        table = traces[fov]
        for cell in sorted(table.loc[table.good, "cell"].unique()):
            rows = table[(table.cell == cell) & table.good]
            columns[cell_column(fov, cell)] = pd.Series(rows[feature].to_numpy(), rows["time"])
    wide = pd.DataFrame(columns).sort_index()
    wide.index = wide.index / 60  # read_analysis_csv gives hours
    return wide


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and skip not in p.parents
    }


def test_merged_columns_equal_the_good_cells_of_the_traces(run, tmp_path):
    # Mark cell 2 of FOV 0 bad everywhere and cell 1 bad in three frames (channel 1 only).
    path = _csv(run, "synthetic", 0, 1)
    table = read_traces_csv(path)
    table.loc[table.cell == 2, "good"] = False
    table.loc[(table.cell == 1) & table.frame.isin([3, 4, 5]), "good"] = False
    write_traces_csv(table, path)

    out = tmp_path / "merged"
    result = merge_samples(run, SAMPLES, out)
    assert set(result.files) == {(s.name, c, f) for s in SAMPLES for c in (1, 2) for f in FEATURES}
    for (name, channel, feature), csv in result.files.items():
        assert csv == out / f"{name}_{feature}_ch_{channel}.csv"
        lines = csv.read_text().splitlines()
        assert lines[0] == "# Time units: min"
        times = [float(line.split(",")[0]) for line in lines[2:]]
        assert times == sorted(times) and len(times) == 32
        sample = next(s for s in SAMPLES if s.name == name)
        traces = {f: read_traces_csv(_csv(run, "synthetic", f, channel)) for f in sample.fovs}
        got = read_analysis_csv(csv)
        want = _expected_wide(traces, feature)
        assert got.columns.tolist() == want.columns.tolist()
        np.testing.assert_allclose(got.index, want.index)
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=5e-7)

    ch1 = read_analysis_csv(result.files["ctrl", 1, "area"])
    assert "fov_000_cell_2" not in ch1.columns  # no all-empty column for a bad cell
    assert ch1["fov_000_cell_1"].isna().sum() == 3
    assert "fov_000_cell_2" in read_analysis_csv(result.files["ctrl", 2, "area"]).columns
    assert result.cells == {"ctrl": 8, "dox 1uM": 4}
    summary = result.as_dict()
    assert summary["format"] == "wide" and len(summary["files"]) == 8


def test_the_tidy_parquet_table_matches_the_csvs(processed, tmp_path):
    result = merge_samples(processed, SAMPLES, tmp_path / "m", features=["area", "position_x"])
    assert result.parquet == tmp_path / "m" / PARQUET_NAME
    table = pq.read_table(result.parquet)
    assert table.column_names == ["sample", "fov", "cell", "channel", "feature", "time", "value"]
    assert [str(t) for t in table.schema.types] == [
        "string",
        "int64",
        "int64",
        "int64",
        "string",
        "double",
        "double",
    ]
    tidy = pd.read_parquet(result.parquet)
    assert len(tidy) == len(table) == 2 * 2 * 3 * 4 * 32  # features x channels x FOVs x cells
    for (name, channel, feature), csv in result.files.items():
        part = tidy[
            (tidy["sample"] == name) & (tidy.channel == channel) & (tidy.feature == feature)
        ]
        wide = read_analysis_csv(csv)
        wide.index = wide.index * 60  # back to minutes, the Parquet table's unit
        long = wide_to_long(wide).sort_values(["fov", "cell", "time"], ignore_index=True)
        part = part.sort_values(["fov", "cell", "time"], ignore_index=True)
        assert (
            part[["fov", "cell"]].to_numpy().tolist() == long[["fov", "cell"]].to_numpy().tolist()
        )
        np.testing.assert_allclose(part["time"], long["time"], atol=1e-9)
        np.testing.assert_allclose(part["value"], long["value"], atol=5e-7)
    assert sorted(tidy.time.unique()) == [10.0 * i for i in range(32)]


def test_an_inspected_csv_beside_the_traces_wins(run, tmp_path):
    original = _csv(run, "synthetic", 0, 1)
    before = original.read_bytes()
    table = read_traces_csv(original)
    table.loc[table.cell == 3, "good"] = False  # a person marked cell 3 bad
    write_traces_csv(table, inspected_csv_path(original))

    result = merge_samples(run, [Sample("ctrl", [0])], tmp_path / "m")
    assert "fov_000_cell_3" not in read_analysis_csv(result.files["ctrl", 1, "area"]).columns
    assert "fov_000_cell_3" in read_analysis_csv(result.files["ctrl", 2, "area"]).columns
    assert original.read_bytes() == before
    assert result.cells == {"ctrl": 4}  # cell 3 is still good in channel 2
    assert result.left_out == {"ctrl": 1}  # and left out of channel 1


def test_marks_from_before_a_new_extraction_apply_to_the_cells_not_the_old_values(run, tmp_path):
    """The person marked cells 3 and 4 bad; the FOV was then extracted again (new values, cell 4
    gone, a new cell 9). The merge takes today's values, keeps the marks of the cells that
    still exist, and says what did not fit."""
    original = _csv(run, "synthetic", 0, 1)
    old = read_traces_csv(original)
    marks = old.copy()
    marks.loc[marks.cell.isin([3, 4]), "good"] = False
    inspected = inspected_csv_path(original)
    write_traces_csv(marks, inspected)
    os.utime(inspected, (time.time() - 3600, time.time() - 3600))  # saved an hour ago
    new = old[old.cell != 4].copy()
    new["area"] = new["area"] + 1000.0  # e.g. another segmentation
    extra = old[old.cell == 1].assign(cell=9)
    write_traces_csv(pd.concat([new, extra], ignore_index=True), original)

    result = merge_samples(run, [Sample("ctrl", [0])], tmp_path / "m")
    area = read_analysis_csv(result.files["ctrl", 1, "area"])
    assert sorted(area.columns) == ["fov_000_cell_1", "fov_000_cell_2", "fov_000_cell_9"]
    assert area["fov_000_cell_1"].min() > 1000.0  # today's values, not the inspected copy's
    said = "\n".join(result.warnings)
    assert f"{inspected}: is older than the traces it marks" in said
    assert "marks 1 cell(s) (4) that the current traces do not have" in said
    assert "does not mark 1 cell(s) (9); they count as good" in said


def test_long_format_option_holds_the_same_values(processed, tmp_path):
    wide = merge_samples(processed, SAMPLES, tmp_path / "wide")
    long = merge_samples(processed, SAMPLES, tmp_path / "long", long_format=True)
    assert long.long_format and long.as_dict()["format"] == "long"
    assert set(long.files) == set(wide.files)
    for key, path in long.files.items():
        lines = path.read_text().splitlines()
        assert lines[:2] == ["# Time units: min", "time,fov,cell,value"]
        tidy = read_long_csv(path)
        assert tidy["time"].is_monotonic_increasing
        pd.testing.assert_frame_equal(read_analysis_csv(path), read_analysis_csv(wide.files[key]))
    pd.testing.assert_frame_equal(pd.read_parquet(long.parquet), pd.read_parquet(wide.parquet))


def _pyama_traces(fov: int, cells: dict[int, list[bool]]) -> str:
    """A traces CSV as PyAMA writes it: its columns, "%.6f" floats, good as True/False."""
    lines = ["fov,cell,frame,time,good,position_x,position_y,intensity_total,area"]
    for frame in range(max(len(g) for g in cells.values())):
        for cell, good in cells.items():
            if frame < len(good):
                value = 1000.0 * (fov + 1) + 10 * cell + frame
                lines.append(
                    f"{fov},{cell},{frame},{10.0 * frame:.6f},{good[frame]},"
                    f"{5.0 + cell:.6f},{7.5:.6f},{value:.6f},{100.0 + cell:.6f}"
                )
    return "\n".join(lines) + "\n"


@pytest.fixture
def pyama_folder(tmp_path):
    """A results folder written by PyAMA at /lab/old/exp_out (one FOV on a Windows PC), moved."""
    here = tmp_path / "moved" / "exp_out"
    old = "/lab/old/exp_out"
    cells = {
        0: {0: [True] * 5, 1: [True] * 5, 2: [False] * 5},
        1: {0: [True] * 6, 3: [True, True, False, True, True, True]},
    }
    results_paths = {}
    for fov, fov_cells in cells.items():
        tag = f"fov_{fov:03d}"
        (here / tag).mkdir(parents=True)
        (here / tag / f"exp_{tag}_traces_ch_1.csv").write_text(_pyama_traces(fov, fov_cells))
        root = old if fov == 0 else r"C:\Users\lab\exp_out"
        sep = "/" if fov == 0 else "\\"
        npy = f"{root}{sep}{tag}{sep}exp_{tag}"
        results_paths[str(fov)] = {
            "pc": [0, f"{npy}_pc_ch_0.npy"],
            "fl": [[1, f"{npy}_fl_ch_1.npy"]],
            "seg": [0, f"{npy}_seg_ch_0.npy"],
            "seg_labeled": [0, f"{npy}_seg_labeled_ch_0.npy"],
            "fl_corrected": [[1, f"{npy}_fl_corrected_ch_1.npy"]],
            "traces_csv": [[1, f"{npy}_traces_ch_1.csv"]],
        }
    data = {
        "output_dir": old,
        "channels": {"pc": 0, "fl": [1]},
        "results_paths": results_paths,
        "params": {"batch_size": 2, "n_workers": 2},
        "time_units": "min",
    }
    (here / "processing_results.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return here


@pytest.mark.parametrize("fl", [[1], []])
def test_a_results_folder_written_by_pyama_and_moved_merges(pyama_folder, tmp_path, fl):
    if not fl:  # no channels.fl: the channels come from the traces_csv entries
        yaml_path = pyama_folder / "processing_results.yaml"
        data = yaml.safe_load(yaml_path.read_text())
        data["channels"]["fl"] = fl
        yaml_path.write_text(yaml.safe_dump(data, sort_keys=False))
    samples = tmp_path / "samples.yaml"
    samples.write_text("samples:\n  - name: all\n    fovs: '0-1'\n")
    result = merge_samples(pyama_folder / "processing_results.yaml", samples, pyama_folder / "m")

    assert sorted(result.files) == [("all", 1, "area"), ("all", 1, "intensity_total")]
    wide = read_analysis_csv(result.files["all", 1, "intensity_total"])
    # Only cells that exist and are good: PyAMA would add fov_000_cell_3, fov_001_cell_1, ...
    assert wide.columns.tolist() == [
        "fov_000_cell_0",
        "fov_000_cell_1",
        "fov_001_cell_0",
        "fov_001_cell_3",
    ]
    assert wide.index.tolist() == pytest.approx([i / 6 for i in range(6)])  # minutes -> hours
    assert wide["fov_001_cell_3"].tolist()[:3] == [
        2030.0,
        2031.0,
        pytest.approx(np.nan, nan_ok=True),
    ]
    assert np.isnan(wide.loc[wide.index[-1], "fov_000_cell_0"])  # FOV 0 has 5 frames only
    assert wide["fov_000_cell_1"].iloc[4] == 1014.0
    assert result.cells == {"all": 4}


def test_unknown_feature_names_it_and_the_columns_there_are(processed, tmp_path):
    with pytest.raises(ParamsError) as info:
        merge_samples(processed, SAMPLES, tmp_path / "m", features=["area", "intensity_totl"])
    assert str(info.value) == (
        "unknown feature 'intensity_totl'; the traces have position_x, position_y, "
        "intensity_total, area"
    )
    for key_column in ("time", "good"):
        with pytest.raises(ParamsError, match=f"unknown feature '{key_column}'"):
            merge_samples(processed, SAMPLES, tmp_path / "m", features=[key_column])
    with pytest.raises(ParamsError, match="no feature selected"):
        merge_samples(processed, SAMPLES, tmp_path / "m", features=[])
    assert not (tmp_path / "m").exists()


def test_a_feature_missing_from_one_fov_names_the_file(run, tmp_path):
    for channel in (1, 2):  # re-extracted with an extra feature: FOV 1 only
        path = _csv(run, "synthetic", 1, channel)
        table = read_traces_csv(path)
        table["intensity_mean"] = table.intensity_total / table.area
        write_traces_csv(table, path)
    with pytest.raises(
        ParamsError, match=r"'intensity_mean' is missing from .*fov_000_traces_ch_1"
    ):
        merge_samples(run, SAMPLES, tmp_path / "m", features=["intensity_mean"])
    assert not (tmp_path / "m").exists()
    result = merge_samples(run, [Sample("one", [1])], tmp_path / "m", features=["intensity_mean"])
    assert sorted(result.files) == [("one", 1, "intensity_mean"), ("one", 2, "intensity_mean")]


@pytest.mark.parametrize(
    ("samples", "needle"),
    [
        ([Sample("far", [0, 3, 4])], r"sample 'far' names FOV\(s\) 3-4 that have no traces"),
        ([Sample("a", [0]), Sample("A", [1])], "two samples are named 'a' and 'A'"),
        ([], "no samples given"),
    ],
)
def test_bad_samples_are_refused_before_anything_is_written(processed, tmp_path, samples, needle):
    with pytest.raises(ParamsError, match=needle):
        merge_samples(processed, samples, tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("samples: []\n", "'samples' must be a non-empty list"),
        ("fovs: [0]\n", "no 'samples' list"),
        ("samples: [{name: '../../escape', fovs: [0]}]\n", "'../../escape' is not safe"),
        ("samples: [{name: /tmp/abs, fovs: [0]}]\n", "'/tmp/abs' is not safe"),
        ("samples: [{name: a}]\n", "sample 'a' has no FOVs"),
        ("samples: [{fovs: [0]}]\n", "sample #1 has no name"),
        ("samples: [{name: a, fovs: [0]}, {name: a, fovs: [1]}]\n", "two samples are named 'a'"),
        ("samples: [{name: a, fovs: '0, 9'}]\n", r"sample 'a' names FOV\(s\) 9"),
    ],
)
def test_bad_samples_files_are_refused_naming_the_file(processed, tmp_path, text, needle):
    samples = tmp_path / "s.yaml"
    samples.write_text(text)
    before = {**_snapshot(tmp_path, skip=tmp_path / "m"), **_snapshot(processed, skip=tmp_path)}
    with pytest.raises(ParamsError, match=needle) as info:
        merge_samples(processed, samples, tmp_path / "m")
    assert str(samples) in str(info.value)
    after = {**_snapshot(tmp_path, skip=tmp_path / "m"), **_snapshot(processed, skip=tmp_path)}
    assert after == before
    assert not (tmp_path / "m").exists()


def test_nothing_is_written_outside_the_output_dir(run, tmp_path):
    out = tmp_path / "deep" / "merged"
    before = _snapshot(tmp_path, skip=out)
    result = merge_samples(run, SAMPLES, out)
    assert _snapshot(tmp_path, skip=out) == before
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([PARQUET_NAME, *(p.name for p in result.files.values())])
    assert all(p.parent == out for p in result.files.values())


def test_a_link_in_the_output_dir_leading_outside_is_refused(run, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    outside = tmp_path / "precious.csv"
    outside.write_text("keep me\n")
    os.symlink(outside, out / "ctrl_area_ch_2.csv")
    with pytest.raises(OutputDirError, match=r"'ctrl_area_ch_2.csv': it is a link to .*precious"):
        merge_samples(run, SAMPLES, out)
    assert outside.read_text() == "keep me\n"
    assert [p.name for p in out.iterdir()] == ["ctrl_area_ch_2.csv"]  # checked before writing


def test_an_output_dir_that_is_a_file_is_refused(processed, tmp_path):
    target = tmp_path / "merged"
    target.write_text("")
    with pytest.raises(OutputDirError, match="exists and is not a folder"):
        merge_samples(processed, SAMPLES, target)


def test_missing_inputs_name_the_file(run, tmp_path):
    with pytest.raises(ResultsFileError, match="no processing results here"):
        merge_samples(tmp_path / "nowhere", SAMPLES, tmp_path / "m")
    gone = _csv(run, "synthetic", 2, 2)
    gone.unlink()
    with pytest.raises(ResultsFileError, match=r"fov_002_traces_ch_2.csv: traces CSV recorded"):
        merge_samples(run, SAMPLES, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_loaded_results_and_fovs_without_a_channel(run, tmp_path):
    results = load_results(run)
    results.results_paths[2].traces_csv = [
        e for e in results.results_paths[2].traces_csv if e[0] == 1
    ]
    result = merge_samples(results, SAMPLES, tmp_path / "m", features=["area"])
    assert sorted(result.files) == [
        ("ctrl", 1, "area"),
        ("ctrl", 2, "area"),
        ("dox 1uM", 1, "area"),
    ]
    assert result.warnings == ["FOV 2 has no traces for channel 2; skipped"]


def test_two_outputs_with_one_file_name_are_refused(run, tmp_path):
    for fov in range(3):
        for channel in (1, 2):
            path = _csv(run, "synthetic", fov, channel)
            table = read_traces_csv(path)
            table["total_area"] = table.area
            write_traces_csv(table, path)
    samples = [Sample("a", [0]), Sample("a_total", [1])]
    with pytest.raises(ParamsError, match="samples 'a' and 'a_total' would both write a_total_"):
        merge_samples(run, samples, tmp_path / "m", features=["total_area", "area"])
    assert not (tmp_path / "m").exists()


# -- streamed tables equal the whole-table merge -----------------------------------------------


def _awkward_traces(fov: int, times: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Cells listed out of order, late starters, bad cells, empty values, -0.0 and big values."""
    rows = []
    for cell in (7, 2, 11, 5):
        for frame, t in enumerate(times):
            if cell == 11 and frame < 3:
                continue  # tracked from frame 3 on
            rows.append(
                {
                    "fov": fov,
                    "cell": cell,
                    "frame": frame,
                    "time": t,
                    "good": cell != 5,
                    "position_x": rng.uniform(0, 100),
                    "position_y": -0.0 if frame == 1 else rng.uniform(0, 100),
                    "intensity_total": np.nan if (cell, frame) == (2, 4) else rng.normal(0, 1e7),
                    "area": float(rng.integers(50, 90)),
                }
            )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=fov)  # file order is not time order


def _whole_table_merge(traces: dict[int, pd.DataFrame], feature: str) -> str:
    """What the merge wrote when it built one pandas table: pivot, then pandas' to_csv."""
    good = pd.concat(
        [t.loc[t.good, ["fov", "cell", "time", feature]] for _, t in sorted(traces.items())]
    )
    wide = good.pivot(index="time", columns=["fov", "cell"], values=feature).sort_index()
    wide = wide.reindex(columns=sorted(wide.columns))
    wide.columns = [cell_column(f, c) for f, c in wide.columns]
    body = wide.reset_index().to_csv(index=False, float_format="%.6f", lineterminator="\n")
    return "# Time units: min\n" + body


def test_the_streamed_merge_writes_what_the_whole_table_merge_wrote(tmp_path, monkeypatch):
    from pyama_lib.analysis import merge_tables
    from pyama_lib.io.results_yaml import FovResults, ProcessingResults, save_results

    monkeypatch.setattr(merge_tables, "ROW_GROUP_ROWS", 7)  # many row groups, a partial last
    rng = np.random.default_rng(3)
    folder = tmp_path / "out"
    results = ProcessingResults(folder, Channels(pc=0, fl=(1,)))
    traces = {}
    for fov in range(4):
        # FOV 2 was imaged at other times: its columns leave gaps in the others' rows
        times = np.arange(6) * 10.0 + (2.5 if fov == 2 else 0.0)
        traces[fov] = _awkward_traces(fov, times, rng)
        csv = _csv(folder, "exp", fov, 1)
        write_traces_csv(traces[fov], csv)
        results.results_paths[fov] = FovResults(traces_csv=[(1, csv)])
    save_results(results)
    samples = [Sample("a", [0, 2, 3]), Sample("b", [1])]
    merged = merge_samples(folder, samples, tmp_path / "merged")
    written = {fov: read_traces_csv(_csv(folder, "exp", fov, 1)) for fov in traces}
    tidy = []
    for sample in samples:
        for feature in FEATURES:
            mine = {f: written[f] for f in sample.fovs}
            expected = _whole_table_merge(mine, feature)
            assert merged.files[sample.name, 1, feature].read_text() == expected
            good = pd.concat([t[t.good] for _, t in sorted(mine.items())])
            good = good.sort_values(["fov", "cell", "time"])
            tidy.append(
                pd.DataFrame(
                    {
                        "sample": sample.name,
                        "fov": good["fov"].to_numpy(np.int64),
                        "cell": good["cell"].to_numpy(np.int64),
                        "channel": np.int64(1),
                        "feature": feature,
                        "time": good["time"].to_numpy(np.float64),
                        "value": good[feature].to_numpy(np.float64),
                    }
                )
            )
    parquet = pq.ParquetFile(merged.parquet)
    assert parquet.metadata.num_row_groups > 4
    assert parquet.schema_arrow.metadata[b"pyama.time_units"] == b"min"
    pd.testing.assert_frame_equal(
        pd.read_parquet(merged.parquet), pd.concat(tidy, ignore_index=True)
    )
    assert merged.cells == {"a": 9, "b": 3}
    preview = merged.previews["a", 1]  # what the sample's figure draws
    wide = read_analysis_csv(merged.files["a", 1, "intensity_total"])
    assert preview.feature == "intensity_total" and preview.n_cells == 9
    np.testing.assert_array_equal(preview.time_h, wide.index)
    np.testing.assert_allclose(preview.traces, wide.to_numpy(), atol=5e-7)
    np.testing.assert_allclose(preview.median, np.nanmedian(wide.to_numpy(), axis=1), atol=5e-7)
