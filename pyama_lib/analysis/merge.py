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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pyama_lib.analysis.merge_inputs import (
    DEFAULT_FEATURES,
    available_fovs,
    check_feature_names,
    check_features,
    load_merge_results,
    merge_sample_list,
    minutes_per_unit,
    trace_sources,
)
from pyama_lib.analysis.merge_tables import (
    FovRows,
    distinct_cells,
    marked_bad_cells,
    read_sample_rows,
    tidy_parquet,
    wide_matrix,
)
from pyama_lib.core.errors import OutputDirError, ParamsError
from pyama_lib.io.analysis_csv import hours_per_unit, write_long_csv
from pyama_lib.io.results_yaml import ProcessingResults
from pyama_lib.io.samples import Sample, check_fovs
from pyama_lib.io.wide_csv import write_wide_csv

PARQUET_NAME = "merged.parquet"
#: Traces drawn in a sample's preview figure at most; the median is over all cells.
PREVIEW_TRACES = 1000


@dataclass(frozen=True)
class TracesPreview:
    """What a figure of one sample and channel needs, small whatever the sample's size:
    the first merged feature's median over all cells and up to :data:`PREVIEW_TRACES` traces.

    Attributes
    ----------
    feature
        The feature drawn.
    time_h
        (n_t,) times in hours.
    traces
        (n_t, n_drawn) values of cells spread evenly over the sample's columns.
    median
        (n_t,) median over all cells (NaN where no cell has a value).
    n_cells
        The sample's cells in this channel.
    """

    feature: str
    time_h: np.ndarray
    traces: np.ndarray
    median: np.ndarray
    n_cells: int


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
    left_out
        Sample → number of distinct ``(fov, cell)`` of its traces left out in a channel
        because no row of theirs is good (cells a person marked bad).
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
    previews: dict[tuple[str, int], TracesPreview] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)
    """``(sample, channel)`` → what its figure draws (not part of :meth:`as_dict`)."""

    def as_dict(self) -> dict[str, Any]:
        """A plain (YAML/JSON-ready) summary."""
        return {
            "output_dir": str(self.output_dir),
            "files": [
                {"sample": s, "channel": c, "feature": f, "path": str(p)}
                for (s, c, f), p in self.files.items()
            ],
            "cells": dict(self.cells),
            "left_out": dict(self.left_out),
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
    loaded, results_source = load_merge_results(results)
    chosen, samples_source = merge_sample_list(samples)
    check_fovs(chosen, available_fovs(loaded), f"{samples_source} (results {results_source})")
    features = check_feature_names(features)
    to_minutes = minutes_per_unit(loaded.time_units, results_source)

    warnings: list[str] = []
    sources = trace_sources(loaded, chosen, warnings)
    check_features(features, sources)

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
    bad: dict[str, set[tuple[int, int]]] = {s.name: set() for s in chosen}
    previews: dict[tuple[str, int], TracesPreview] = {}
    with tidy_parquet(parquet_target) as tidy:
        # One sample and channel at a time: its good rows are all that is held.
        for (name, channel), (fov_files, _) in groups.items():
            blocks = read_sample_rows(fov_files, features, warnings)
            seen[name] |= distinct_cells(blocks)
            bad[name] |= marked_bad_cells(blocks)
            if not any(b.cell.size for b in blocks):
                warnings.append(f"sample {name!r}, channel {channel}: no good cells")
            for k, (feature, target) in enumerate(targets[name, channel].items()):
                if long_format:
                    _write_long(blocks, k, target, loaded.time_units)
                if not long_format or k == 0:
                    times, columns, matrix = wide_matrix(blocks, k)
                    if not long_format:
                        write_wide_csv(target, times, columns, matrix, loaded.time_units)
                    if k == 0:
                        hours = hours_per_unit(loaded.time_units)
                        previews[name, channel] = _preview(feature, times * hours, matrix)
                    del matrix
                files[name, channel, feature] = target
                for block in blocks:
                    tidy.add(name, channel, feature, block, k, to_minutes)
            del blocks
    cells = {name: len(pairs) for name, pairs in seen.items()}
    left_out = {name: len(pairs) for name, pairs in bad.items()}
    return MergeResult(out, files, cells, parquet_target, long_format, warnings, previews, left_out)


def _write_long(blocks: Sequence[FovRows], k: int, target: Path, time_units: str) -> None:
    """Feature ``k`` in the long format; cells' empty values are left out."""
    long = pd.DataFrame(
        {
            "time": np.concatenate([b.time for b in blocks]),
            "fov": np.concatenate([np.full(b.cell.size, b.fov, np.int64) for b in blocks]),
            "cell": np.concatenate([b.cell for b in blocks]),
            "value": np.concatenate([b.values[:, k] for b in blocks]),
        }
    )
    write_long_csv(long.dropna(subset=["value"]), target, time_units=time_units)


def _preview(feature: str, time_h: np.ndarray, matrix: np.ndarray) -> TracesPreview:
    n_cells = matrix.shape[1]
    drawn = np.unique(np.linspace(0, n_cells - 1, min(n_cells, PREVIEW_TRACES)).round())
    with np.errstate(all="ignore"):
        # an all-empty time gives NaN, as the figure wants; numpy warns about it
        median = np.nanmedian(matrix, axis=1) if n_cells else np.full(time_h.size, np.nan)
    traces = matrix[:, drawn.astype(np.intp)].copy()
    return TracesPreview(feature, time_h, traces, median, n_cells)


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
