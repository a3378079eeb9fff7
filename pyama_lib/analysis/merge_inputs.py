"""What a merge reads, checked before anything is written: the results, the samples, the
FOVs' traces CSVs and the features they hold."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from pyama_lib.core.errors import ParamsError, ResultsFileError
from pyama_lib.io.analysis_csv import hours_per_unit
from pyama_lib.io.marks import inspected_csv_path
from pyama_lib.io.results_yaml import ProcessingResults, load_results, results_file_path
from pyama_lib.io.samples import Sample, check_unique_names, load_samples

DEFAULT_FEATURES: tuple[str, ...] = ("intensity_total", "area")
#: Trace columns that identify a row rather than measure something; not mergeable.
KEY_COLUMNS: tuple[str, ...] = ("fov", "cell", "frame", "time", "good")


def load_merge_results(results: str | Path | ProcessingResults) -> tuple[ProcessingResults, str]:
    if isinstance(results, ProcessingResults):
        return results, str(results_file_path(results.output_dir))
    return load_results(results), str(results_file_path(results))


def merge_sample_list(samples: Sequence[Sample] | str | Path) -> tuple[list[Sample], str]:
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


def trace_sources(
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


def check_feature_names(features: Sequence[str] | str) -> list[str]:
    if isinstance(features, str):
        features = [features]
    chosen = list(dict.fromkeys(str(f) for f in features))  # de-duplicated, order kept
    if not chosen:
        raise ParamsError(f"no feature selected; merge e.g. {', '.join(DEFAULT_FEATURES)}")
    return chosen


def check_features(features: Sequence[str], sources: dict[tuple[int, int], Path]) -> None:
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


def minutes_per_unit(unit: str, source: str) -> float:
    try:
        return hours_per_unit(unit) * 60.0
    except ParamsError as exc:
        raise ResultsFileError(source, f"time_units: {exc}") from None
