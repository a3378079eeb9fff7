"""Merge per-FOV traces into per-sample tables: PyAMA's analysis CSVs plus one Parquet table.

Input is a processing output folder (ours, or one written by PyAMA itself, possibly moved since:
:func:`~pyama_lib.io.results_yaml.load_results` re-roots its paths) and a list of samples
(:mod:`pyama_lib.io.samples`). For each sample × fluorescence channel × feature the merge writes
``<sample>_<feature>_ch_<c>.csv`` in PyAMA's wide format (:mod:`pyama_lib.io.analysis_csv`):

- only rows whose ``good`` is true, read from ``<stem>_inspected.csv`` where a person saved
  good/bad marks beside a traces CSV, else from the traces CSV itself;
- one column per cell that has a good row; unlike PyAMA, no all-empty columns for cell ids
  that exist in another FOV of the sample only;
- time as in the traces (minutes for PyAMA and PyAMA Flow runs), named by ``# Time units``;
  rows are the union of the FOVs' times, so FOVs imaged at other times (measured time stamps)
  leave gaps in each other's columns, as in PyAMA.

It also writes ``merged.parquet``, one tidy table for the whole merge with columns
``sample, fov, cell, channel, feature, time, value`` (time in minutes), for pandas, pyarrow and
DuckDB. Every input is checked before the output folder is touched, every file is written
atomically, and no file is ever written outside ``output_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pyama_lib.core.errors import OutputDirError, ParamsError, ResultsFileError
from pyama_lib.io.analysis_csv import (
    hours_per_unit,
    long_to_wide,
    write_analysis_csv,
    write_long_csv,
)
from pyama_lib.io.atomic import atomic_target
from pyama_lib.io.marks import inspected_csv_path, read_marked_traces
from pyama_lib.io.results_yaml import ProcessingResults, load_results, results_file_path
from pyama_lib.io.samples import Sample, check_fovs, check_unique_names, load_samples

DEFAULT_FEATURES: tuple[str, ...] = ("intensity_total", "area")
PARQUET_NAME = "merged.parquet"
#: Trace columns that identify a row rather than measure something; not mergeable.
KEY_COLUMNS: tuple[str, ...] = ("fov", "cell", "frame", "time", "good")
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


@dataclass
class MergeResult:
    """What a merge wrote.

    Attributes
    ----------
    output_dir
        The (resolved) folder everything was written into.
    files
        ``(sample, channel, feature)`` → the analysis CSV written.
    cells
        Sample → number of distinct ``(fov, cell)`` with at least one good row (any channel).
    parquet
        The tidy table of the whole merge.
    long_format
        Whether the CSVs are in the long ``time, fov, cell, value`` format.
    warnings
        FOVs or channels without traces, samples without good cells: worth a log line.
    """

    output_dir: Path
    files: dict[tuple[str, int, str], Path]
    cells: dict[str, int]
    parquet: Path
    long_format: bool = False
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A plain (YAML/JSON-ready) summary."""
        return {
            "output_dir": str(self.output_dir),
            "files": [
                {"sample": s, "channel": c, "feature": f, "path": str(p)}
                for (s, c, f), p in self.files.items()
            ],
            "cells": dict(self.cells),
            "parquet": str(self.parquet),
            "format": "long" if self.long_format else "wide",
            "warnings": list(self.warnings),
        }


