"""Per-FOV stages over the Zarr store.

Each stage reads its inputs from the store (or, for ``copy``, the acquisition), streams frame by
frame through the array functions, writes its outputs and marks them complete last. Outputs that
are already complete for the same inputs and parameters are skipped. Every completion marker,
the copy stage's included, holds the stage's parameters, the pyama-flow version, the input
acquisition's identity and a fingerprint of every input array's own marker, so a new input file
or re-running an upstream stage with other parameters invalidates what depends on it.

These are the functions the Prefect tasks wrap, and they are usable on their own::

    job = plan_jobs("acq.nd2", "out", Channels(pc=0, fl=[1])).jobs[0]
    for stage in STAGES:
        print(run_stage(stage, job))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyama_lib import __version__
from pyama_lib.core.errors import InputDataError, ParamsError
from pyama_lib.core.selection import STAGES, Channels
from pyama_lib.io.identity import identity_key, input_identity
from pyama_lib.io.readers.acquisition import Acquisition
from pyama_lib.io.results_yaml import RUN_OF_FOV, FovResults, ProcessingResults
from pyama_lib.io.store import FovStore, array_name, parse_array_name
from pyama_lib.io.traces import (
    PARQUET_DIR,
    SOURCE_METADATA_KEY,
    traces_csv_path,
    traces_partition_file,
    write_traces_csv,
    write_traces_partition,
)
from pyama_lib.io.tracks import tracks_csv_path, write_tracks
from pyama_lib.pipeline.phase_only import cell_geometry
from pyama_lib.pipeline.plan import FovJob, Plan
from pyama_lib.pipeline.processing_params import ProcessingParams
from pyama_lib.processing.background import BackgroundParams, correct_frame
from pyama_lib.processing.extraction import extract_traces
from pyama_lib.processing.segmentation import segment_frame
from pyama_lib.processing.tracking import track_frames


@dataclass
class StageResult:
    """What one stage did for one FOV: arrays written and skipped, timing, small facts."""

    stage: str
    fov: int
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # for the run's log

    @property
    def was_skipped(self) -> bool:
        return not self.written

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _marker(
    store: FovStore, input_key: str, params: Mapping[str, Any], inputs: Sequence[str] = ()
) -> dict[str, Any]:
    # The cache key of an output: what it was computed from and how. Every stage's marker has
    # the same parts, so no stage can keep data of another input or code version.
    return {
        "params": dict(params),
        "version": __version__,
        "input": input_key,
        "inputs": {name: store.fingerprint(name) for name in inputs},
    }


def copy_fov(
    acquisition: Acquisition,
    fov: int,
    channels: Channels,
    store: FovStore,
    input_key: str | None = None,
    times_min: Sequence[float] | None = None,
) -> StageResult:
    """Copy one FOV's phase-contrast and fluorescence frames into the store.

    Streams one frame at a time, so peak memory does not grow with the number of frames.
    Arrays already complete for the same input file (``input_key``, the
    :func:`~pyama_lib.io.identity.identity_key` of the acquisition; computed when not given),
    FOV, channel and code version are skipped.
    """
    acquisition.check_fov(fov)
    for c in channels.all:
        acquisition.check_channel(c)
    if input_key is None:
        input_key = identity_key(input_identity(acquisition.path))
    result = StageResult("copy", fov)
    start = time.perf_counter()
    if times_min is None:  # the plan has read them already; the file is asked only without it
        times_min = acquisition.frame_times(fov)
    store.describe_acquisition(acquisition.channel_names, acquisition.pixel_size_um, times_min)
    shape = (acquisition.n_frames, acquisition.height, acquisition.width)
    for kind, channel in [("pc", channels.pc)] + [("fl", c) for c in channels.fl]:
        name = array_name(kind, channel)
        source = {"source": acquisition.base_name, "fov": fov, "channel": channel, "shape": shape}
        marker = _marker(store, input_key, source)
        if store.is_complete(name, marker):
            result.skipped.append(name)
            continue
        with store.writer(name, shape, acquisition.dtype, marker) as arr:
            for t in range(acquisition.n_frames):
                arr[t : t + 1] = acquisition.frame(fov, channel, t)[None]
        result.written.append(name)
    result.seconds = time.perf_counter() - start
    return result


# Frames are written as 1-frame slabs (``arr[t : t + 1] = frame[None]``): a 2-D frame assigned
# to ``arr[t]`` makes zarr fill a new chunk and copy the frame into it first, a needless pass
# over every frame.


def _map_frames(
    store: FovStore,
    job: FovJob,
    result: StageResult,
    name: str,
    inputs: Sequence[str],
    dtype: Any,
    params: Any,
    fn: Callable[..., np.ndarray],
) -> None:
    """Write ``name[t] = fn(*(input[t] for input in inputs))`` frame by frame, unless complete."""
    marker = _marker(store, job.input_key, params.as_dict(), inputs)
    if store.is_complete(name, marker):
        result.skipped.append(name)
        return
    sources = [store.frames(n) for n in inputs]
    with store.writer(name, sources[0].shape, dtype, marker) as out:
        for t, frames in enumerate(zip(*sources, strict=True)):
            try:
                out[t : t + 1] = fn(*frames, params)[None]
            except InputDataError as exc:
                raise InputDataError(f"{store.array_path(name)}, frame {t}: {exc}") from exc
    result.written.append(name)


def _segment(job: FovJob, store: FovStore, result: StageResult, p: ProcessingParams) -> None:
    pc = array_name("pc", job.channels.pc)
    seg = array_name("seg", job.channels.pc)
    _map_frames(store, job, result, seg, [pc], bool, p.segmentation, segment_frame)


def _correct_checked(fl: np.ndarray, seg: np.ndarray, params: BackgroundParams) -> np.ndarray:
    corrected = correct_frame(fl, seg, params)
    # PyAMA writes an all-NaN frame when no background pixel is left; extraction could only
    # produce NaN traces from it, so stop here with the reason and the way out.
    if np.isnan(corrected).all():
        raise InputDataError(
            f"no background pixel left once cells are masked (dilated by "
            f"{params.dilation_size} px): the frame is too small or covered by cells. Process "
            "without background correction (--stages copy,segment,track,extract; traces then "
            "use the raw fluorescence)"
        )
    return corrected


def _corrected_marker(job: FovJob, store: FovStore, channel: int) -> dict[str, Any]:
    return _marker(
        store,
        job.input_key,
        job.params.background.as_dict(),
        [array_name("fl", channel), array_name("seg", job.channels.pc)],
    )


def corrected_is_current(job: FovJob, channel: int) -> bool:
    """True when the FOV's corrected stack of ``channel`` is complete AND was computed from
    the current fluorescence, segmentation and background parameters (what the correct stage
    would write now): a stale one (new input file, other segmentation) must not be measured."""
    store = job.store
    return store.is_complete(
        array_name("fl_corrected", channel), _corrected_marker(job, store, channel)
    )


def _correct(job: FovJob, store: FovStore, result: StageResult, p: ProcessingParams) -> None:
    seg = array_name("seg", job.channels.pc)
    for c in job.channels.fl:
        inputs = [array_name("fl", c), seg]
        name = array_name("fl_corrected", c)
        _map_frames(store, job, result, name, inputs, np.float32, p.background, _correct_checked)


def _track(job: FovJob, store: FovStore, result: StageResult, p: ProcessingParams) -> None:
    seg = array_name("seg", job.channels.pc)
    name = array_name("seg_labeled", job.channels.pc)
    params = p.tracking
    marker = _marker(store, job.input_key, params.as_dict(), [seg])
    if store.is_complete(name, marker):
        result.skipped.append(name)
        return
    masks = store.frames(seg)
    with store.writer(name, masks.shape, np.uint16, marker) as out:
        for t, labels in enumerate(track_frames(masks, params)):
            out[t : t + 1] = labels[None]
    result.written.append(name)


def _extract_tracks_only(
    job: FovJob, store: FovStore, result: StageResult, p: ProcessingParams
) -> None:
    """Without a fluorescence channel: the phase-contrast channel's Tracks table, no traces."""
    c = job.channels.pc
    labels_name = array_name("seg_labeled", c)
    key = f"tracks_ch_{c}"
    tracks = tracks_csv_path(job.output_dir, job.base_name, job.fov, c)
    marker = _marker(store, job.input_key, p.extraction.as_dict(), [labels_name])
    if store.is_output_complete(key, marker) and all(
        f.is_file() for f in (tracks, tracks.with_suffix(".parquet"))
    ):
        result.skipped.append(key)
        done = store.output_marker(key)
        cells, rows = done["cells"], done["rows"]
    else:
        df = cell_geometry(store.frames(labels_name), job.times_min, job.fov, p.extraction)
        store.unmark_output(key)
        write_tracks(df, tracks)
        cells, rows = int(df["cell"].nunique()), len(df)
        store.mark_output(key, marker, cells=cells, rows=rows)
        result.written.append(key)
    result.info = {"cells": {c: cells}, "rows": {c: rows}}


