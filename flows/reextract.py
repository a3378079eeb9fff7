"""A custom workflow built from the stage tasks: re-extract traces with extra features.

Segmentation, background correction and tracking are the slow stages; once an output folder
has them, measuring another per-cell feature only needs the extract stage. This flow shows how
to compose the per-FOV stage tasks of :mod:`tasks.stages` into a workflow of your own:

1. plan the jobs exactly as ``process_acquisition`` does (:func:`plan_jobs` validates the
   input, channels and FOVs and writes nothing), keeping the parameters the folder was
   processed with and changing only ``extraction.features``;
2. check that every selected FOV already has its tracked labels, before anything is written;
3. submit one extract task per FOV (``STAGE_TASKS["extract"].map(jobs)``) and collect the results;
4. write the run-level outputs (``processing_results.yaml``, ``run.yaml``, artifacts) as the
   processing flow does.

The segmentation, corrected and label arrays are only read: their completion markers (the
stage cache) are untouched, so a later ``process_acquisition`` run with the same parameters
skips every stage up to extract. Because the extract marker includes the features, that later
run would re-extract with its own ``extraction`` parameters.

Usage::

    from flows.reextract import reextract_with_features
    reextract_with_features("out", "exp.nd2", features=["intensity_mean"], fl=[1, 2])

Register a lab's own feature (see :mod:`pyama_lib.processing.features`) in a module imported
before the flow runs, and name it in ``features``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.support.reporting import (
    ProcessSummary,
    failed_fov,
    publish_artifacts,
    record_run,
    write_run_outputs,
)
from pyama_lib.core.errors import StoreError
from pyama_lib.core.selection import DEFAULT_FL, Channels
from pyama_lib.io.lock import OutputLock
from pyama_lib.io.results_yaml import load_results, results_file_path
from pyama_lib.io.store import array_name
from pyama_lib.pipeline.plan import FovJob, Plan, plan_jobs
from pyama_lib.pipeline.processing_params import ProcessingParams
from pyama_lib.pipeline.run_record import load_run_yaml
from pyama_lib.pipeline.stages import corrected_is_current
from pyama_lib.processing.features import resolve_features
from tasks.stages import STAGE_TASKS

DEFAULT_FEATURES: tuple[str, ...] = ("intensity_mean", "local_background")


@dataclass(frozen=True)
class RecordedRun:
    """How a folder was processed, as its records say: what a re-extraction reuses."""

    input_path: str | None
    channels: Channels | None
    params: dict[str, Any]
    reader_options: dict[str, Any]


def recorded_run(output_dir: str) -> RecordedRun:
    """The input, channels, per-stage parameters and reader options of the folder's latest
    run (``run.yaml``); parameters from ``processing_results.yaml`` when no run
    record has them (only this project's sections: a PyAMA-written file has other keys).
    A folder with neither gives defaults.
    """
    # Every entry is written once its run has been planned, so the latest one, whatever its
    # outcome (a run with one failed FOV is "failed"), says how the folder was processed.
    runs = [r for r in load_run_yaml(output_dir) if r.parameters.get("params") is not None]
    last = runs[-1] if runs else None
    sections = set(ProcessingParams.model_fields)
    params: dict[str, Any] = {}
    if last is not None and isinstance(last.parameters.get("params"), dict):
        params = last.parameters["params"]
    elif results_file_path(output_dir).is_file():
        params = load_results(output_dir).params
    channels = None
    if last is not None and isinstance(last.parameters.get("channels"), dict):
        recorded = last.parameters["channels"]
        channels = Channels(pc=recorded["pc"], fl=tuple(recorded["fl"]))
    return RecordedRun(
        input_path=(last.input or {}).get("path") if last is not None else None,
        channels=channels,
        params={s: dict(v) for s, v in params.items() if s in sections and isinstance(v, dict)},
        reader_options=dict(last.settings.get("reader_options") or {}) if last else {},
    )


def check_ready(plan: Plan) -> None:
    """Raise :class:`StoreError` naming every FOV whose tracked labels or fluorescence are
    missing, so nothing is written unless every FOV can be re-extracted."""
    missing = []
    for job in plan.jobs:
        store = job.store
        needed = [array_name("seg_labeled", job.channels.pc)]
        for c in job.channels.fl:
            if not corrected_is_current(job, c):
                needed.append(array_name("fl", c))
        absent = [n for n in needed if not store.is_complete(n)]
        if absent:
            missing.append(f"fov_{job.fov:03d} ({', '.join(absent)})")
    if missing:
        raise StoreError(
            f"{plan.output_dir}: cannot re-extract, missing {'; '.join(missing)}. Run "
            "process_acquisition on this folder first (it skips what is already done)."
        )


def _collect(jobs: list[FovJob], futures: list[Any]) -> dict[int, Any]:
    # Same shape as run_fovs: a list of stage results, or failed_fov() for a failed FOV.
    logger = get_run_logger()
    results: dict[int, Any] = {}
    for job, future in zip(jobs, futures, strict=True):
        try:
            results[job.fov] = [future.result()]
        except Exception as exc:  # one FOV failing must not hide the others' results
            logger.error("fov_%03d failed in extract: %s", job.fov, exc)
            results[job.fov] = failed_fov("extract", exc)
    return results


@flow(
    name="reextract-with-features",
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=2),
)
def reextract_with_features(
    output_dir: str,
    input_path: str | None = None,
    features: Sequence[str] = DEFAULT_FEATURES,
    fl: list[int] | None = None,
    pc: int | None = None,
    fovs: str | list[int] | None = None,
    reader_options: dict[str, Any] | None = None,
) -> ProcessSummary:
    """Re-run only the extract stage on an existing output, with extra feature columns.

    What is not given is taken from the folder's latest run (``run.yaml``): the
    input, the channels, the reader options (e.g. ``times="measured"``, so the frame times stay
    those of the original run) and the other parameters.

    Parameters
    ----------
    output_dir
        A folder ``process_acquisition`` wrote (segmentation and tracking done).
    input_path
        The acquisition it was processed from (frame times are read from it); default: the
        one the run record names.
    features
        Extra registered features, as columns after ``intensity_total`` and ``area``.
    fl, pc
        Fluorescence channels to measure and the phase-contrast channel whose labels define
        the cells; default: the recorded run's (else ``[1]`` and 0).
    fovs
        FOVs to re-extract ("0-5, 7" or a list); None means all of the acquisition's FOVs.
    reader_options
        Options of the reader; default: the recorded run's.

    Returns
    -------
    ProcessSummary
        Per FOV: cells and trace rows per channel; stages ``["extract"]``.

    Raises
    ------
    StoreError
        When a selected FOV lacks its tracked labels (nothing is written then).
    PyamaError
        When a FOV failed to extract; the others are written.
    """
    logger = get_run_logger()
    started = time.time()
    recorded = recorded_run(output_dir)
    params = recorded.params
    # resolve_features fails early, naming the registered features, on a typo.
    params["extraction"] = {
        **params.get("extraction", {}),
        "features": list(resolve_features(features)),
    }
    default = recorded.channels or Channels(pc=0, fl=DEFAULT_FL)
    channels = Channels(
        pc=default.pc if pc is None else pc, fl=tuple(default.fl if fl is None else fl)
    )
    source = input_path or recorded.input_path
    if source is None:
        raise StoreError(f"{output_dir}: no run record names the acquisition; pass input_path")
    options = recorded.reader_options if reader_options is None else reader_options
    plan = plan_jobs(source, output_dir, channels, fovs=fovs, params=params, reader_options=options)
    for warning in plan.warnings:
        logger.warning(warning)
    check_ready(plan)
    logger.info(
        "%s: re-extracting %d FOV(s) with features %s",
        plan.base_name,
        len(plan.jobs),
        list(plan.params.extraction.features),
    )
    settings = {"runner": "thread", "n_workers": 2, "reader_options": plan.reader_options}
    with OutputLock(output_dir), record_run(plan, ["extract"], started, settings) as record:
        futures = STAGE_TASKS["extract"].map(plan.jobs)
        results = _collect(plan.jobs, list(futures))
        summary = write_run_outputs(plan, results, record, started=started)
    publish_artifacts(summary)
    summary.raise_if_failed()
    return summary
