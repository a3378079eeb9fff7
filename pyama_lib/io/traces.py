"""Per-cell trace tables: PyAMA-compatible CSV files and one hive-partitioned Parquet dataset.

A trace table is a :class:`pandas.DataFrame` with one row per (cell, frame) and the columns
``fov, cell, frame, time, good, position_x, position_y, intensity_total, area, <extra features>``
(time in minutes). Dtypes are fixed so that files written by different runs concatenate
cleanly: ``fov``/``cell``/``frame`` int64, ``good`` bool, everything else float64. PyAMA turns
every feature into a Python ``float`` before building its table, so ``area`` is a float column
there too, and ``intensity_total`` (a float32 sum) is widened to float64 losslessly.

CSV (one file per FOV and fluorescence channel, as PyAMA writes it)::

    <out>/fov_XXX/<base>_fov_XXX_traces_ch_<c>.csv      floats "%.6f", no index

Parquet (one dataset for the whole run)::

    <out>/traces.parquet/fov=<fov>/channel=<c>/part-0.parquet

``fov`` and ``channel`` live only in the directory names (hive partitioning), so
``pandas.read_parquet``, ``pyarrow.dataset`` and DuckDB all reconstruct them.

Every write is atomic: the data goes to a hidden temporary file beside the target, is fsynced
and then ``os.replace``-d over the final name, so a killed run never leaves a half file that a
re-run would take as done.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pyama_lib.core.errors import InputDataError, ResultsFileError
from pyama_lib.io.atomic import atomic_target

BASE_COLUMNS: tuple[str, ...] = (
    "fov",
    "cell",
    "frame",
    "time",
    "good",
    "position_x",
    "position_y",
)
"""Columns every trace table has, in file order."""

STANDARD_FEATURES: tuple[str, ...] = ("intensity_total", "area")
"""Built-in feature columns; they follow the base columns, before any extra feature."""

INT_COLUMNS: tuple[str, ...] = ("fov", "cell", "frame")
PARTITION_COLUMNS: tuple[str, ...] = ("fov", "channel")
PARQUET_DIR = "traces.parquet"  # the run's dataset, directly under the output folder
PART_FILE = "part-0.parquet"
#: Parquet key-value metadata of a partition: the store array its intensities come from
#: (``fl_corrected_ch_<c>``, or ``fl_ch_<c>`` when no corrected stack was complete).
SOURCE_METADATA_KEY = "pyama.fl_source"

_PARTITION_DIR = re.compile(r"^(fov|channel)=(-?\d+)$")


# -- paths ------------------------------------------------------------------------------------


def traces_csv_path(out_dir: str | Path, base_name: str, fov: int, channel: int) -> Path:
    """Return ``<out>/fov_XXX/<base>_fov_XXX_traces_ch_<c>.csv`` (PyAMA's name, 3-digit FOV)."""
    fov_tag = f"fov_{int(fov):03d}"
    return Path(out_dir) / fov_tag / f"{base_name}_{fov_tag}_traces_ch_{int(channel)}.csv"


def traces_partition_dir(dataset_dir: str | Path, fov: int, channel: int) -> Path:
    """Return the hive partition folder ``<dataset>/fov=<fov>/channel=<c>``."""
    return Path(dataset_dir) / f"fov={int(fov)}" / f"channel={int(channel)}"


def traces_partition_file(dataset_dir: str | Path, fov: int, channel: int) -> Path:
    """Return the single file of the ``fov``/``channel`` partition."""
    return traces_partition_dir(dataset_dir, fov, channel) / PART_FILE


# -- schema -----------------------------------------------------------------------------------


def ordered_columns(columns: Iterable[str]) -> list[str]:
    """Order column names as PyAMA writes them: base, standard features, then extras as given.

    ``channel`` is dropped: it is encoded in the file name (CSV) or the partition (Parquet).
    """
    columns = list(columns)
    present = set(columns)
    head = [c for c in (*BASE_COLUMNS, *STANDARD_FEATURES) if c in present]
    fixed = set(head) | {"channel"}
    return head + [c for c in columns if c not in fixed]


def normalize_traces(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``df`` with the canonical column order and dtypes.

    Raises
    ------
    InputDataError
        If a base column is missing or a value cannot be converted (e.g. a NaN cell id).
    """
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise InputDataError(
            f"trace table lacks column(s) {missing}; it needs at least {list(BASE_COLUMNS)}"
        )
    columns: dict[str, np.ndarray] = {}
    for name in ordered_columns(df.columns):
        values = df[name].to_numpy()
        try:
            if name in INT_COLUMNS:
                columns[name] = _as_int64(values, name)
            elif name == "good":
                columns[name] = _as_bool(values)
            elif values.dtype == np.float64:
                columns[name] = values.copy()
            else:
                numeric = pd.to_numeric(pd.Series(values), errors="raise")
                columns[name] = numeric.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputDataError(f"trace column {name!r} cannot be converted: {exc}") from exc
    # Built at once: inserting column by column costs more than reading the file.
    return pd.DataFrame(columns, index=pd.RangeIndex(len(df)))


def _as_int64(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype == np.int64:
        return values.copy()
    numeric = pd.to_numeric(pd.Series(values), errors="raise")
    if numeric.isna().any():
        raise ValueError(f"{name} has missing values")
    as_float = numeric.to_numpy(dtype=np.float64)
    if not np.array_equal(as_float, np.round(as_float)):
        raise ValueError(f"{name} has non-integer values")
    return numeric.to_numpy().astype(np.int64)


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _as_bool(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.bool_:
        return values
    if np.issubdtype(values.dtype, np.number):
        # A missing mark (a spreadsheet's empty cell reads as NaN) is not "good": NaN would
        # cast to True. Unknown is refused, naming the row.
        missing = np.flatnonzero(pd.isna(values))
        if missing.size:
            raise ValueError(f"good is empty in {_row(int(missing[0]))}; mark it true or false")
        return values.astype(bool)
    # Text from CSVs written by other tools: accept the spellings pandas and Excel produce.
    out = np.empty(len(values), dtype=bool)
    for i, v in enumerate(values):
        text = str(v).strip().lower()
        if text in _TRUE:
            out[i] = True
        elif text in _FALSE:
            out[i] = False
        else:
            raise ValueError(f"good has a value {v!r} in {_row(i)} that is neither true nor false")
    return out


def _row(index: int) -> str:
    return f"data row {index + 1} (line {index + 2} of a CSV)"


def _arrow_schema(df: pd.DataFrame) -> pa.Schema:
    """Explicit schema so an empty partition still carries int64/bool/float64 columns."""
    fields = []
    for name in df.columns:
        if name in INT_COLUMNS:
            fields.append(pa.field(name, pa.int64()))
        elif name == "good":
            fields.append(pa.field(name, pa.bool_()))
        else:
            fields.append(pa.field(name, pa.float64()))
    return pa.schema(fields)


# -- CSV --------------------------------------------------------------------------------------


def write_traces_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write one FOV × channel trace table as PyAMA does: canonical columns, ``%.6f``, no index.

    An empty table writes the header line only. Returns ``path``.
    """
    path = Path(path)
    table = normalize_traces(df)
    try:
        with atomic_target(path) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
    except OSError as exc:
        raise ResultsFileError(
            path, f"cannot write the traces CSV ({exc}); check the folder is writable"
        ) from exc
    return path


def read_traces_csv(path: str | Path) -> pd.DataFrame:
    """Read a traces CSV back with canonical dtypes.

    A person's marks in ``<stem>_inspected.csv`` are read with
    :func:`~pyama_lib.io.marks.read_marked_traces`.

    Raises
    ------
    ResultsFileError
        If the file is missing, unparsable or lacks the trace columns.
    """
    path = Path(path)
    if not path.exists():
        raise ResultsFileError(path, "traces CSV not found; run the extraction stage first")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResultsFileError(
            path, f"not a readable traces CSV ({exc}); delete it and re-run extraction"
        ) from exc
    try:
        return normalize_traces(raw)
    except InputDataError as exc:
        raise ResultsFileError(path, f"not a valid traces CSV: {exc}") from exc


# -- Parquet dataset --------------------------------------------------------------------------


def write_traces_partition(
    df: pd.DataFrame,
    dataset_dir: str | Path,
    fov: int,
    channel: int,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Replace the ``fov``/``channel`` partition of the traces dataset with ``df``.

    Only that partition is touched. The partition holds a single file that is swapped with
    ``os.replace``, so a concurrent reader sees either the old or the new rows, never a mix and
    never a gap (renaming a whole folder cannot replace a non-empty one atomically on POSIX).
    An empty table writes a zero-row file: "extracted, no cells" differs from "not extracted".
    ``metadata`` is stored as the file's key-value metadata (e.g. :data:`SOURCE_METADATA_KEY`,
    the store array the intensities were measured on); read it with
    :func:`read_partition_metadata`.

    Raises
    ------
    InputDataError
        If ``df`` has rows of another FOV or channel, or bad columns.
    """
    table = normalize_traces(df)
    _check_partition_values(df, table, fov, channel)
    body = table.drop(columns=["fov"])
    arrow = pa.Table.from_pandas(body, schema=_arrow_schema(body), preserve_index=False)
    if metadata:
        extra = {k.encode(): str(v).encode() for k, v in metadata.items()}
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **extra})

    final = traces_partition_file(dataset_dir, fov, channel)
    part_dir = final.parent
    try:
        with atomic_target(final) as tmp:
            pq.write_table(arrow, tmp)
        _remove_stale_files(part_dir, keep=final)
    except OSError as exc:
        raise ResultsFileError(
            final, f"cannot write the traces partition ({exc}); check the folder is writable"
        ) from exc
    return final


def read_partition_metadata(dataset_dir: str | Path, fov: int, channel: int) -> dict[str, str]:
    """The key-value metadata PyAMA Flow stored with one partition (pandas' own left out)."""
    schema = pq.read_schema(traces_partition_file(dataset_dir, fov, channel))
    return {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if k != b"pandas"}


def _check_partition_values(raw: pd.DataFrame, table: pd.DataFrame, fov: int, channel: int) -> None:
    bad_fov = sorted(set(table["fov"].unique()) - {int(fov)})
    if bad_fov:
        raise InputDataError(f"traces for partition fov={fov} hold rows of fov {bad_fov}")
    if "channel" in raw.columns:
        bad_ch = sorted(set(pd.to_numeric(raw["channel"]).astype(np.int64)) - {int(channel)})
        if bad_ch:
            raise InputDataError(
                f"traces for partition channel={channel} hold rows of channel {bad_ch}"
            )


def _remove_stale_files(part_dir: Path, keep: Path) -> None:
    """Drop other data files (an older layout or another writer) so the partition is ``keep``."""
    for other in part_dir.glob("*.parquet"):
        if other != keep:
            other.unlink(missing_ok=True)


def list_traces_partitions(dataset_dir: str | Path) -> list[tuple[int, int, Path]]:
    """Return ``(fov, channel, file)`` for every data file of the dataset, sorted."""
    dataset_dir = Path(dataset_dir)
    found: list[tuple[int, int, Path]] = []
    for fov_dir in dataset_dir.iterdir() if dataset_dir.is_dir() else []:
        fov_match = _PARTITION_DIR.match(fov_dir.name)
        if not (fov_dir.is_dir() and fov_match and fov_match.group(1) == "fov"):
            continue
        for ch_dir in fov_dir.iterdir():
            ch_match = _PARTITION_DIR.match(ch_dir.name)
            if not (ch_dir.is_dir() and ch_match and ch_match.group(1) == "channel"):
                continue
            for file in sorted(ch_dir.glob("*.parquet")):
                if not file.name.startswith((".", "_")):
                    found.append((int(fov_match.group(2)), int(ch_match.group(2)), file))
    return sorted(found)


def read_traces_parquet(
    dataset_dir: str | Path,
    fovs: Iterable[int] | None = None,
    channels: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Read the traces dataset (optionally only some FOVs/channels) into one table.

    Columns: ``fov, channel`` (int64), then the trace columns in canonical order; rows ordered by
    FOV, then channel, then as written. Partitions may carry different extra features; missing
    ones are NaN.

    Raises
    ------
    ResultsFileError
        If the dataset folder does not exist or a file cannot be read.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise ResultsFileError(
            dataset_dir, "traces dataset not found; run the extraction stage first"
        )
    fov_set = None if fovs is None else {int(f) for f in fovs}
    ch_set = None if channels is None else {int(c) for c in channels}
    frames: list[tuple[int, pd.DataFrame]] = []
    for fov, channel, file in list_traces_partitions(dataset_dir):
        if (fov_set is not None and fov not in fov_set) or (
            ch_set is not None and channel not in ch_set
        ):
            continue
        try:
            part = pq.read_table(file).to_pandas()
        except (OSError, pa.ArrowException) as exc:
            raise ResultsFileError(
                file, f"unreadable traces partition ({exc}); re-run extraction for this FOV"
            ) from exc
        part.insert(0, "fov", np.int64(fov))
        frames.append((channel, part))
    return _combine_partitions(frames)


def _combine_partitions(frames: list[tuple[int, pd.DataFrame]]) -> pd.DataFrame:
    non_empty = [(ch, f) for ch, f in frames if len(f)]
    if not non_empty:
        # Keep the columns (and dtypes) of the empty partitions, or the standard ones.
        template = (
            frames[0][1] if frames else pd.DataFrame(columns=[*BASE_COLUMNS, *STANDARD_FEATURES])
        )
        out = normalize_traces(template.iloc[0:0])
        out.insert(1, "channel", np.zeros(0, dtype=np.int64))
        return out
    tables = []
    for ch, f in non_empty:
        table = normalize_traces(f)
        table.insert(1, "channel", np.int64(ch))
        tables.append(table)
    combined = pd.concat(tables, ignore_index=True, sort=False)
    order = ["fov", "channel", *ordered_columns(combined.columns)[1:]]
    combined = combined[order]
    # Features absent from some partitions come back as NaN; keep them float64.
    for name in order:
        if name not in (*INT_COLUMNS, "channel", "good"):
            combined[name] = combined[name].astype(np.float64)
    return combined
