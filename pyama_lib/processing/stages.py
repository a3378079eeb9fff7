"""Per-FOV stages over the Zarr store.

Each stage reads its inputs from the store (or, for ``copy``, the acquisition), streams frame by
frame through the array functions, writes its outputs and marks them complete last. Outputs that
are already complete for the same inputs and parameters are skipped. A completion marker holds
the stage's parameters, the pyama-flow version and a fingerprint of every input's own marker, so
re-running an upstream stage (other parameters, new input file) invalidates what depends on it.

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
from pyama_lib.config import STAGES, Channels, select_fovs
from pyama_lib.errors import FovOutOfRangeError, InputDataError, ParamsError
from pyama_lib.io.acquisition import Acquisition, open_acquisition
from pyama_lib.io.results_yaml import Channels as ResultsChannels
from pyama_lib.io.results_yaml import FovResults, ProcessingResults
from pyama_lib.io.store import FovStore, array_name
from pyama_lib.io.traces import (
    PARQUET_DIR,
    traces_csv_path,
    traces_partition_file,
    write_traces_csv,
    write_traces_partition,
)
from pyama_lib.processing.background import BackgroundParams, correct_frame
from pyama_lib.processing.extraction import ExtractionParams, extract_traces
from pyama_lib.processing.features import resolve_features
from pyama_lib.processing.segmentation import SegmentationParams, segment_frame
from pyama_lib.processing.tracking import TrackingParams, track_frames
from pyama_lib.provenance import identity_key, input_identity

_PARAM_SECTIONS: dict[str, type] = {
    "segmentation": SegmentationParams,
    "background": BackgroundParams,
    "tracking": TrackingParams,
    "extraction": ExtractionParams,
}


def parse_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per-stage parameter objects from ``{"segmentation": {...}, "tracking": {...}, ...}``.

    Missing sections take PyAMA's defaults; unknown sections or names raise
    :class:`ParamsError` listing what is allowed.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(_PARAM_SECTIONS))
    if unknown:
        raise ParamsError(
            f"unknown parameter section(s) {unknown}; allowed: {', '.join(_PARAM_SECTIONS)}"
        )
    out = {}
    for section, cls in _PARAM_SECTIONS.items():
        values = params.get(section) or {}
        allowed = set(cls.__dataclass_fields__)
        bad = sorted(set(values) - allowed)
        if bad:
            raise ParamsError(
                f"unknown {section} parameter(s) {bad}; allowed: {', '.join(sorted(allowed))}"
            )
        try:
            out[section] = cls(**values)
        except (TypeError, ValueError) as exc:
            raise ParamsError(f"bad {section} parameters {values}: {exc}") from None
    try:  # an unknown feature would otherwise surface only in extract, after the heavy stages
        resolve_features(out["extraction"].features)
    except InputDataError as exc:
        raise ParamsError(f"bad extraction parameters: {exc}") from None
    return out


@dataclass(frozen=True)
class FovJob:
    """Everything a stage needs for one FOV; small and picklable (paths, not arrays)."""

    input_path: str
    output_dir: str
    base_name: str
    fov: int
    channels: Channels
    input_key: str
    times_min: tuple[float, ...]  # the FOV's frame times, read once while planning
    params: dict[str, Any] = field(default_factory=dict)
    reader_options: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> FovStore:
        return FovStore(self.output_dir, self.base_name, self.fov)

    def open(self) -> Acquisition:
        return open_acquisition(self.input_path, **self.reader_options)


@dataclass(frozen=True)
class Plan:
    """A validated run: the acquisition's facts and one job per selected FOV."""

    input_path: str
    output_dir: str
    base_name: str
    channels: Channels
    params: dict[str, Any]
    jobs: list[FovJob]
    n_frames: int
    shape: tuple[int, int]
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "input_path": self.input_path,
            "output_dir": self.output_dir,
            "channels": {"pc": self.channels.pc, "fl": list(self.channels.fl)},
            "fovs": [j.fov for j in self.jobs],
            "params": {k: v.as_dict() for k, v in parse_params(self.params).items()},
        }


