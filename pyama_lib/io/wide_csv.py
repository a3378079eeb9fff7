"""PyAMA's wide analysis CSV as arrays: written with pandas' bytes and read with its values,
many times faster than pandas.

An analysis CSV of a large sample has tens of thousands of columns; pandas formats such a
table value by value in Python and parses it column by column (minutes and a gigabyte for
100 000 cells). :func:`write_wide_csv` formats a whole row in one call and
:func:`read_wide_body` parses one in one call. :mod:`pyama_lib.io.analysis_csv` is the
format's reader and writer; it uses these where they apply.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pyama_lib.core.errors import ResultsFileError
from pyama_lib.io.atomic import atomic_target

TIME_COLUMN = "time"
FLOAT_FORMAT = "%.6f"  # as PyAMA writes every float
# An empty field: after a separator or at the line's start, before a separator or its end.
_EMPTY_FIELD = re.compile(r"(?:^|(?<=,))(?=,|\r?\n|$)")


def write_wide_csv(
    path: str | Path,
    times: np.ndarray,
    names: Sequence[str],
    matrix: np.ndarray,
    time_units: str | None = "min",
) -> Path:
    """Write a wide table given as arrays, atomically, as pandas' ``to_csv`` would write it
    with ``float_format="%.6f"`` (byte for byte) but without building the table.

    Parameters
    ----------
    path
        The ``.csv`` file to write.
    times
        (n_t,) float64 times, written in the order given (sort them first).
    names
        The cell columns' names (plain: no commas, quotes or line breaks).
    matrix
        (n_t, len(names)) float64 values; NaN is written as an empty field.
    time_units
        Unit of ``times``, written as the ``# Time units:`` first line; None writes none.

    Examples
    --------
    >>> import tempfile
    >>> csv = Path(tempfile.mkdtemp()) / "a_area_ch_1.csv"
    >>> values = np.array([[1.0], [np.nan]])
    >>> _ = write_wide_csv(csv, np.array([0.0, 10.0]), ["fov_000_cell_1"], values)
    >>> print(csv.read_text(), end="")
    # Time units: min
    time,fov_000_cell_1
    0.000000,1.000000
    10.000000,
    """
    path = Path(path)
    matrix = np.asarray(matrix, dtype=np.float64).reshape(len(times), len(names))
    # One %-format call per row formats every value as pandas does ("%.6f" % value); the
    # only letters such a row can hold are those of "nan" (an empty field) and "inf".
    template = ",".join([FLOAT_FORMAT] * (len(names) + 1)) + "\n"
    try:
        with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            if time_units is not None:
                fh.write(f"# Time units: {time_units}\n")
            fh.write(",".join([TIME_COLUMN, *names]) + "\n")
            for t, row in zip(np.asarray(times, dtype=np.float64).tolist(), matrix, strict=True):
                fh.write((template % (t, *row.tolist())).replace("nan", ""))
    except OSError as exc:
        raise ResultsFileError(
            path, f"cannot write the analysis CSV ({exc}); check the folder is writable"
        ) from exc
    return path


def read_wide_body(path: Path, skip: int) -> tuple[list[str], np.ndarray] | None:
    r"""The column names and values (float64, NaN for an empty field) of a plain wide CSV
    after its ``skip`` comment lines; None when the file is not plain (quoted or repeated
    names, a value that is no number, a row of another length), for pandas to read and
    report on.

    Examples
    --------
    >>> import tempfile
    >>> csv = Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = csv.write_text("# Time units: min\ntime,fov_000_cell_1\n0.0,\n10,2.5\n")
    >>> names, values = read_wide_body(csv, 1)
    >>> names, values.tolist()
    (['time', 'fov_000_cell_1'], [[0.0, nan], [10.0, 2.5]])
    >>> _ = csv.write_text("time,a\n0,x\n")
    >>> read_wide_body(csv, 0) is None
    True
    """
    try:
        return _parse(path, skip)
    except (OSError, UnicodeDecodeError):
        return None


def _parse(path: Path, skip: int) -> tuple[list[str], np.ndarray] | None:
    # Rows are counted first so that the values go straight into one array: a list of rows
    # stacked at the end would hold the table twice.
    with open(path, "rb") as fh:
        n_rows = sum(1 for line in fh if line.strip()) - skip - 1
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for _ in range(skip):
            fh.readline()
        header = fh.readline().rstrip("\r\n")
        names = header.split(",")
        if not header or len(set(names)) < len(names) or any('"' in n for n in names):
            return None
        values = np.empty((max(n_rows, 0), len(names)), dtype=np.float64)
        i = 0
        for line in fh:
            if not line.strip():
                continue  # pandas skips blank lines too
            try:
                with warnings.catch_warnings():
                    # numpy warns (later: raises) where parsing stops at something else
                    warnings.simplefilter("error", DeprecationWarning)
                    row = np.fromstring(_EMPTY_FIELD.sub("nan", line), dtype=np.float64, sep=",")
            except (DeprecationWarning, ValueError):
                return None
            if row.size != len(names) or i >= len(values):
                return None
            values[i] = row
            i += 1
    return (names, values) if i == len(values) else None
