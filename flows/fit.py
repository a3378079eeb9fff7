"""``fit_traces``: fit a gene-expression model to every cell of one or more analysis CSVs.

One Prefect task per chunk of cells (:func:`tasks.analysis.fit_chunk_task`), so a large file
spreads over the workers; then, per CSV, PyAMA's ``<stem>_fitted.csv``, its Parquet twin and two
QC figures (example fits, parameter and R² histograms) beside it, and a markdown artifact that
shows the figures in the Prefect UI.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.merge import MERGED_DIR
from flows.support.artifacts import artifact_key, figures_markdown
from pyama_lib.analysis.figures import (
    example_cells,
    fit_examples_figure,
    histograms_figure,
    save_png,
)
from pyama_lib.analysis.fitting import CHUNK_CELLS
from pyama_lib.analysis.models import get_model, model_names, resolve_start_and_bounds
from pyama_lib.core.errors import ParamsError, ResultsFileError
from pyama_lib.io.analysis_csv import read_analysis_csv
from pyama_lib.io.fit_results import (
    csv_feature,
    find_analysis_csvs,
    fitted_paths,
    is_expression_feature,
    write_fit_results,
)
from pyama_lib.io.results_yaml import load_results, results_file_path
from pyama_lib.io.traces import BASE_COLUMNS
from pyama_lib.pipeline.phase_only import check_has_traces
from pyama_lib.pipeline.pool import stage_pool, unguarded_main_call
from pyama_lib.processing.features import list_features
from tasks.analysis import fit_chunk_task

#: Trace columns a merge can write besides the extracted features.
TRACE_COLUMNS = tuple(c for c in BASE_COLUMNS if c.startswith("position"))

#: Fit tasks per worker of a large fit (more cells per task than CHUNK_CELLS).
CHUNKS_PER_WORKER = 8
#: Cells from which a fit runs in worker processes (``n_workers`` > 1).
PROCESS_MIN_CELLS = 2000


@dataclass
class FittedFile:
    """One analysis CSV's fit: where the results are, and how it went."""

    analysis_csv: str
    fitted_csv: str
    fitted_parquet: str
    n_cells: int
    n_success: int
    median_r_squared: float
    figures: list[str] = field(default_factory=list)


@dataclass
class FitSummary:
    """The small object ``fit_traces`` returns."""

    model: str
    files: list[FittedFile]
    wall_seconds: float

    def __str__(self) -> str:
        lines = [f"{'cells':>6} {'fitted':>6} {'median R²':>9}  file"]
        for f in self.files:
            lines.append(
                f"{f.n_cells:>6} {f.n_success:>6} {f.median_r_squared:>9.3f}  {f.fitted_csv}"
            )
        lines.append(f"{len(self.files)} file(s), model {self.model}, {self.wall_seconds:.1f} s")
        return "\n".join(lines)


def check_fit_options(
    model: str,
    params: dict[str, float] | None,
    bounds: dict[str, tuple[float, float]] | None,
) -> None:
    """Refuse an unknown model, parameter or bound before any work (ParamsError)."""
    if model.lower() not in model_names():
        raise ParamsError(f"unknown model {model!r}; models are {', '.join(model_names())}")
    resolve_start_and_bounds(get_model(model), params, bounds)