def plan_jobs(
    input_path: str | Path,
    output_dir: str | Path,
    channels: Channels,
    fov_start: int = -1,
    fov_end: int = -1,
    fovs: str | Sequence[int] | None = None,
    params: Mapping[str, Any] | None = None,
    reader_options: Mapping[str, Any] | None = None,
) -> Plan:
    """Validate the input, channels, FOV selection and parameters; write nothing."""
    parse_params(params)
    reader_options = dict(reader_options or {})
    with open_acquisition(input_path, **reader_options) as acq:
        for c in channels.all:
            acq.check_channel(c)
        try:
            selected = select_fovs(acq.n_fovs, fov_start, fov_end, fovs)
        except (IndexError, ValueError) as exc:
            raise FovOutOfRangeError(acq.path, str(exc)) from None
        key = identity_key(input_identity(acq.path))
        jobs = [
            FovJob(
                str(acq.path),
                str(output_dir),
                acq.base_name,
                fov,
                channels,
                key,
                tuple(float(t) for t in acq.frame_times(fov)),
                dict(params or {}),
                reader_options,
            )
            for fov in selected
        ]
        warnings = []
        times = jobs[0].times_min
        if acq.n_frames > 1 and max(times) == min(times):
            # Some ND2 time loops record no period (cluster.nd2): every nominal time is 0 and
            # the fitted kinetics would be meaningless.
            warnings.append(
                f"{acq.path}: all {acq.n_frames} frame times are {times[0]:g} min (the file "
                "records no time-loop period); use the reader option times='measured' "
                "(pyama process --times measured) for the microscope's time stamps"
            )
        return Plan(
            str(acq.path),
            str(output_dir),
            acq.base_name,
            channels,
            dict(params or {}),
            jobs,
            acq.n_frames,
            acq.shape,
            warnings,
        )


@dataclass
class StageResult:
    """What one stage did for one FOV: arrays written and skipped, timing, small facts."""

    stage: str
    fov: int
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def was_skipped(self) -> bool:
        return not self.written

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _marker(store: FovStore, job: FovJob, params: Any, inputs: Sequence[str]) -> dict[str, Any]:
    # The cache key of an output: what it was computed from and how.
    return {
        "params": params,
        "version": __version__,
        "input": job.input_key,
        "inputs": {name: store.fingerprint(name) for name in inputs},
    }


def copy_fov(
    acquisition: Acquisition, fov: int, channels: Channels, store: FovStore
) -> StageResult:
    """Copy one FOV's phase-contrast and fluorescence frames into the store.

    Streams one frame at a time, so peak memory does not grow with the number of frames.
    Arrays already complete for the same source are skipped.
    """
    acquisition.check_fov(fov)
    for c in channels.all:
        acquisition.check_channel(c)
    result = StageResult("copy", fov)
    start = time.perf_counter()
    shape = (acquisition.n_frames, acquisition.height, acquisition.width)
    for kind, channel in [("pc", channels.pc)] + [("fl", c) for c in channels.fl]:
        name = array_name(kind, channel)
        params = {"source": acquisition.base_name, "fov": fov, "channel": channel, "shape": shape}
        if store.is_complete(name, params):
            result.skipped.append(name)
            continue
        with store.writer(name, shape, acquisition.dtype, params) as arr:
            for t in range(acquisition.n_frames):
                arr[t] = acquisition.frame(fov, channel, t)
        result.written.append(name)
    result.seconds = time.perf_counter() - start
    return result


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
    marker = _marker(store, job, params.as_dict(), inputs)
    if store.is_complete(name, marker):
        result.skipped.append(name)
        return
    sources = [store.frames(n) for n in inputs]
    with store.writer(name, sources[0].shape, dtype, marker) as out:
        for t, frames in enumerate(zip(*sources, strict=True)):
            try:
                out[t] = fn(*frames, params)
            except InputDataError as exc:
                raise InputDataError(f"{store.path / name}, frame {t}: {exc}") from exc
    result.written.append(name)


def _segment(job: FovJob, store: FovStore, result: StageResult, p: dict[str, Any]) -> None:
    pc = array_name("pc", job.channels.pc)
    seg = array_name("seg", job.channels.pc)
    _map_frames(store, job, result, seg, [pc], bool, p["segmentation"], segment_frame)


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


