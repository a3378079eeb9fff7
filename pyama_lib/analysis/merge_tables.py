"""The merge's tables, built one FOV at a time: good rows as arrays, a feature's wide matrix,
and the tidy Parquet table written in batches.

A sample's traces are never one pandas table: each FOV's good rows are kept as a few numpy
arrays (:class:`FovRows`), each feature's wide table is one float64 matrix filled from them,
and the tidy rows go to ``merged.parquet`` as they are made. So the memory of a merge is about
one sample's good rows plus one feature's matrix, whatever the number of samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pyama_lib.core.errors import OutputDirError, ResultsFileError
from pyama_lib.io.analysis_csv import cell_column
from pyama_lib.io.atomic import atomic_target
from pyama_lib.io.marks import read_marked_traces

PARQUET_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.string()),
        pa.field("fov", pa.int64()),
        pa.field("cell", pa.int64()),
        pa.field("channel", pa.int64()),
        pa.field("feature", pa.string()),
        pa.field("time", pa.float64()),
        pa.field("value", pa.float64()),
    ],
    metadata={"pyama.time_units": "min"},
)
#: Traces CSVs read at once.
READERS = min(4, os.cpu_count() or 1)
#: Rows per Parquet row group (pyarrow's own default), so readers get the usual layout.
ROW_GROUP_ROWS = 1 << 20


@dataclass(frozen=True)
class FovRows:
    """One FOV's good rows, ordered by cell, then time.

    Attributes
    ----------
    fov
        The FOV, as the results file names it.
    cell, time
        (n,) int64 cell ids and float64 times (the traces' unit).
    values
        (n, n_features) float64, one column per merged feature.
    marked_bad
        Cells of the traces without a good row: those a person marked bad.
    """

    fov: int
    cell: np.ndarray
    time: np.ndarray
    values: np.ndarray
    marked_bad: frozenset[int] = frozenset()

    @property
    def cells(self) -> np.ndarray:
        """The FOV's distinct good cells, ascending."""
        return np.unique(self.cell)


def read_good_rows(fov: int, path: Path, features: Sequence[str]) -> tuple[FovRows, list[str]]:
    """The good rows of one FOV's traces CSV (a person's ``_inspected.csv`` marks applied),
    and what :func:`~pyama_lib.io.marks.read_marked_traces` says about stale marks.

    Raises
    ------
    ResultsFileError
        The file is missing or unreadable, or a cell has two rows at one time.
    """
    marked = read_marked_traces(path)
    table = marked.table
    if table.duplicated(["cell", "time"]).any():
        raise ResultsFileError(marked.source, "a cell has two rows at one time; re-run extraction")
    good = table["good"].to_numpy(dtype=bool)
    cell = table["cell"].to_numpy(dtype=np.int64)[good]
    time = table["time"].to_numpy(dtype=np.float64)[good]
    values = table[list(features)].to_numpy(dtype=np.float64)[good]
    order = np.lexsort((time, cell))
    bad = set(table["cell"].unique().tolist()) - set(np.unique(cell).tolist())
    rows = FovRows(
        int(fov),
        cell[order],
        time[order],
        values[order].reshape(len(order), -1),
        frozenset(int(c) for c in bad),
    )
    return rows, marked.warnings


def read_sample_rows(
    fov_files: Mapping[int, Path], features: Sequence[str], warnings: list[str]
) -> list[FovRows]:
    """:func:`read_good_rows` of every FOV, ordered by FOV; new warnings added to ``warnings``.

    Files are read :data:`READERS` at a time: the CSV parser and numpy leave the GIL for
    most of the work.
    """
    ordered = sorted(fov_files.items())
    with ThreadPoolExecutor(READERS) as pool:
        read = list(pool.map(lambda item: read_good_rows(*item, features), ordered))
    for _, said in read:
        warnings.extend(w for w in said if w not in warnings)
    return [rows for rows, _ in read]


def wide_matrix(blocks: Sequence[FovRows], k: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Feature ``k`` of ``blocks`` as PyAMA's wide table: (times, column names, matrix).

    Rows are the union of the blocks' times, ascending; one column per (FOV, cell) with a
    good row, ordered by FOV then cell (``blocks`` come ordered by FOV); NaN where a cell has
    no value at a time.

    Examples
    --------
    >>> a = FovRows(0, np.array([2, 2]), np.array([0.0, 10.0]), np.array([[1.0], [2.0]]))
    >>> b = FovRows(3, np.array([1]), np.array([10.0]), np.array([[5.0]]))
    >>> times, names, matrix = wide_matrix([a, b], 0)
    >>> times.tolist(), names
    ([0.0, 10.0], ['fov_000_cell_2', 'fov_003_cell_1'])
    >>> matrix.tolist()
    [[1.0, nan], [2.0, 5.0]]
    """
    times = np.unique(np.concatenate([b.time for b in blocks])) if blocks else np.empty(0)
    cells = [b.cells for b in blocks]
    names = [cell_column(b.fov, c) for b, cs in zip(blocks, cells, strict=True) for c in cs]
    matrix = np.full((times.size, len(names)), np.nan, dtype=np.float64)
    offset = 0
    for block, block_cells in zip(blocks, cells, strict=True):
        rows = np.searchsorted(times, block.time)
        columns = offset + np.searchsorted(block_cells, block.cell)
        matrix[rows, columns] = block.values[:, k]
        offset += block_cells.size
    return times, names, matrix


class TidyRows:
    """The open ``merged.parquet``: :meth:`add` one FOV's rows of one feature at a time; rows
    are buffered into row groups of :data:`ROW_GROUP_ROWS`."""

    def __init__(self, writer: pq.ParquetWriter, path: Path) -> None:
        self._writer = writer
        self._path = path
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def add(
        self, sample: str, channel: int, feature: str, block: FovRows, k: int, to_minutes: float
    ) -> None:
        """The tidy rows of feature ``k`` of one FOV's good rows (time made minutes)."""
        n = block.cell.size
        if not n:
            return
        columns = [
            pa.repeat(pa.scalar(sample, pa.string()), n),
            pa.array(np.full(n, block.fov, dtype=np.int64)),
            pa.array(block.cell),
            pa.array(np.full(n, channel, dtype=np.int64)),
            pa.repeat(pa.scalar(feature, pa.string()), n),
            pa.array(block.time * to_minutes),
            pa.array(np.ascontiguousarray(block.values[:, k])),
        ]
        self._pending.append(pa.RecordBatch.from_arrays(columns, schema=PARQUET_SCHEMA))
        self._rows += n
        if self._rows >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows."""
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=PARQUET_SCHEMA)
        self._pending, self._rows = [], 0
        try:
            self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        except OSError as exc:
            raise _cannot_write(self._path, exc) from exc


@contextmanager
def tidy_parquet(path: Path) -> Iterator[TidyRows]:
    """``merged.parquet`` (:data:`PARQUET_SCHEMA`) written while the block runs; it appears
    under its name only when the block ends without an error, and holds no rows if none were
    added."""
    with atomic_target(path) as tmp:
        try:
            writer = pq.ParquetWriter(tmp, PARQUET_SCHEMA)
        except OSError as exc:
            raise _cannot_write(path, exc) from exc
        rows = TidyRows(writer, path)
        try:
            yield rows
            rows.flush()
        finally:
            try:
                writer.close()
            except OSError as exc:
                raise _cannot_write(path, exc) from exc


def _cannot_write(path: Path, exc: OSError) -> OutputDirError:
    return OutputDirError(path.parent, f"cannot write {path.name} ({exc})")


def distinct_cells(blocks: Iterable[FovRows]) -> set[tuple[int, int]]:
    """``(fov, cell)`` of every good cell in ``blocks``."""
    return {(b.fov, int(c)) for b in blocks for c in b.cells}


def marked_bad_cells(blocks: Iterable[FovRows]) -> set[tuple[int, int]]:
    """``(fov, cell)`` of every cell in ``blocks`` that has no good row."""
    return {(b.fov, c) for b in blocks for c in b.marked_bad}