def merge_samples(
    results: str | Path | ProcessingResults,
    samples: Sequence[Sample] | str | Path,
    output_dir: str | Path,
    features: Sequence[str] = DEFAULT_FEATURES,
    long_format: bool = False,
) -> MergeResult:
    """Write per-sample analysis CSVs and ``merged.parquet`` into ``output_dir``.

    Parameters
    ----------
    results
        A processing output folder, its ``processing_results.yaml``, or the loaded results.
    samples
        The samples, or the path of a samples YAML file.
    output_dir
        Folder to write into (created). Existing files of the same names are replaced.
    features
        Trace columns to merge, one CSV each (e.g. ``intensity_total``, ``area``,
        ``position_x`` or an extra feature the extraction measured).
    long_format
        Write the CSVs in the long format of later PyAMA releases instead of the wide one.

    Raises
    ------
    ParamsError
        Bad samples (see :mod:`pyama_lib.io.samples`), FOVs without traces, an unknown feature.
    ResultsFileError
        The results file or a traces CSV is missing or unreadable.
    OutputDirError
        ``output_dir`` cannot be created, or a target there is a link leading outside it.
    """
    loaded, results_source = _load(results)
    chosen, samples_source = _samples(samples)
    check_fovs(chosen, available_fovs(loaded), f"{samples_source} (results {results_source})")
    features = _check_feature_names(features)
    to_minutes = _minutes_per_unit(loaded.time_units, results_source)

    warnings: list[str] = []
    sources = _trace_sources(loaded, chosen, warnings)
    _check_features(features, sources)

    groups = _plan_outputs(chosen, sources, features)
    out = _prepare_output_dir(output_dir)
    # Every target is checked before the first is written.
    targets = {
        key: {f: safe_output_path(out, n) for f, n in names.items()}
        for key, (_, names) in groups.items()
    }
    parquet_target = safe_output_path(out, PARQUET_NAME)
    files: dict[tuple[str, int, str], Path] = {}
    seen: dict[str, set[tuple[int, int]]] = {s.name: set() for s in chosen}
    tidy: list[pd.DataFrame] = []
    for (name, channel), (fov_files, _) in groups.items():
        rows = good_rows(fov_files, features, warnings)
        seen[name].update(zip(rows["fov"].tolist(), rows["cell"].tolist(), strict=True))
        if rows.empty:
            warnings.append(f"sample {name!r}, channel {channel}: no good cells")
        for feature, target in targets[name, channel].items():
            _write_sample_csv(rows, feature, target, loaded.time_units, long_format)
            files[name, channel, feature] = target
            tidy.append(_tidy(rows, name, channel, feature, to_minutes))
    parquet = write_merged_parquet(tidy, parquet_target)
    cells = {name: len(pairs) for name, pairs in seen.items()}
    return MergeResult(out, files, cells, parquet, long_format, warnings)


def _plan_outputs(
    samples: Sequence[Sample], sources: dict[tuple[int, int], Path], features: Sequence[str]
) -> dict[tuple[str, int], tuple[dict[int, Path], dict[str, str]]]:
    """``(sample, channel)`` → (its FOVs' traces CSVs, feature → output file name)."""
    groups: dict[tuple[str, int], tuple[dict[int, Path], dict[str, str]]] = {}
    taken: dict[str, tuple[str, int, str]] = {}
    for sample in samples:
        for channel in sorted({ch for _, ch in sources}):
            fov_files = {f: sources[f, channel] for f in sample.fovs if (f, channel) in sources}
            if not fov_files:
                continue
            names: dict[str, str] = {}
            for feature in features:
                name = f"{sample.name}_{feature}_ch_{channel}.csv"
                # Two outputs with one name (sample "a_x" + feature "y" vs "a" + "x_y"), compared
                # as case-insensitive file systems do, would overwrite each other.
                first = taken.setdefault(name.casefold(), (sample.name, channel, feature))
                if first != (sample.name, channel, feature):
                    raise ParamsError(
                        f"samples {first[0]!r} and {sample.name!r} would both write {name}; "
                        "rename one of them"
                    )
                names[feature] = name
            groups[sample.name, channel] = (fov_files, names)
    return groups


# -- inputs -----------------------------------------------------------------------------------


def _load(results: str | Path | ProcessingResults) -> tuple[ProcessingResults, str]:
    if isinstance(results, ProcessingResults):
        return results, str(results_file_path(results.output_dir))
    return load_results(results), str(results_file_path(results))


