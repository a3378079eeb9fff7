"""Per-FOV stages over the store (no Prefect): skipping, invalidation, parameters, edge cases."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from pyama_lib.core.errors import FovOutOfRangeError, ParamsError, ResultsFileError, StoreError
from pyama_lib.core.selection import STAGES, Channels
from pyama_lib.io.traces import (
    read_traces_csv,
    read_traces_parquet,
    traces_csv_path,
)
from pyama_lib.io.tracks import tracks_csv_path
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.processing_params import ProcessingParams, parse_params
from pyama_lib.pipeline.stages import run_stage
from pyama_lib.processing.extraction import ExtractionParams
from pyama_lib.processing.segmentation import SegmentationParams
from pyama_lib.processing.tracking import TrackingParams
from pyama_lib.synthetic.generator import make_synthetic


@pytest.fixture(scope="module")
def acq(tmp_path_factory):
    out = tmp_path_factory.mktemp("acq")
    return make_synthetic(out, n_fovs=2, n_frames=32, size=128, n_cells=4, n_fl=1, seed=7).path


def _job(acq, out, fov=0, params=None):
    return plan_jobs(acq, out, Channels(pc=0, fl=[1]), fovs=[fov], params=params).jobs[0]


def test_rerun_skips_and_upstream_change_redoes_downstream(acq, tmp_path):
    job = _job(acq, tmp_path)
    first = {s: run_stage(s, job) for s in STAGES}
    assert all(r.written and not r.skipped for r in first.values())
    assert first["extract"].info["cells"] == {1: 4}
    again = {s: run_stage(s, job) for s in STAGES}
    assert all(r.was_skipped for r in again.values())

    # New segmentation parameters: segment and everything after it is redone, copy is not.
    changed = _job(acq, tmp_path, params={"segmentation": {"n_sigma": 2.5}})
    redo = {s: run_stage(s, changed) for s in STAGES}
    assert redo["copy"].was_skipped
    assert all(redo[s].written for s in ("segment", "correct", "track", "extract"))


def test_extra_feature_changes_only_extraction(acq, tmp_path):
    job = _job(acq, tmp_path)
    for s in STAGES:
        run_stage(s, job)
    wider = _job(acq, tmp_path, params={"extraction": {"features": ["intensity_mean"]}})
    results = {s: run_stage(s, wider) for s in STAGES}
    assert [s for s, r in results.items() if r.written] == ["extract"]
    df = read_traces_csv(traces_csv_path(tmp_path, "synthetic", 0, 1))
    np.testing.assert_allclose(df.intensity_mean, df.intensity_total / df.area, rtol=1e-6)
    parquet = read_traces_parquet(tmp_path / "traces.parquet")
    assert "intensity_mean" in parquet.columns and len(parquet) == len(df)


def test_stage_without_its_input_names_what_to_run(acq, tmp_path):
    with pytest.raises(StoreError, match=r"seg_ch_0.*does not exist.*run the stage"):
        run_stage("track", _job(acq, tmp_path))


def test_fov_without_cells_gives_header_only_traces(acq, tmp_path):
    # min_area above any cell: tracking keeps nothing, extraction writes an empty table.
    job = _job(acq, tmp_path, params={"tracking": {"min_area": 10**6}})
    for s in STAGES:
        result = run_stage(s, job)
    assert result.info == {"cells": {1: 0}, "rows": {1: 0}, "sources": {1: "fl_corrected_ch_1"}}
    csv = traces_csv_path(tmp_path, "synthetic", 0, 1)
    assert csv.read_text().splitlines() == [
        "fov,cell,frame,time,good,position_x,position_y,intensity_total,area"
    ]
    assert read_traces_parquet(tmp_path / "traces.parquet").empty


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        (
            {"segmentaton": {}},
            "params.segmentaton: unknown parameter; allowed: segmentation, background",
        ),
        ({"tracking": {"min_iou": 2}}, r"tracking.min_iou: .*less than or equal to 1; given: 2"),
        ({"tracking": {"max_gap": 1.5}}, r"tracking.max_gap: .*valid integer; given: 1.5"),
        ({"tracking": {"min_area": 9, "max_area": 3}}, "min_area 9 exceeds max_area 3"),
        ({"tracking": {"min_iuo": 0.2}}, "tracking.min_iuo: unknown parameter; allowed: min_iou"),
        ({"extraction": {"features": ["nope"]}}, "unknown feature 'nope'"),
        ({"segmentation": {"filter_size": 4}}, "segmentation.filter_size: must be odd"),
        ({"background": {"tile_width": 2}}, "background.tile_width: .*greater than or equal to 4"),
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(acq, tmp_path, params, needle):
    with pytest.raises(ParamsError, match=needle):
        parse_params(params)
    with pytest.raises(ParamsError, match=needle):
        plan_jobs(acq, tmp_path, Channels(pc=0, fl=[1]), params=params)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("cls", "values", "needle"),
    [
        (TrackingParams, {"max_gap": 1.5}, "TrackingParams.max_gap: .*valid integer"),
        (TrackingParams, {"max_gap": True}, "TrackingParams.max_gap: .*valid integer"),
        (TrackingParams, {"min_area": "9"}, "TrackingParams.min_area: .*valid integer"),
        (TrackingParams, {"min_iou": -0.1}, "TrackingParams.min_iou"),
        (ExtractionParams, {"min_frames": -1}, "ExtractionParams.min_frames"),
        (ExtractionParams, {"features": ["nope"]}, "ExtractionParams.features: unknown feature"),
    ],
)
def test_every_parameter_class_raises_the_parameter_error(cls, values, needle):
    with pytest.raises(ParamsError, match=needle):
        cls(**values)


def test_parameters_are_parsed_once_into_typed_sections(acq, tmp_path):
    plan = plan_jobs(acq, tmp_path, Channels(pc=0, fl=[1]), params={"tracking": {"max_gap": 2}})
    assert isinstance(plan.params, ProcessingParams)
    assert all(job.params is plan.params for job in plan.jobs)  # parsed once, shared
    assert plan.jobs[0].params.tracking == TrackingParams(max_gap=2)
    assert plan.params.segmentation == SegmentationParams()  # defaults: PyAMA's


def test_fov_selection_outside_the_file_names_it(acq, tmp_path):
    with pytest.raises(FovOutOfRangeError, match=r"synthetic.ome.tif.*\[2, 3\]"):
        plan_jobs(acq, tmp_path, Channels(pc=0, fl=[1]), fovs="0, 2-3")
    # A huge range is refused by its ends, before it is expanded (that would fill the memory).
    with pytest.raises(FovOutOfRangeError, match=r"FOV\(s\) 2-3000000000 outside"):
        plan_jobs(acq, tmp_path, Channels(pc=0, fl=[1]), fovs="0-3000000000")


def test_stage_subset_then_rest_equals_one_pass(acq, tmp_path):
    one = _job(acq, tmp_path / "one")
    for s in STAGES:
        run_stage(s, one)
    split = _job(acq, tmp_path / "split")
    for s in STAGES[:2]:
        run_stage(s, split)
    assert not traces_csv_path(tmp_path / "split", "synthetic", 0, 1).exists()
    for s in STAGES[2:]:
        run_stage(s, split)
    pd.testing.assert_frame_equal(
        read_traces_csv(traces_csv_path(tmp_path / "split", "synthetic", 0, 1)),
        read_traces_csv(traces_csv_path(tmp_path / "one", "synthetic", 0, 1)),
    )


def test_missing_parquet_partition_is_rewritten(acq, tmp_path):
    """A deleted ``traces.parquet/fov=1`` is not taken as done: extract redoes that FOV only,
    and afterwards the Parquet dataset holds exactly the CSVs' rows again."""
    jobs = plan_jobs(acq, tmp_path, Channels(pc=0, fl=[1])).jobs
    for job in jobs:
        for s in STAGES:
            run_stage(s, job)
    dataset = tmp_path / "traces.parquet"
    shutil.rmtree(dataset / "fov=1")
    assert set(read_traces_parquet(dataset).fov) == {0}

    again = {job.fov: {s: run_stage(s, job) for s in STAGES} for job in jobs}
    assert all(r.was_skipped for r in again[0].values())
    assert [s for s, r in again[1].items() if r.written] == ["extract"]
    assert again[1]["extract"].info["cells"] == {1: 4}

    csv = pd.concat(
        read_traces_csv(traces_csv_path(tmp_path, "synthetic", fov, 1)) for fov in (0, 1)
    ).reset_index(drop=True)
    parquet = read_traces_parquet(dataset)
    assert list(parquet.channel.unique()) == [1] and len(csv) > 0
    pd.testing.assert_frame_equal(parquet.drop(columns="channel"), csv, atol=1e-6)