def _extract(job: FovJob, store: FovStore, result: StageResult, p: ProcessingParams) -> None:
    if not job.channels.fl:
        _extract_tracks_only(job, store, result, p)
        return
    labels_name = array_name("seg_labeled", job.channels.pc)
    params = p.extraction
    times = np.asarray(job.times_min)
    dataset = Path(job.output_dir) / PARQUET_DIR
    cells, rows, sources = {}, {}, {}
    for c in job.channels.fl:
        corrected = array_name("fl_corrected", c)
        # PyAMA measures the corrected stack when it exists, else the raw one; say so, since
        # raw traces carry the uneven illumination that correction removes. A corrected stack
        # of other inputs (a re-exported file, another segmentation) counts as absent.
        fl_name = corrected if corrected_is_current(job, c) else array_name("fl", c)
        sources[c] = fl_name
        if fl_name != corrected:
            if store.is_complete(corrected):
                state = "is stale (computed from other inputs or parameters)"
            elif store.array_path(corrected).exists():
                state = "is half-written"
            else:
                state = "does not exist"
            result.warnings.append(
                f"fov_{job.fov:03d} channel {c}: the background-corrected stack {corrected} "
                f"{state}; traces measure the raw fluorescence ({fl_name}). Run the correct "
                "stage first for corrected traces."
            )
        key = f"traces_ch_{c}"
        csv = traces_csv_path(job.output_dir, job.base_name, job.fov, c)
        partition = traces_partition_file(dataset, job.fov, c)
        tracks = tracks_csv_path(job.output_dir, job.base_name, job.fov, c)
        marker = _marker(store, job.input_key, params.as_dict(), [labels_name, fl_name])
        marker["times"] = [round(float(t), 6) for t in times]
        # Every file must still be there: the marker alone would keep a deleted CSV or
        # partition missing, and the CSV and the Parquet dataset would then disagree.
        files = (csv, partition, tracks, tracks.with_suffix(".parquet"))
        if store.is_output_complete(key, marker) and all(f.is_file() for f in files):
            result.skipped.append(key)
            done = store.output_marker(key)
            cells[c], rows[c] = done["cells"], done["rows"]
            continue
        df = extract_traces(
            store.frames(labels_name), store.frames(fl_name), times, job.fov, params
        )
        store.unmark_output(key)
        write_traces_csv(df, csv)
        write_traces_partition(df, dataset, job.fov, c, metadata={SOURCE_METADATA_KEY: fl_name})
        write_tracks(df, tracks)  # for napari's Tracks layer
        cells[c], rows[c] = int(df["cell"].nunique()), len(df)
        store.mark_output(key, marker, cells=cells[c], rows=rows[c], source=fl_name)
        result.written.append(key)
    result.info = {"cells": cells, "rows": rows, "sources": sources}