def _samples(samples: Sequence[Sample] | str | Path) -> tuple[list[Sample], str]:
    if isinstance(samples, str | Path):
        return load_samples(samples), str(samples)
    chosen = list(samples)
    if not chosen:
        raise ParamsError("no samples given; give at least one {name, fovs}")
    bad = [s for s in chosen if not isinstance(s, Sample)]
    if bad:
        raise ParamsError(f"samples must be Sample records, got {bad[0]!r}")
    check_unique_names(chosen)
    return chosen, "samples"


def available_fovs(results: ProcessingResults) -> list[int]:
    """FOVs that have at least one traces CSV recorded."""
    return sorted(fov for fov, entry in results.results_paths.items() if entry.traces_csv)


def merge_channels(results: ProcessingResults) -> list[int]:
    """Fluorescence channels to merge: ``channels.fl``, else every channel with traces."""
    if results.channels.fl:
        return sorted(results.channels.fl)
    return sorted({ch for e in results.results_paths.values() for ch, _ in e.traces_csv})


def _trace_sources(
    results: ProcessingResults, samples: Iterable[Sample], warnings: list[str]
) -> dict[tuple[int, int], Path]:
    """``(fov, channel)`` → the traces CSV recorded for it; missing files are errors."""
    fovs = sorted({f for s in samples for f in s.fovs})
    sources: dict[tuple[int, int], Path] = {}
    for channel in merge_channels(results):
        for fov in fovs:
            path = results.traces_csv(fov, channel)
            if path is None:
                warnings.append(f"FOV {fov} has no traces for channel {channel}; skipped")
            elif not (path.is_file() or inspected_csv_path(path).is_file()):
                raise ResultsFileError(
                    path, "traces CSV recorded in the results but not found; re-run extraction"
                )
            else:
                sources[fov, channel] = path
    return sources


def _check_feature_names(features: Sequence[str] | str) -> list[str]:
    if isinstance(features, str):
        features = [features]
    chosen = list(dict.fromkeys(str(f) for f in features))  # de-duplicated, order kept
    if not chosen:
        raise ParamsError(f"no feature selected; merge e.g. {', '.join(DEFAULT_FEATURES)}")
    return chosen


def _check_features(features: Sequence[str], sources: dict[tuple[int, int], Path]) -> None:
    """Refuse features absent from the traces (read only each file's header)."""
    columns: dict[Path, list[str]] = {}
    for path in sources.values():
        readable = _effective(path)
        try:
            names = pd.read_csv(readable, nrows=0).columns.tolist()
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ResultsFileError(readable, f"not a readable traces CSV ({exc})") from exc
        columns[readable] = [c for c in names if c not in KEY_COLUMNS]
    everywhere = set.intersection(*(set(c) for c in columns.values())) if columns else set()
    anywhere = list(dict.fromkeys(c for cs in columns.values() for c in cs))
    for feature in features:
        if feature in KEY_COLUMNS or feature not in anywhere:
            raise ParamsError(
                f"unknown feature {feature!r}; the traces have {', '.join(anywhere) or 'none'}"
            )
        if feature not in everywhere:
            lacking = next(p for p, c in columns.items() if feature not in c)
            has = ", ".join(columns[lacking])
            raise ParamsError(
                f"feature {feature!r} is missing from {lacking} (it has {has}); "
                "re-extract that FOV with the feature or leave the feature out"
            )


def _effective(path: Path) -> Path:
    inspected = inspected_csv_path(path)
    return inspected if inspected.is_file() else path


def _minutes_per_unit(unit: str, source: str) -> float:
    try:
        return hours_per_unit(unit) * 60.0
    except ParamsError as exc:
        raise ResultsFileError(source, f"time_units: {exc}") from None


# -- tables -----------------------------------------------------------------------------------


