"""PyAMA's analysis CSV: one sample's traces of one feature, read and written side by side.

Wide format (PyAMA as of October 2025, the default)::

    # Time units: min
    time,fov_000_cell_1,fov_000_cell_2,fov_003_cell_1
    0.000000,1510.000000,980.000000,
    10.000000,1622.000000,1010.000000,2040.000000

An optional first line names the unit of the ``time`` column; then one column per cell named
``fov_XXX_cell_<id>`` (3-digit FOV, cell id as is), rows sorted by time, floats ``%.6f``, an
empty field where a cell has no value at that time.

Long format (later PyAMA releases, an option): the same header line, then columns
``time, fov, cell, value``, one observation per row.

Reading converts time to **hours**, which is what the fitting models expect, by the factor the
header names (:data:`HOURS_PER_UNIT`: s/sec/secs/second/seconds, m/min/mins/minute/minutes,
h/hr/hrs/hour/hours, any case). As in PyAMA's reader a file without the header is taken to be
in hours already. Unlike PyAMA, which silently leaves the time of an unknown unit unconverted,
an unknown unit is an error: fitting minutes as hours gives rates 60 times off.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pyama_lib.core.errors import ParamsError, ResultsFileError
from pyama_lib.io.atomic import atomic_target
from pyama_lib.io.wide_csv import FLOAT_FORMAT, TIME_COLUMN, read_wide_body, write_wide_csv

LONG_COLUMNS: tuple[str, ...] = ("time", "fov", "cell", "value")

_SECOND, _MINUTE, _HOUR = 1 / 3600, 1 / 60, 1.0
HOURS_PER_UNIT: dict[str, float] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), _SECOND),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), _MINUTE),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), _HOUR),
}
"""Hours in one unit, keyed by the lower-case spellings accepted in ``# Time units:``."""

_HEADER = re.compile(r"^#\s*time\s+units?\s*:\s*(?P<unit>.*?)\s*$", re.IGNORECASE)
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
_CELL_COLUMN = re.compile(r"^fov_(?P<fov>\d+)_cell_(?P<cell>-?\d+)$")


# -- names and units --------------------------------------------------------------------------


def cell_column(fov: int, cell: int) -> str:
    """Column name of one cell in the wide format.

    Examples
    --------
    >>> cell_column(3, 12)
    'fov_003_cell_12'
    """
    return f"fov_{int(fov):03d}_cell_{int(cell)}"


def parse_cell_column(name: str) -> tuple[int, int]:
    """``(fov, cell)`` from a wide-format column name.

    Examples
    --------
    >>> parse_cell_column("fov_003_cell_12")
    (3, 12)
    """
    match = _CELL_COLUMN.match(str(name))
    if not match:
        raise ValueError(f"{name!r} is not a cell column like 'fov_000_cell_1'")
    return int(match["fov"]), int(match["cell"])


def hours_per_unit(unit: str) -> float:
    """Hours in one ``unit`` (any accepted spelling, any case).

    Examples
    --------
    >>> hours_per_unit("Minutes")
    0.016666666666666666
    >>> hours_per_unit("h")
    1.0
    """
    try:
        return HOURS_PER_UNIT[str(unit).strip().lower()]
    except KeyError:
        raise ParamsError(
            f"unknown time unit {unit!r}; use one of s, sec, seconds, min, minutes, h, hours"
        ) from None


def read_time_units(path: str | Path) -> str | None:
    """The unit named by the file's ``# Time units:`` first line, as written; None if absent."""
    return _read_header(Path(path))[0]


# -- wide format ------------------------------------------------------------------------------


def write_analysis_csv(
    table: pd.DataFrame, path: str | Path, time_units: str | None = "min"
) -> Path:
    """Write one sample × feature table in PyAMA's wide format, atomically.

    Parameters
    ----------
    table
        A ``time`` column (or, as PyAMA's own frames have it, the index) and one column per
        cell, conventionally named by :func:`cell_column`. Rows are written sorted by time.
    path
        The ``.csv`` file to write.
    time_units
        Unit of ``time``, written as the ``# Time units:`` first line; None writes no line
        (readers then take the time as hours).

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> table = pd.DataFrame({"time": [10.0, 0.0], "fov_000_cell_1": [2.0, 1.0]})
    >>> csv = write_analysis_csv(table, folder / "a_area_ch_1.csv")
    >>> print(csv.read_text(), end="")
    # Time units: min
    time,fov_000_cell_1
    0.000000,1.000000
    10.000000,2.000000
    >>> read_analysis_csv(csv)["fov_000_cell_1"].to_dict()
    {0.0: 1.0, 0.16666666666666666: 2.0}
    """
    if time_units is not None:
        hours_per_unit(time_units)  # refuse a unit the reader would not understand
    path = Path(path)
    wide = _with_time_column(table)
    wide = wide.sort_values(TIME_COLUMN, kind="stable")
    wide.columns = [str(c) for c in wide.columns]
    if all(dtype == np.float64 for dtype in wide.dtypes) and not any(
        _NEEDS_QUOTES.search(c) for c in wide.columns
    ):
        matrix = wide.to_numpy(dtype=np.float64)
        return write_wide_csv(path, matrix[:, 0], list(wide.columns[1:]), matrix[:, 1:], time_units)
    _write_csv(wide, path, time_units)
    return path


