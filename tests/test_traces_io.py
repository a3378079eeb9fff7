"""Traces CSV (PyAMA format) and the hive-partitioned Parquet dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from pyama_lib.core.errors import InputDataError, ResultsFileError
from pyama_lib.io.marks import inspected_csv_path, read_marked_traces
from pyama_lib.io.traces import (
    read_traces_csv,
    read_traces_parquet,
    traces_csv_path,
    traces_partition_dir,
    write_traces_csv,
    write_traces_partition,
)

HEADER = "fov,cell,frame,time,good,position_x,position_y,intensity_total,area"


def _traces(fov: int, n_cells: int = 3, n_frames: int = 4, seed: int = 0) -> pd.DataFrame:
    """A trace table as extraction produces it: float32 sums, integer areas, bbox centres."""
    rng = np.random.default_rng(seed)
    cells, frames = np.meshgrid(np.arange(1, n_cells + 1), np.arange(n_frames), indexing="ij")
    n = cells.size
    return pd.DataFrame(
        {
            "fov": np.full(n, fov, dtype=np.int64),
            "cell": cells.ravel(),
            "frame": frames.ravel(),
            "time": frames.ravel() * 7.5,
            "good": np.ones(n, dtype=bool),
            "position_x": rng.integers(0, 200, n) / 2.0,
            "position_y": rng.integers(0, 200, n) / 2.0,
            "intensity_total": rng.uniform(0, 1e6, n).astype(np.float32),
            "area": rng.integers(50, 500, n),
        }
    )


def test_csv_path_is_pyamas_name() -> None:
    assert traces_csv_path("/o", "exp", 3, 1) == Path("/o/fov_003/exp_fov_003_traces_ch_1.csv")
    assert traces_csv_path(Path("/o"), "a_b", 123, 0) == Path(
        "/o/fov_123/a_b_fov_123_traces_ch_0.csv"
    )
    assert inspected_csv_path("/o/x_traces_ch_1.csv") == Path("/o/x_traces_ch_1_inspected.csv")


def test_csv_exact_text_column_order_and_six_decimals(tmp_path: Path) -> None:
    # Columns deliberately shuffled, plus an extra feature that must come after area.
    df = pd.DataFrame(
        {
            "area": [42, 7],
            "circularity": [0.5, 1.0 / 3.0],
            "good": [True, False],
            "intensity_total": np.array([1234.5678, 0.1], dtype=np.float32),
            "time": [0.0, 12.5],
            "cell": [1, 2],
            "position_y": [20.25, 3.0],
            "frame": [0, 3],
            "position_x": [10.5, 1.0],
            "fov": [0, 0],
        }
    )
    path = write_traces_csv(df, tmp_path / "fov_000" / "t_traces_ch_1.csv")
    assert path.read_text() == (
        f"{HEADER},circularity\n"
        # float32 1234.5678 is 1234.5677490234375 exactly; widened, not re-rounded via text.
        "0,1,0,0.000000,True,10.500000,20.250000,1234.567749,42.000000,0.500000\n"
        "0,2,3,12.500000,False,1.000000,3.000000,0.100000,7.000000,0.333333\n"
    )


def test_csv_round_trip_types_and_values(tmp_path: Path) -> None:
    df = _traces(fov=5)
    path = write_traces_csv(df, traces_csv_path(tmp_path, "exp", 5, 2))
    back = read_traces_csv(path)
    assert list(back.columns) == HEADER.split(",")
    assert back.dtypes.astype(str).tolist() == [
        "int64", "int64", "int64", "float64", "bool",
        "float64", "float64", "float64", "float64",
    ]  # fmt: skip
    pd.testing.assert_frame_equal(
        back[["fov", "cell", "frame", "good"]], df[back.columns[[0, 1, 2, 4]]]
    )
    np.testing.assert_allclose(
        back["intensity_total"], df["intensity_total"].astype(float), atol=5e-7 + 1e-9, rtol=0
    )
    np.testing.assert_array_equal(back["area"], df["area"].astype(float))


def test_empty_table_writes_header_only(tmp_path: Path) -> None:
    path = write_traces_csv(_traces(0).iloc[0:0], tmp_path / "e.csv")
    assert path.read_text() == HEADER + "\n"
    back = read_traces_csv(path)
    assert len(back) == 0
    assert back["cell"].dtype == np.int64 and back["good"].dtype == bool


def test_inspected_file_is_preferred(tmp_path: Path) -> None:
    df = _traces(fov=1)
    path = write_traces_csv(df, traces_csv_path(tmp_path, "exp", 1, 1))
    # PyAMA saves inspected files with plain to_csv (no float format): read that shape too.
    inspected = df.copy()
    inspected.loc[inspected["cell"] == 2, "good"] = False
    inspected.to_csv(inspected_csv_path(path), index=False)

    marked = read_marked_traces(path)
    assert marked.source == inspected_csv_path(path) and marked.warnings == []
    assert marked.table.groupby("cell")["good"].all().to_dict() == {1: True, 2: False, 3: True}
    assert read_traces_csv(path)["good"].all()  # the traces themselves stay as extracted


def test_a_mark_left_empty_is_refused_not_read_as_good(tmp_path: Path) -> None:
    # A spreadsheet saving the inspected file leaves an unknown mark empty: the column is then
    # float with NaN, which would cast to True.
    df = _traces(fov=1)
    path = write_traces_csv(df, traces_csv_path(tmp_path, "exp", 1, 1))
    marks = df.copy()
    marks["good"] = 1.0
    marks.loc[3, "good"] = np.nan
    marks.to_csv(inspected_csv_path(path), index=False)
    with pytest.raises(
        ResultsFileError, match=r"_inspected.csv: .*good is empty in data row 4 \(line 5"
    ):
        read_marked_traces(path)


def test_bad_tables_and_files_raise(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="position_x"):
        write_traces_csv(_traces(0).drop(columns=["position_x"]), tmp_path / "a.csv")
    missing = tmp_path / "nope.csv"
    with pytest.raises(ResultsFileError, match="nope.csv"):
        read_traces_csv(missing)
    garbage = tmp_path / "g_traces_ch_0.csv"
    garbage.write_text("fov,cell\n0,abc\n")
    with pytest.raises(ResultsFileError, match="g_traces_ch_0.csv"):
        read_traces_csv(garbage)


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = write_traces_csv(_traces(0), tmp_path / "t.csv")
    before = path.read_bytes()
    bad = _traces(0).astype({"cell": float})
    bad.loc[0, "cell"] = np.nan
    with pytest.raises(InputDataError, match="cell"):
        write_traces_csv(bad, path)
    assert path.read_bytes() == before
    # A failure after the data is written (here: the final name is a folder) cleans up too.
    blocker = tmp_path / "blocked.csv"
    (blocker / "x").mkdir(parents=True)
    with pytest.raises(ResultsFileError, match="blocked.csv"):
        write_traces_csv(_traces(0), blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked.csv", "t.csv"]


def _files(dataset: Path) -> dict[str, bytes]:
    return {str(p.relative_to(dataset)): p.read_bytes() for p in dataset.rglob("*") if p.is_file()}


def test_partition_replacement_leaves_other_partitions_untouched(tmp_path: Path) -> None:
    dataset = tmp_path / "traces.parquet"
    write_traces_partition(_traces(3, seed=1), dataset, fov=3, channel=1)
    write_traces_partition(_traces(3, seed=2), dataset, fov=3, channel=2)
    write_traces_partition(_traces(4, seed=3), dataset, fov=4, channel=1)
    before = _files(dataset)
    assert sorted(before) == [
        "fov=3/channel=1/part-0.parquet",
        "fov=3/channel=2/part-0.parquet",
        "fov=4/channel=1/part-0.parquet",
    ]
    # A stale file from another writer in the target partition must not survive the swap.
    stale = traces_partition_dir(dataset, 3, 1) / "part-1.parquet"
    stale.write_bytes(before["fov=3/channel=2/part-0.parquet"])

    replacement = _traces(3, n_cells=1, n_frames=2, seed=9)
    write_traces_partition(replacement, dataset, fov=3, channel=1)

    after = _files(dataset)
    assert sorted(after) == sorted(before)  # no temp files, no stale part-1
    assert after["fov=3/channel=2/part-0.parquet"] == before["fov=3/channel=2/part-0.parquet"]
    assert after["fov=4/channel=1/part-0.parquet"] == before["fov=4/channel=1/part-0.parquet"]
    got = read_traces_parquet(dataset, fovs=[3], channels=[1])
    assert len(got) == 2
    np.testing.assert_array_equal(
        got["intensity_total"], replacement["intensity_total"].astype(np.float64)
    )
    assert len(read_traces_parquet(dataset)) == 2 + 12 + 12


def test_parquet_filters_types_and_empty_partitions(tmp_path: Path) -> None:
    dataset = tmp_path / "traces.parquet"
    write_traces_partition(_traces(0), dataset, 0, 1)
    write_traces_partition(_traces(2).iloc[0:0], dataset, 2, 1)  # extracted, no cells
    write_traces_partition(_traces(2).assign(channel=3), dataset, 2, 3)

    everything = read_traces_parquet(dataset)
    assert list(everything.columns[:3]) == ["fov", "channel", "cell"]
    assert everything.dtypes["fov"] == np.int64 and everything.dtypes["channel"] == np.int64
    assert everything.dtypes["good"] == np.dtype(bool) and everything.dtypes["area"] == np.float64
    assert sorted(set(zip(everything["fov"], everything["channel"], strict=True))) == [
        (0, 1),
        (2, 3),
    ]
    assert set(read_traces_parquet(dataset, channels=[3])["fov"]) == {2}
    empty = read_traces_parquet(dataset, fovs=[2], channels=[1])
    assert len(empty) == 0 and empty.dtypes["cell"] == np.int64
    assert list(empty.columns) == ["fov", "channel", *HEADER.split(",")[1:]]

    with pytest.raises(InputDataError, match="fov"):
        write_traces_partition(_traces(5), dataset, fov=6, channel=1)
    with pytest.raises(InputDataError, match="channel"):
        write_traces_partition(_traces(6).assign(channel=2), dataset, fov=6, channel=1)
    with pytest.raises(ResultsFileError, match="missing.parquet"):
        read_traces_parquet(tmp_path / "missing.parquet")


def test_dataset_readable_by_pandas_and_pyarrow(tmp_path: Path) -> None:
    dataset = tmp_path / "traces.parquet"
    for fov in (0, 1):
        for ch in (1, 2):
            write_traces_partition(_traces(fov, seed=10 * fov + ch), dataset, fov, ch)
    ours = read_traces_parquet(dataset)
    key = ["fov", "channel", "cell", "frame"]
    ours = ours.sort_values(key, ignore_index=True)

    by_pandas = pd.read_parquet(dataset)
    by_pandas = by_pandas.astype({"fov": np.int64, "channel": np.int64})[list(ours.columns)]
    pd.testing.assert_frame_equal(by_pandas.sort_values(key, ignore_index=True), ours)

    table = pads.dataset(dataset, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(ours) == 4 * 12
    by_arrow = table.to_pandas().astype({"fov": np.int64, "channel": np.int64})[list(ours.columns)]
    pd.testing.assert_frame_equal(by_arrow.sort_values(key, ignore_index=True), ours)


def test_csv_and_parquet_hold_the_same_rows(tmp_path: Path) -> None:
    df = _traces(7, n_cells=20, n_frames=30, seed=4)
    csv = read_traces_csv(write_traces_csv(df, traces_csv_path(tmp_path, "exp", 7, 1)))
    write_traces_partition(df, tmp_path / "traces.parquet", 7, 1)
    pq_rows = read_traces_parquet(tmp_path / "traces.parquet").drop(columns=["channel"])

    assert list(csv.columns) == list(pq_rows.columns)
    for col in ("fov", "cell", "frame", "good"):
        np.testing.assert_array_equal(csv[col], pq_rows[col])
    for col in ("time", "position_x", "position_y", "intensity_total", "area"):
        # Same numbers to the 6 decimals the CSV keeps.
        np.testing.assert_allclose(csv[col], pq_rows[col], atol=5e-7 + 1e-9, rtol=0)
    # Parquet keeps the float32 sum exactly (widened), the CSV its 6-decimal rendering.
    np.testing.assert_array_equal(pq_rows["intensity_total"], df["intensity_total"].astype(float))
