"""Analysis CSV: PyAMA's wide format and the later long format, written and read back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pyama_lib.core.errors import ParamsError, ResultsFileError
from pyama_lib.io.analysis_csv import (
    cell_column,
    long_to_wide,
    parse_cell_column,
    read_analysis_csv,
    read_long_csv,
    read_time_units,
    wide_to_long,
    write_analysis_csv,
    write_long_csv,
)

TIMES = [30.0, 0.0, 10.0, 20.0]  # deliberately unsorted


def _wide():
    return pd.DataFrame(
        {
            "time": TIMES,
            "fov_000_cell_1": [4.0, 1.0, 2.0, 3.0],
            "fov_000_cell_7": [40.5, 10.25, np.nan, 30.125],
            "fov_012_cell_3": [np.nan, 0.000001, 2e6, -5.0],
        }
    )


def test_written_file_is_pyamas_wide_format(tmp_path):
    path = write_analysis_csv(_wide(), tmp_path / "ctrl_area_ch_1.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "# Time units: min"
    assert lines[1] == "time,fov_000_cell_1,fov_000_cell_7,fov_012_cell_3"
    assert lines[2] == "0.000000,1.000000,10.250000,0.000001"
    assert lines[3] == "10.000000,2.000000,,2000000.000000"  # NaN is an empty field
    assert [float(line.split(",")[0]) for line in lines[1 + 1 :]] == sorted(TIMES)
    assert [p.name for p in tmp_path.iterdir()] == ["ctrl_area_ch_1.csv"]  # no temp left


@pytest.mark.parametrize(
    ("unit", "hours"),
    [
        ("min", 1 / 60),
        ("minutes", 1 / 60),
        ("minute", 1 / 60),
        ("m", 1 / 60),
        ("MIN", 1 / 60),
        ("Minutes", 1 / 60),
        ("s", 1 / 3600),
        ("sec", 1 / 3600),
        ("seconds", 1 / 3600),
        ("Second", 1 / 3600),
        ("S", 1 / 3600),
        ("h", 1.0),
        ("hr", 1.0),
        ("hrs", 1.0),
        ("hours", 1.0),
        ("Hour", 1.0),
        ("H", 1.0),
    ],
)
def test_round_trip_converts_time_to_hours_as_the_header_says(tmp_path, unit, hours):
    path = write_analysis_csv(_wide(), tmp_path / "a.csv", time_units=unit)
    assert read_time_units(path) == unit
    back = read_analysis_csv(path)
    expected = _wide().sort_values("time").set_index("time")
    np.testing.assert_allclose(back.index.to_numpy(), expected.index.to_numpy() * hours)
    assert back.index.name == "time" and back.attrs["time_units"] == unit
    assert back.columns.tolist() == expected.columns.tolist()  # position = PyAMA's cell_id
    np.testing.assert_allclose(back.to_numpy(), expected.to_numpy(), rtol=0, atol=5e-7)
    assert all(dtype == np.float64 for dtype in back.dtypes)


def test_a_file_without_header_is_in_hours_as_pyama_reads_it(tmp_path):
    path = write_analysis_csv(_wide(), tmp_path / "a.csv", time_units=None)
    assert not path.read_text().startswith("#")
    back = read_analysis_csv(path)
    assert back.index.tolist() == sorted(TIMES) and back.attrs["time_units"] is None


def test_header_written_by_hand_is_understood(tmp_path):
    # PyAMA writes exactly "# Time units: min"; tolerate spacing, case, CRLF and a BOM.
    path = tmp_path / "a.csv"
    path.write_bytes(b"\xef\xbb\xbf#time units:  Seconds \r\ntime,0,1\r\n3600,1,2\r\n7200,3,\r\n")
    back = read_analysis_csv(path)
    assert back.index.tolist() == [1.0, 2.0]
    assert back.columns.tolist() == ["0", "1"]  # PyAMA's older 0, 1, 2 ... columns
    assert np.isnan(back.loc[2.0, "1"])


def test_unknown_time_unit_is_refused_by_writer_and_reader(tmp_path):
    with pytest.raises(ParamsError, match="unknown time unit 'days'"):
        write_analysis_csv(_wide(), tmp_path / "a.csv", time_units="days")
    assert not any(tmp_path.iterdir())
    path = tmp_path / "b.csv"
    path.write_text("# Time units: fortnights\ntime,fov_000_cell_1\n0,1\n")
    with pytest.raises(ResultsFileError, match=r"b.csv: '# Time units' header: unknown time unit"):
        read_analysis_csv(path)


def test_time_index_is_accepted_as_pyama_frames_have_it(tmp_path):
    indexed = _wide().set_index("time")
    path = write_analysis_csv(indexed, tmp_path / "a.csv", time_units="h")
    pd.testing.assert_frame_equal(
        read_analysis_csv(path), indexed.sort_index(), check_exact=False, atol=5e-7
    )


def test_long_format_round_trip(tmp_path):
    long = wide_to_long(_wide())
    assert long.columns.tolist() == ["time", "fov", "cell", "value"]
    assert len(long) == 10  # the two NaN are not observations
    path = write_long_csv(long.sample(frac=1, random_state=0), tmp_path / "l.csv")
    lines = path.read_text().splitlines()
    assert lines[:3] == ["# Time units: min", "time,fov,cell,value", "0.000000,0,1,1.000000"]
    back = read_long_csv(path)
    np.testing.assert_allclose(back["time"], long["time"] / 60)
    assert back[["fov", "cell"]].to_numpy().tolist() == long[["fov", "cell"]].to_numpy().tolist()
    assert back["fov"].dtype == np.int64
    # The wide reader takes the long format too (as later PyAMA's reader does).
    wide = read_analysis_csv(path)
    expected = _wide().sort_values("time").set_index("time")
    expected.index = expected.index / 60
    pd.testing.assert_frame_equal(wide, expected, check_exact=False, atol=5e-7, check_names=False)


def test_long_and_wide_tables_convert_both_ways():
    wide = _wide().sort_values("time").set_index("time")
    pd.testing.assert_frame_equal(long_to_wide(wide_to_long(wide)), wide, check_names=False)
    with pytest.raises(ParamsError, match="two values"):
        long_to_wide(pd.DataFrame({"time": [0, 0], "fov": [0, 0], "cell": [1, 1], "value": [1, 2]}))
    with pytest.raises(ParamsError, match="lacks column"):
        write_long_csv(pd.DataFrame({"time": [0.0]}), "unused.csv")


def test_cell_column_names():
    assert cell_column(0, 1) == "fov_000_cell_1"
    assert cell_column(1234, 5) == "fov_1234_cell_5"
    assert parse_cell_column("fov_1234_cell_5") == (1234, 5)
    with pytest.raises(ValueError, match="not a cell column"):
        parse_cell_column("cell_5")


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ResultsFileError, match=r"missing.csv: analysis CSV not found"):
        read_analysis_csv(tmp_path / "missing.csv")
    text = tmp_path / "text.csv"
    text.write_text("# Time units: min\ntime,fov_000_cell_1\n0,abc\n")
    with pytest.raises(ResultsFileError, match=r"text.csv: analysis CSV holds a non-number"):
        read_analysis_csv(text)
    empty = tmp_path / "empty.csv"
    empty.write_text("# Time units: min\n")
    with pytest.raises(ResultsFileError, match=r"empty.csv: not a readable analysis CSV"):
        read_analysis_csv(empty)
    wide = write_analysis_csv(_wide(), tmp_path / "wide.csv")
    with pytest.raises(ResultsFileError, match=r"wide.csv: not a long-format analysis CSV"):
        read_long_csv(wide)


def test_a_wide_table_written_from_arrays_has_pandas_bytes(tmp_path):
    from pyama_lib.io.wide_csv import write_wide_csv

    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 1e4, (9, 40)) * rng.choice([1e-9, 1.0, 1e9], (9, 40))
    matrix[rng.random((9, 40)) < 0.2] = np.nan
    matrix[0, :4] = [-0.0, np.inf, -np.inf, 5e-7]  # "-0.000000", "inf", "-inf", rounding
    times = np.sort(rng.uniform(0, 1e3, 9))
    names = [f"fov_{f:03d}_cell_{c}" for f in (0, 12) for c in range(20)]
    table = pd.DataFrame(matrix, columns=names)
    table.insert(0, "time", times)
    expected = table.to_csv(index=False, float_format="%.6f", lineterminator="\n")
    written = write_wide_csv(tmp_path / "a.csv", times, names, matrix, time_units="h")
    assert written.read_text() == "# Time units: h\n" + expected
    # and write_analysis_csv takes the same way for such a table
    assert write_analysis_csv(table, tmp_path / "b.csv", "h").read_text() == written.read_text()


@pytest.mark.parametrize(
    "body",
    [
        "time,fov_000_cell_1,fov_000_cell_2\r\n0,,1.5\r\n10,2,\r\n",  # Windows, empty at ends
        "\ufefftime,c1,c2\n0,1e3,-inf\n\n10,nan,0x\n",  # BOM, blank line, then a non-number
        "time,c1,c1\n0,1,2\n",  # a repeated name: pandas renames it
        'time,"c,1"\n0,1\n',  # a quoted name
        "time,c1\n0,1,2\n",  # a row longer than the header
    ],
)
def test_a_wide_file_reads_as_pandas_reads_it(tmp_path, body):
    csv = tmp_path / "a.csv"
    csv.write_bytes(body.encode())
    try:
        raw = pd.read_csv(csv, encoding="utf-8-sig")
        numeric = raw.apply(lambda col: pd.to_numeric(col, errors="raise")).astype(np.float64)
    except (ValueError, pd.errors.ParserError):
        with pytest.raises(ResultsFileError, match="a.csv"):
            read_analysis_csv(csv)
        return
    expected = numeric.set_index(numeric.columns[0])
    expected.columns = [str(c) for c in expected.columns]
    got = read_analysis_csv(csv)
    pd.testing.assert_frame_equal(got, expected, check_names=False)