def read_analysis_csv(path: str | Path) -> pd.DataFrame:
    """Read an analysis CSV (wide, or PyAMA's later long format) with time in hours.

    Returns
    -------
    pandas.DataFrame
        Index ``time`` (float64, **hours**, as the ``# Time units`` header says; no header
        means hours already), one float64 column per cell, in file order: column position is
        PyAMA's 0-based ``cell_id``. A long-format file is pivoted to this shape, its columns
        named by :func:`cell_column` and ordered by FOV, then cell. ``attrs["time_units"]``
        holds the header's unit (None without one).

    Raises
    ------
    ResultsFileError
        If the file is missing, unparsable, names an unknown time unit or holds non-numbers.
    """
    path = Path(path)
    unit, skip = _read_header(path)
    plain = read_wide_body(path, skip)
    if plain is not None and not set(LONG_COLUMNS) <= set(plain[0]):
        names, values = plain
        # PyAMA takes the first column as the time whatever its name; do the same.
        wide = pd.DataFrame(values[:, 1:], index=values[:, 0], columns=names[1:], copy=False)
    else:  # anything else goes through pandas, which says what is wrong with a bad file
        raw = _read_body(path, skip)
        if set(LONG_COLUMNS) <= set(raw.columns):
            wide = long_to_wide(_numeric_long(raw, path))
        else:
            wide = _numeric_wide(raw, path)
    wide.index = wide.index * _file_factor(unit, path)
    wide.index.name = TIME_COLUMN
    wide.attrs["time_units"] = unit
    return wide


# -- long format ------------------------------------------------------------------------------


def write_long_csv(table: pd.DataFrame, path: str | Path, time_units: str | None = "min") -> Path:
    """Write the long format of later PyAMA releases: ``time, fov, cell, value``, atomically.

    Rows are sorted by time, then FOV, then cell; ``time_units`` as in
    :func:`write_analysis_csv`. A wide table can be turned into ``table`` with
    :func:`wide_to_long`.

    Examples
    --------
    >>> import tempfile
    >>> csv = Path(tempfile.mkdtemp()) / "a_area_ch_1.csv"
    >>> rows = pd.DataFrame({"time": [10.0, 0.0], "fov": [0, 0], "cell": [1, 1], "value": [2, 1]})
    >>> print(write_long_csv(rows, csv, time_units="h").read_text(), end="")
    # Time units: h
    time,fov,cell,value
    0.000000,0,1,1.000000
    10.000000,0,1,2.000000
    """
    if time_units is not None:
        hours_per_unit(time_units)
    missing = [c for c in LONG_COLUMNS if c not in table.columns]
    if missing:
        raise ParamsError(f"long table lacks column(s) {missing}; it needs {list(LONG_COLUMNS)}")
    long = pd.DataFrame(
        {
            "time": table["time"].to_numpy(dtype=np.float64),
            "fov": table["fov"].to_numpy(dtype=np.int64),
            "cell": table["cell"].to_numpy(dtype=np.int64),
            "value": table["value"].to_numpy(dtype=np.float64),
        }
    ).sort_values(["time", "fov", "cell"], kind="stable")
    _write_csv(long, Path(path), time_units)
    return Path(path)


def read_long_csv(path: str | Path) -> pd.DataFrame:
    """Read a long-format file as a table ``time`` (hours), ``fov``, ``cell``, ``value``.

    Raises
    ------
    ResultsFileError
        As :func:`read_analysis_csv`, and if a long-format column is missing.
    """
    path = Path(path)
    unit, skip = _read_header(path)
    raw = _read_body(path, skip)
    missing = [c for c in LONG_COLUMNS if c not in raw.columns]
    if missing:
        raise ResultsFileError(path, f"not a long-format analysis CSV: no column(s) {missing}")
    long = _numeric_long(raw, path)
    long["time"] = long["time"] * _file_factor(unit, path)
    long.attrs["time_units"] = unit
    return long


def wide_to_long(table: pd.DataFrame) -> pd.DataFrame:
    """Wide table (cell columns named by :func:`cell_column`) → ``time, fov, cell, value``.

    Empty cells (NaN) are dropped.

    Examples
    --------
    >>> wide = pd.DataFrame({"time": [0.0, 1.0], "fov_002_cell_5": [3.0, np.nan]})
    >>> wide_to_long(wide).to_dict("records")
    [{'time': 0.0, 'fov': 2, 'cell': 5, 'value': 3.0}]
    """
    wide = _with_time_column(table)
    cells = [c for c in wide.columns if c != TIME_COLUMN]
    ids = [parse_cell_column(c) for c in cells]
    parts = []
    for name, (fov, cell) in zip(cells, ids, strict=True):
        values = wide[name].to_numpy(dtype=np.float64)
        keep = ~np.isnan(values)
        parts.append(
            pd.DataFrame(
                {
                    "time": wide[TIME_COLUMN].to_numpy(dtype=np.float64)[keep],
                    "fov": np.int64(fov),
                    "cell": np.int64(cell),
                    "value": values[keep],
                }
            )
        )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=_long_dtype(c)) for c in LONG_COLUMNS})
    long = pd.concat(parts, ignore_index=True)
    return long.sort_values(["time", "fov", "cell"], kind="stable", ignore_index=True)


