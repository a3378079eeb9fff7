"""Prefect tasks of the analysis half: merge, fit a chunk of cells, draw a FOV's QC picture.

Thin wrappers returning small results (a fit table of one chunk of cells is a few hundred
rows). Merge and QC read their inputs from disk by path; a fit chunk gets its traces from the
flow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from pyama_lib.analysis.fitting import fit_chunk_table
from pyama_lib.analysis.merge import MergeResult, merge_samples
from pyama_lib.io.samples import Sample
from pyama_lib.pipeline.plan import FovJob
from pyama_lib.pipeline.pool import execute_in_pool
from pyama_lib.pipeline.qc import write_segmentation_png
from tasks.logs import quiet_expected_errors

quiet_expected_errors()


@task(name="merge", cache_policy=NO_CACHE)
def merge_task(
    results: str,
    samples: Sequence[Sample],
    output_dir: str,
    features: Sequence[str],
    long_format: bool,
) -> MergeResult:
    """Merge the FOVs of ``results`` into per-sample tables (:func:`pyama_lib.analysis.merge`)."""
    return merge_samples(results, samples, output_dir, features, long_format)


@task(
    name="fit",
    task_run_name="fit {label} cells {start}-{stop}",
    cache_policy=NO_CACHE,
)
def fit_chunk_task(
    t: np.ndarray,
    y: np.ndarray,
    start: int,
    stop: int,
    model: str,
    params: Mapping[str, float] | None,
    bounds: Mapping[str, tuple[float, float]] | None,
    label: str = "",
    thorough: bool = False,
) -> pd.DataFrame:
    """Fit cells ``start..stop-1`` (column positions of one analysis CSV, whose times are
    ``t`` and traces the rows of ``y``); their fit table. The flow reads each CSV once and
    hands every chunk its rows: a chunk reading the file would read it once per chunk. The
    fit runs in the flow's worker processes when it opened some (the fit holds the GIL, so
    threads would take turns), else here."""
    return execute_in_pool(
        label or "fit",
        f"the fit of cells {start}-{stop}",
        fit_chunk_table,
        t,
        y,
        start,
        model,
        params,
        bounds,
        thorough,
    )


@task(name="qc-figure", task_run_name="qc fov_{job.fov:03d}", cache_policy=NO_CACHE)
def segmentation_png_task(job: FovJob) -> str | None:
    """The FOV's segmentation and tracking picture (None before tracking has run)."""
    path = write_segmentation_png(job)
    return None if path is None else str(path)