def good_rows(
    fov_files: dict[int, Path], features: Sequence[str], warnings: list[str] | None = None
) -> pd.DataFrame:
    """The good rows of some FOVs' traces: ``fov, cell, time`` and ``features``.

    Each file is read with :func:`~pyama_lib.io.marks.read_marked_traces`, so a person's marks
    in its ``_inspected.csv`` apply; what that says about stale marks is added to
    ``warnings``. The FOV is the one the results file gives, as in PyAMA's merge. Rows are
    ordered by FOV, cell, then time.
    """
    parts = []
    for fov, path in sorted(fov_files.items()):
        marked = read_marked_traces(path)
        table = marked.table
        if warnings is not None:
            warnings.extend(w for w in marked.warnings if w not in warnings)
        if table.duplicated(["cell", "time"]).any():
            raise ResultsFileError(
                marked.source, "a cell has two rows at one time; re-run extraction"
            )
        good = table.loc[table["good"], ["cell", "time", *features]]
        good.insert(0, "fov", np.int64(fov))
        parts.append(good)
    rows = pd.concat(parts, ignore_index=True)
    return rows.sort_values(["fov", "cell", "time"], kind="stable", ignore_index=True)


def _write_sample_csv(
    rows: pd.DataFrame, feature: str, target: Path, time_units: str, long_format: bool
) -> None:
    long = rows[["time", "fov", "cell", feature]].rename(columns={feature: "value"})
    if long_format:
        write_long_csv(long.dropna(subset=["value"]), target, time_units=time_units)
    else:
        # One column per (fov, cell) present in the good rows: no all-empty columns.
        write_analysis_csv(long_to_wide(long), target, time_units=time_units)


def _tidy(
    rows: pd.DataFrame, sample: str, channel: int, feature: str, to_minutes: float
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample": sample,
            "fov": rows["fov"].to_numpy(np.int64),
            "cell": rows["cell"].to_numpy(np.int64),
            "channel": np.int64(channel),
            "feature": feature,
            "time": rows["time"].to_numpy(np.float64) * to_minutes,
            "value": rows[feature].to_numpy(np.float64),
        }
    )


def write_merged_parquet(parts: Sequence[pd.DataFrame], path: str | Path) -> Path:
    """Write the tidy merge table (:data:`PARQUET_SCHEMA`) atomically; no parts, no rows."""
    path = Path(path)
    frames = [p for p in parts if len(p)]
    if frames:
        table = pa.Table.from_pandas(
            pd.concat(frames, ignore_index=True), schema=PARQUET_SCHEMA, preserve_index=False
        )
    else:
        table = PARQUET_SCHEMA.empty_table()
    try:
        with atomic_target(path) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:
        raise OutputDirError(path.parent, f"cannot write {path.name} ({exc})") from exc
    return path


# -- output folder ----------------------------------------------------------------------------


def _prepare_output_dir(output_dir: str | Path) -> Path:
    out = Path(output_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise OutputDirError(out, "exists and is not a folder; choose another output folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(out, f"cannot create the output folder ({exc})") from exc
    if not os.access(out, os.W_OK):
        raise OutputDirError(out, "the output folder is not writable")
    return out


def safe_output_path(out: Path, name: str) -> Path:
    """``out / name``, refused unless it is a file directly inside ``out`` (``out`` resolved).

    Sample names are already checked to be safe file names; this is the last line of defence,
    and it also catches a link planted in the output folder that points elsewhere.

    Examples
    --------
    >>> safe_output_path(Path("/data/merged"), "a_area_ch_1.csv")
    PosixPath('/data/merged/a_area_ch_1.csv')
    >>> safe_output_path(Path("/data/merged"), "../a_area_ch_1.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyama_lib.core.errors.OutputDirError: /data/merged: refusing to write '../a_area_ch_1.csv': ...
    """
    target = out / name
    if not name or name in (".", "..") or "/" in name or "\\" in name or target.parent != out:
        raise OutputDirError(out, f"refusing to write {name!r}: not a plain file name")
    resolved = target.resolve()
    if resolved.parent != out:
        raise OutputDirError(
            out,
            f"refusing to write {name!r}: it is a link to {resolved}, outside the output folder; "
            "remove the link or choose another output folder",
        )
    return target