def long_to_wide(long: pd.DataFrame) -> pd.DataFrame:
    """``time, fov, cell, value`` → a time-indexed wide table, columns ordered by FOV, cell.

    One column per ``(fov, cell)`` present; rows sorted by time.

    Examples
    --------
    >>> rows = pd.DataFrame({"time": [0.0, 0.0], "fov": [1, 0], "cell": [2, 7], "value": [5, 6]})
    >>> long_to_wide(rows).columns.tolist()
    ['fov_000_cell_7', 'fov_001_cell_2']
    """
    if long.duplicated(["time", "fov", "cell"]).any():
        raise ParamsError("long table has two values for one (time, fov, cell)")
    if long.empty:
        return pd.DataFrame(index=pd.Index([], dtype=np.float64, name=TIME_COLUMN))
    wide = long.pivot(index="time", columns=["fov", "cell"], values="value").sort_index()
    wide = wide.reindex(columns=sorted(wide.columns))
    wide.columns = [cell_column(f, c) for f, c in wide.columns]
    wide.index.name = TIME_COLUMN
    return wide.astype(np.float64)


# -- helpers ----------------------------------------------------------------------------------


def _with_time_column(table: pd.DataFrame) -> pd.DataFrame:
    if TIME_COLUMN in table.columns:
        out = table.copy()
    elif table.index.name in (TIME_COLUMN, None):
        out = table.reset_index(names=TIME_COLUMN)
    else:
        raise ParamsError(f"table has no 'time' column or index (index is {table.index.name!r})")
    rest = [c for c in out.columns if c != TIME_COLUMN]
    return out[[TIME_COLUMN, *rest]]


def _write_csv(table: pd.DataFrame, path: Path, time_units: str | None) -> None:
    try:
        with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            if time_units is not None:
                fh.write(f"# Time units: {time_units}\n")
            table.to_csv(fh, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    except OSError as exc:
        raise ResultsFileError(
            path, f"cannot write the analysis CSV ({exc}); check the folder is writable"
        ) from exc


def _read_header(path: Path) -> tuple[str | None, int]:
    """The header's unit and how many leading ``#`` lines to skip."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = []
            for line in fh:
                if not line.startswith("#"):
                    break
                lines.append(line.rstrip("\r\n"))
    except FileNotFoundError:
        raise ResultsFileError(path, "analysis CSV not found; run the merge first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(path, f"cannot read the analysis CSV ({exc})") from exc
    unit = None
    for line in lines:
        match = _HEADER.match(line)
        if match:
            unit = match["unit"]
            break
    return unit, len(lines)


def _read_body(path: Path, skip: int) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, skiprows=skip, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResultsFileError(path, f"not a readable analysis CSV ({exc})") from exc
    if raw.columns.empty:
        raise ResultsFileError(path, "analysis CSV has no columns")
    return raw


def _file_factor(unit: str | None, path: Path) -> float:
    if unit is None:
        return 1.0  # PyAMA's reader: no header, the time is in hours
    try:
        return hours_per_unit(unit)
    except ParamsError as exc:
        raise ResultsFileError(path, f"'# Time units' header: {exc}") from None


def _numeric_wide(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    # PyAMA takes the first column as the time whatever its name; do the same.
    try:
        numeric = raw.apply(lambda col: pd.to_numeric(col, errors="raise")).astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ResultsFileError(path, f"analysis CSV holds a non-number: {exc}") from exc
    wide = numeric.set_index(numeric.columns[0])
    wide.columns = [str(c) for c in wide.columns]
    return wide


def _numeric_long(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    try:
        out = pd.DataFrame(
            {
                "time": pd.to_numeric(raw["time"], errors="raise").astype(np.float64),
                "fov": pd.to_numeric(raw["fov"], errors="raise").astype(np.int64),
                "cell": pd.to_numeric(raw["cell"], errors="raise").astype(np.int64),
                "value": pd.to_numeric(raw["value"], errors="raise").astype(np.float64),
            }
        )
    except (TypeError, ValueError, pd.errors.IntCastingNaNError) as exc:
        raise ResultsFileError(path, f"long-format analysis CSV holds a bad value: {exc}") from exc
    if out.duplicated(["time", "fov", "cell"]).any():
        raise ResultsFileError(path, "long-format analysis CSV repeats a (time, fov, cell)")
    return out


def _long_dtype(column: str) -> type:
    return np.int64 if column in ("fov", "cell") else np.float64