_STAGE_FUNCS: dict[str, Callable[[FovJob, FovStore, StageResult, ProcessingParams], None]] = {
    "segment": _segment,
    "correct": _correct,
    "track": _track,
    "extract": _extract,
}


def run_stage(stage: str, job: FovJob) -> StageResult:
    """Run one stage for the job's FOV and report what was written or skipped."""
    if stage not in STAGES:
        raise ParamsError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    start = time.perf_counter()
    if stage == "copy":
        with job.open() as acq:
            result = copy_fov(
                acq, job.fov, job.channels, job.store, job.input_key, times_min=job.times_min
            )
    else:
        result = StageResult(stage, job.fov)
        _STAGE_FUNCS[stage](job, job.store, result, job.params)
    # A stage that wrote an array listed it then (FovStore.writer); one that wrote none lists
    # what the store holds, which repairs a run killed between a marker and its listing.
    if not any(parse_array_name(name) for name in result.written):
        job.store.write_ngff_metadata()
    # The stage's whole time, for copy including opening and closing the acquisition.
    result.seconds = time.perf_counter() - start
    return result


def results_entries(
    plan: Plan, fovs: Sequence[int], run_id: str | None = None
) -> ProcessingResults:
    """The processing_results.yaml entries of ``fovs`` (files that exist on disk); with the
    ``run_id`` of the run (run.yaml) that processed them, recorded per FOV under
    :data:`~pyama_lib.io.results_yaml.RUN_OF_FOV`."""
    out = Path(plan.output_dir)
    results = ProcessingResults(
        output_dir=out,
        channels=plan.channels,
        params=plan.params.as_dict(),
    )
    if run_id is not None:
        results.extra[RUN_OF_FOV] = {int(fov): run_id for fov in fovs}
    pc = plan.channels.pc
    jobs = {job.fov: job for job in plan.jobs}
    for fov in fovs:
        store = jobs[fov].store
        entry: FovResults = results.fov(fov)
        for kind, channels in [
            ("pc", [pc]),
            ("seg", [pc]),
            ("seg_labeled", [pc]),
            ("fl", plan.channels.fl),
            ("fl_corrected", plan.channels.fl),
        ]:
            for c in channels:
                if kind == "fl_corrected":  # only one the traces could have measured
                    current = corrected_is_current(jobs[fov], c)
                else:
                    current = store.is_complete(array_name(kind, c))
                if current:
                    entry.put(kind, c, store.array_path(array_name(kind, c)))
        for c in plan.channels.fl:
            csv = traces_csv_path(out, plan.base_name, fov, c)
            if csv.is_file():
                entry.put("traces_csv", c, csv)
    return results
