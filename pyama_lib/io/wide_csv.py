"""PyAMA's wide analysis CSV written from arrays: the same bytes as pandas, many times faster.

An analysis CSV of a large sample has tens of thousands of columns; pandas formats such a
table value by value in Python. :func:`write_wide_csv` formats a whole row in one call.
:mod:`pyama_lib.io.analysis_csv` reads and writes the format; this module only writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pyama_lib.core.errors import ResultsFileError
from pyama_lib.io.atomic import atomic_target

TIME_COLUMN = "time"
FLOAT_FORMAT = "%.6f"  # as PyAMA writes every float


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