def _correct(job: FovJob, store: FovStore, result: StageResult, p: dict[str, Any]) -> None:
    seg = array_name("seg", job.channels.pc)
    for c in job.channels.fl:
        inputs = [array_name("fl", c), seg]
        name = array_name("fl_corrected", c)
        _map_frames(store, job, result, name, inputs, np.float32, p["background"], _correct_checked)


def _track(job: FovJob, store: FovStore, result: StageResult, p: dict[str, Any]) -> None:
    seg = array_name("seg", job.channels.pc)
    name = array_name("seg_labeled", job.channels.pc)
    params: TrackingParams = p["tracking"]
    marker = _marker(store, job, params.as_dict(), [seg])
    if store.is_complete(name, marker):
        result.skipped.append(name)
        return
    masks = store.frames(seg)
    with store.writer(name, masks.shape, np.uint16, marker) as out:
        for t, labels in enumerate(track_frames(masks, params)):
            out[t] = labels
    result.written.append(name)


def _extract(job: FovJob, store: FovStore, result: StageResult, p: dict[str, Any]) -> None:
    labels_name = array_name("seg_labeled", job.channels.pc)
    params: ExtractionParams = p["extraction"]
    times = np.asarray(job.times_min)
    dataset = Path(job.output_dir) / PARQUET_DIR
    cells, rows = {}, {}
    for c in job.channels.fl:
        corrected = array_name("fl_corrected", c)
        # PyAMA measures the corrected stack when it exists, else the raw one.
        fl_name = corrected if store.is_complete(corrected) else array_name("fl", c)
        key = f"traces_ch_{c}"
        csv = traces_csv_path(job.output_dir, job.base_name, job.fov, c)
        partition = traces_partition_file(dataset, job.fov, c)
        marker = _marker(store, job, params.as_dict(), [labels_name, fl_name])
        marker["times"] = [round(float(t), 6) for t in times]
        # Both files must still be there: the marker alone would keep a deleted CSV or
        # partition missing, and the CSV and the Parquet dataset would then disagree.
        if store.is_output_complete(key, marker) and csv.is_file() and partition.is_file():
            result.skipped.append(key)
            done = store.output_marker(key)
            cells[c], rows[c] = done["cells"], done["rows"]
            continue
        df = extract_traces(
            store.frames(labels_name), store.frames(fl_name), times, job.fov, params
        )
        write_traces_csv(df, csv)
        write_traces_partition(df, dataset, job.fov, c)
        cells[c], rows[c] = int(df["cell"].nunique()), len(df)
        store.mark_output(key, marker, cells=cells[c], rows=rows[c])
        result.written.append(key)
    result.info = {"cells": cells, "rows": rows}


_STAGE_FUNCS: dict[str, Callable[[FovJob, FovStore, StageResult, dict[str, Any]], None]] = {
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
            result = copy_fov(acq, job.fov, job.channels, job.store)
    else:
        result = StageResult(stage, job.fov)
        _STAGE_FUNCS[stage](job, job.store, result, parse_params(job.params))
    # The stage's whole time, for copy including opening and closing the acquisition.
    result.seconds = time.perf_counter() - start
    return result


def results_entries(plan: Plan, fovs: Sequence[int]) -> ProcessingResults:
    """The processing_results.yaml entries of ``fovs`` (files that exist on disk)."""
    out = Path(plan.output_dir)
    results = ProcessingResults(
        output_dir=out,
        channels=ResultsChannels(pc=plan.channels.pc, fl=list(plan.channels.fl)),
        params={k: v.as_dict() for k, v in parse_params(plan.params).items()},
    )
    pc = plan.channels.pc
    for fov in fovs:
        store = FovStore(out, plan.base_name, fov)
        entry: FovResults = results.fov(fov)
        for kind, channels in [
            ("pc", [pc]),
            ("seg", [pc]),
            ("seg_labeled", [pc]),
            ("fl", plan.channels.fl),
            ("fl_corrected", plan.channels.fl),
        ]:
            for c in channels:
                if store.is_complete(array_name(kind, c)):
                    entry.put(kind, c, store.path / array_name(kind, c))
        for c in plan.channels.fl:
            csv = traces_csv_path(out, plan.base_name, fov, c)
            if csv.is_file():
                entry.put("traces_csv", c, csv)
    return results