def test_extraction_killed_halfway_leaves_no_marker_over_mixed_files(acq, tmp_path):
    """Run A extracts; run B (another feature) dies after its CSV and Parquet, before its
    tracks table; run A again must redo extraction, not take its old marker as standing over
    B's traces."""
    job_a = _job(acq, tmp_path)
    for s in STAGES:
        run_stage(s, job_a)
    job_b = _job(acq, tmp_path, params={"extraction": {"features": ["intensity_mean"]}})
    tracks = tracks_csv_path(tmp_path, "synthetic", 0, 1)
    kept = tracks.read_bytes()
    tracks.unlink()
    tracks.mkdir()  # run B's tracks table cannot be written: B stops there
    (tracks / "keep").write_text("")
    with pytest.raises(ResultsFileError, match="cannot write the tracks table"):
        run_stage("extract", job_b)
    shutil.rmtree(tracks)
    tracks.write_bytes(kept)  # every file of the extract stage is present again
    assert "intensity_mean" in read_traces_csv(traces_csv_path(tmp_path, "synthetic", 0, 1))

    again = run_stage("extract", job_a)
    assert again.written and not again.skipped
    csv = read_traces_csv(traces_csv_path(tmp_path, "synthetic", 0, 1))
    assert "intensity_mean" not in csv.columns
    parquet = read_traces_parquet(tmp_path / "traces.parquet")
    pd.testing.assert_frame_equal(parquet.drop(columns="channel"), csv, atol=1e-6)