@flow(name="fit-traces", log_prints=True)
def fit_traces_flow(
    path: str | list[str],
    model: str = "maturation",
    params: dict[str, float] | None = None,
    bounds: dict[str, tuple[float, float]] | None = None,
    n_workers: Annotated[int, Field(ge=1)] = 2,
    chunk_cells: Annotated[int, Field(ge=1)] | None = None,
    feature: str | None = None,
    thorough: bool = False,
) -> FitSummary:
    """Fit ``model`` to every cell of the analysis CSV ``path``, or of every analysis CSV in
    the folder ``path`` (``_fitted`` results and per-FOV ``_traces`` CSVs are skipped, as in
    PyAMA), or of each file of a list. ``params`` and ``bounds`` override the model's initial
    values and bounds (``{"ktl": 500}``, ``{"km": (0.1, 5)}``); time is converted to hours as
    each file's ``# Time units`` line says. Of a folder, the CSVs of the intensity features
    are fitted (not the areas or positions); ``feature`` fits those of one feature instead
    (``area`` fits ``<sample>_area_ch_<c>.csv``).
    ``thorough`` tries more starts per cell (a few times the fit time; see ``fit_cells``).
    """
    logger = get_run_logger()
    started = time.time()
    check_fit_options(model, params, bounds)
    csvs: list[Path] = []
    for each in [path] if isinstance(path, str) else path:
        chosen, left = choose_fit_csvs(each, feature)
        csvs += chosen
        if left:
            logger.info(
                "not fitting the CSVs of %s in %s (no expression time course; "
                "--feature %s fits them)",
                ", ".join(left),
                each,
                left[0],
            )
    tables = {csv: read_analysis_csv(csv) for csv in csvs}
    logger.info(
        "fitting %s%s to %d cell(s) in %d file(s)",
        model,
        " (thorough)" if thorough else "",
        sum(t.shape[1] for t in tables.values()),
        len(csvs),
    )
    futures: dict[Path, list[PrefectFuture]] = {}
    n_cells = sum(t.shape[1] for t in tables.values())
    # The fit holds the GIL: on threads alone, n workers fit no faster than one. Worker
    # processes pay for their start once, which a small fit does not win back.
    in_processes = n_workers > 1 and n_cells >= PROCESS_MIN_CELLS and unguarded_main_call() is None
    workers = stage_pool(n_workers) if in_processes else nullcontext()
    if chunk_cells is None:
        # Each chunk costs a task run (and, in workers, a round trip): a large fit gets a few
        # chunks per worker, enough to keep every worker busy to the end.
        # Whole multiples of fit_cells' own batches, so a cell is fitted in the same batch,
        # with the same result, whatever the number of workers.
        batches = -(-n_cells // (CHUNKS_PER_WORKER * n_workers * CHUNK_CELLS))
        chunk_cells = CHUNK_CELLS * max(1, batches)
    with ThreadPoolTaskRunner(max_workers=n_workers) as runner, workers:
        for csv, table in tables.items():
            t = table.index.to_numpy(dtype="float64")
            y = table.to_numpy(dtype="float64").T  # one row per cell
            futures[csv] = [
                runner.submit(
                    fit_chunk_task,
                    {
                        "t": t,
                        "y": y[start : start + chunk_cells],
                        "start": start,
                        "stop": min(start + chunk_cells, table.shape[1]),
                        "model": model,
                        "params": params,
                        "bounds": bounds,
                        "label": csv.stem,
                        "thorough": thorough,
                    },
                )
                for start in range(0, table.shape[1], chunk_cells)
            ]
        files = [
            _write_outputs(csv, tables[csv], [f.result() for f in futures[csv]], model)
            for csv in csvs
        ]
    summary = FitSummary(model, files, time.time() - started)
    _publish(summary)
    return summary


def choose_fit_csvs(path: str | Path, feature: str | None = None) -> tuple[list[Path], list[str]]:
    """The CSVs to fit of ``path``, and the features of a folder's CSVs left out.

    A file is fitted as given. Of a folder, the CSVs of ``feature``, or without one those of
    the intensity features: a cell's area or position is no expression time course.

    Raises
    ------
    ResultsFileError
        Nothing to fit: no such path, no analysis CSV, none of ``feature``, none of an
        intensity (naming the features there are), a processing output without fluorescence.
    """
    if results_file_path(path).is_file():  # a processing output folder, or its results file
        check_has_traces(load_results(path), path, "fit")
    found = find_analysis_csvs(path)
    if Path(path).is_file() and feature is None:
        return found, []
    known = {*list_features(), *TRACE_COLUMNS, *([feature] if feature else [])}
    of = {csv: csv_feature(csv, known) for csv in found}
    if feature is not None:
        chosen = [csv for csv in found if of[csv] == feature]
        if not chosen:
            raise ResultsFileError(path, f"holds no analysis CSV of feature {feature!r}")
        return chosen, []
    chosen = [csv for csv in found if is_expression_feature(of[csv])]
    left = sorted({str(of[csv]) for csv in found if csv not in chosen})
    if not chosen:
        raise ResultsFileError(
            path,
            f"holds analysis CSVs of {', '.join(left)} only, not of an intensity; "
            f"fit them with --feature {left[0]}",
        )
    return chosen, left


def _write_outputs(
    csv: Path, table: pd.DataFrame, chunks: list[pd.DataFrame], model: str
) -> FittedFile:
    names = [str(c) for c in table.columns]
    fitted = (
        pd.concat(chunks, ignore_index=True)
        if chunks
        else pd.DataFrame(columns=["cell_id", "model_type", "success", "r_squared"])
    )
    fitted_csv, parquet = write_fit_results(fitted, names, csv)
    good = fitted["success"].to_numpy(dtype=bool) if len(fitted) else np.zeros(0, dtype=bool)
    r2 = fitted["r_squared"].to_numpy(dtype=float) if len(fitted) else np.zeros(0)
    figures = _figures(csv, table, fitted, model) if len(fitted) else []
    return FittedFile(
        analysis_csv=str(csv),
        fitted_csv=str(fitted_csv),
        fitted_parquet=str(parquet),
        n_cells=len(fitted),
        n_success=int(good.sum()),
        median_r_squared=float(np.median(r2[good])) if good.any() else 0.0,
        figures=[str(f) for f in figures],
    )


def _figures(csv: Path, table: pd.DataFrame, fitted: pd.DataFrame, model: str) -> list[Path]:
    spec = get_model(model)
    t = table.index.to_numpy(dtype=float)
    dense = np.linspace(t.min(), t.max(), 200) if t.size else t
    r_squared = fitted["r_squared"].to_numpy(dtype=float)
    shown = example_cells(r_squared)  # curves for the dozen drawn, not for every cell
    params = fitted[list(spec.param_names)].to_numpy(dtype=float)[shown]
    stem = fitted_paths(csv)[0].name.removesuffix(".csv")
    examples = fit_examples_figure(
        t,
        table.iloc[:, shown].to_numpy(dtype=float),
        dense,
        spec.evaluate(dense, params).T,
        r_squared[shown],
        [str(table.columns[i]) for i in shown],
        csv.stem,
        n_examples=len(shown),
    )
    good = fitted[fitted["success"].astype(bool)]
    histograms = histograms_figure(
        {name: good[name].to_numpy() for name in (*spec.param_names, "r_squared")},
        f"{csv.stem}: fitted {model} parameters ({len(good)} cells)",
    )
    return [
        save_png(examples, csv.with_name(f"{stem}_examples.png")),
        save_png(histograms, csv.with_name(f"{stem}_histograms.png")),
    ]


def _publish(summary: FitSummary) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows: list[dict[str, Any]] = [
        {
            "file": Path(f.analysis_csv).name,
            "cells": f.n_cells,
            "fitted": f.n_success,
            "median_r_squared": round(f.median_r_squared, 4),
        }
        for f in summary.files
    ]
    # Named after the data: the folder fitted, or the output folder holding a "merged" one.
    folder = Path(summary.files[0].analysis_csv).parent if summary.files else Path("fit")
    first = folder.parent.name if folder.name == MERGED_DIR else folder.name
    create_table_artifact(
        table=rows, key=artifact_key(first, "fit-summary"), description="Cells fitted per file"
    )
    create_markdown_artifact(
        key=artifact_key(first, "fit-figures"),
        description=f"Fits ({summary.model})",
        markdown=figures_markdown(
            f"Fits: {summary.model}",
            [(Path(f.analysis_csv).name, f.figures) for f in summary.files],
        ),
    )
