"""Runs without a fluorescence channel (issue 26): ``fl=[]`` / ``--fl none``, a one-channel
acquisition that needs no ``--fl``, and what merge, fit and view make of such an output.

Real inputs, read in place: the E. coli agar-pad TIFF sequence (shared/data/real/ecoli-agarpad:
c1 phase contrast, c2 fluorescence, 60 frames of 331 x 362), processed with ``fl=[]``; the
one-channel ND2 arcadia-example-timelapse.nd2 (53 frames, GFP) and the two-channel
arcadia-example-cerevisiae.nd2 (DIC + FITC) from shared/data/nd2. Made: the expected areas and
positions, computed here from the stored labels with numpy; the synthetic two-channel run of
tests/runs.py for the unchanged default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
import zarr

from flows.cli.main import main as cli_main
from flows.cli.options import add_processing_arguments, processing_options
from flows.pipeline import NO_ANALYSIS, pyama_pipeline_flow
from flows.process import process_acquisition
from pyama_lib.core.errors import ChannelOutOfRangeError, ParamsError
from pyama_lib.core.selection import Channels
from pyama_lib.io.results_yaml import load_results
from pyama_lib.io.store import FovStore
from pyama_lib.io.tracks import tracks_csv_path
from pyama_lib.pipeline.phase_only import is_phase_only_output
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.run_record import load_run_yaml
from pyama_lib.view.layers import fov_layers
from tests.runs import processed_run

BASE = "ecoli-agarpad"


@pytest.fixture(scope="module")
def ecoli(nd2_dir) -> Path:
    folder = nd2_dir.parent / "real" / "ecoli-agarpad"
    if not folder.is_dir():
        pytest.fail(f"shared real test data not found at {folder}; set PYAMA_SHARED")
    return folder


@pytest.fixture(scope="module")
def phase_only(prefect_api, ecoli, tmp_path_factory):
    """``process_acquisition(..., fl=[])``: a real Prefect run on the real phase contrast."""
    out = tmp_path_factory.mktemp("phase") / "out"
    summary = process_acquisition(str(ecoli), str(out), fl=[], n_workers=2, runner="thread")
    return out, summary


def test_only_the_phase_contrast_is_copied_segmented_and_tracked(phase_only, ecoli):
    out, summary = phase_only
    assert summary.fovs_done == [0] and not summary.fovs_failed
    store = FovStore(out, BASE, 0)
    arrays = {p.name for p in store.path.iterdir() if p.is_dir()}
    assert {"pc_ch_0", "seg_ch_0"} <= arrays
    assert not [a for a in arrays if a.startswith("fl")]  # no fl_ch_*, no fl_corrected_ch_*
    assert store.is_complete("seg_labeled_ch_0")
    pc = store.frames("pc_ch_0")
    assert pc.shape == (60, 331, 362)
    # frame 6 against the file itself (t007, c1), read with tifffile
    expected = tifffile.imread(ecoli / "2014_05_30_controlagaint007xy1c1.tif")
    np.testing.assert_array_equal(pc[6], expected)
    # no traces: neither PyAMA's CSVs nor the Parquet dataset
    assert not list(out.rglob("*traces*"))
    tracks = tracks_csv_path(out, BASE, 0, 0)
    assert tracks.is_file() and tracks.with_suffix(".parquet").is_file()
    assert sorted(p.name for p in (out / "fov_000").glob("*tracks*")) == [
        f"{BASE}_fov_000_tracks_ch_0.csv",
        f"{BASE}_fov_000_tracks_ch_0.parquet",
    ]


def test_the_tracks_table_holds_the_labels_positions_and_areas(phase_only):
    out, _ = phase_only
    table = pd.read_csv(tracks_csv_path(out, BASE, 0, 0))
    assert list(table.columns) == ["track_id", "t", "y", "x", "good", "area"]
    pd.testing.assert_frame_equal(
        table, pd.read_parquet(tracks_csv_path(out, BASE, 0, 0).with_suffix(".parquet"))
    )
    labels = zarr.open_array(FovStore(out, BASE, 0).array_path("seg_labeled_ch_0"), mode="r")[:]
    # the cells PyAMA keeps: those present in at least 30 frames (min_frames)
    frames_of = {i: int(sum((labels[t] == i).any() for t in range(60))) for i in np.unique(labels)}
    kept = sorted(i for i, n in frames_of.items() if i != 0 and n >= 30)
    assert kept and sorted(table["track_id"].unique()) == kept
    for row in table.sample(n=min(40, len(table)), random_state=0).itertuples():
        rows, cols = np.nonzero(labels[row.t] == row.track_id)
        assert row.area == rows.size
        assert row.y == pytest.approx((rows.min() + rows.max()) / 2)
        assert row.x == pytest.approx((cols.min() + cols.max()) / 2)
    assert len(table) == sum(frames_of[i] for i in kept)  # one row per cell and frame


def test_the_results_yaml_lists_no_fluorescence(phase_only):
    out, _ = phase_only
    data = yaml.safe_load((out / "processing_results.yaml").read_text())
    # PyAMA's keys in its order (run_of_fov is ours; PyAMA's reader ignores it)
    pyama_keys = ["output_dir", "channels", "results_paths", "params", "time_units"]
    assert list(data) == [*pyama_keys, "run_of_fov"]
    assert data["channels"] == {"pc": 0, "fl": []}
    fov = data["results_paths"]["0"]  # PyAMA's keys, all present, the fluorescence ones empty
    assert list(fov) == ["pc", "fl", "seg", "seg_labeled", "fl_corrected", "traces_csv"]
    assert fov["fl"] == [] and fov["fl_corrected"] == [] and fov["traces_csv"] == []
    assert fov["pc"][0] == 0 and Path(fov["pc"][1]).name == "pc_ch_0"
    assert fov["seg_labeled"][0] == 0
    results = load_results(out)
    assert results.channels == Channels(pc=0, fl=())
    assert is_phase_only_output(out)


def test_the_log_summary_and_run_record_say_phase_contrast_only(phase_only):
    out, summary = phase_only
    note = "phase contrast only (channel 0): no fluorescence channel was given (fl: [])"
    assert note in str(summary)
    run = load_run_yaml(out)[-1]
    assert run.parameters["channels"] == {"pc": 0, "fl": []}
    assert run.summary["notes"][0].startswith(note)
    table = pd.read_csv(tracks_csv_path(out, BASE, 0, 0))
    cells, rows = table["track_id"].nunique(), len(table)
    assert summary.table() == [
        {"fov": 0, "channel": 0, "status": "done", "cells": cells, "trace_rows": rows}
    ]


@pytest.mark.parametrize("command", ["merge", "fit"])
def test_merge_and_fit_say_there_is_nothing_to_do(phase_only, command, capsys):
    out, _ = phase_only
    assert cli_main([command, str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0  # one line
    assert err.startswith(f"pyama {command}: error: {out}: processed without a fluorescence")
    assert f"nothing to {command}" in err
    assert not (out / "merged").exists()


def test_view_layers_show_the_segmentation_and_tracks(phase_only):
    """The layers pyama view opens, built without a screen."""
    out, _ = phase_only
    view = fov_layers(out, 0)
    assert [(kw["name"], kind) for _, kw, kind in view.layers] == [
        ("pc_ch_0 (c1)", "image"),
        ("seg_labeled_ch_0", "labels"),
        ("tracks (ch 0)", "tracks"),
    ]
    assert view.tracks_channel == 0
    points = view.layers[2][0]
    table = pd.read_csv(tracks_csv_path(out, BASE, 0, 0))
    np.testing.assert_array_equal(points, table[["track_id", "t", "y", "x"]].to_numpy(float))


def test_a_one_channel_acquisition_needs_no_fl(prefect_api, nd2_dir, tmp_path):
    """The whole pipeline on a real one-channel ND2, fl not given: its channel is the phase
    contrast; nothing to merge or fit, said once."""
    out = tmp_path / "out"
    summary = pyama_pipeline_flow(
        str(nd2_dir / "arcadia-example-timelapse.nd2"), str(out), runner="thread"
    )
    assert summary.merge is None and summary.fit is None
    assert str(summary).endswith(NO_ANALYSIS)
    assert "phase contrast only (channel 0): the acquisition has a single channel" in str(summary)
    assert load_results(out).channels == Channels(pc=0, fl=())
    assert not (out / "merged").exists() and not list(out.rglob("*traces*"))
    assert tracks_csv_path(out, "arcadia-example-timelapse", 0, 0).is_file()
    # a fluorescence channel asked for explicitly is still refused: there is none
    with pytest.raises(ChannelOutOfRangeError, match="channel 1 is out of range"):
        plan_jobs(nd2_dir / "arcadia-example-timelapse.nd2", tmp_path / "o2", Channels(fl=[1]))


def test_two_channels_keep_the_default_fluorescence_channel_1(nd2_dir, tmp_path):
    plan = plan_jobs(
        nd2_dir / "arcadia-example-cerevisiae.nd2", tmp_path / "o", Channels(), default_fl=True
    )
    assert plan.channels == Channels(pc=0, fl=(1,)) and plan.notes == []


def test_an_existing_two_channel_run_is_unchanged(tmp_path):
    out = processed_run(tmp_path, n_fovs=1)
    names = sorted(p.name for p in (out / "fov_000").iterdir() if p.is_file())
    assert names == sorted(
        f"synthetic_fov_000_{kind}_ch_{c}.{ext}"
        for kind, ext in (("traces", "csv"), ("tracks", "csv"), ("tracks", "parquet"))
        for c in (1, 2)
    )
    assert load_results(out).channels == Channels(pc=0, fl=(1, 2))
    assert not is_phase_only_output(out)


@pytest.mark.parametrize(
    ("argv", "fl"),
    [
        ([], None),
        (["--fl", "none"], []),
        (["--fl", "None"], []),
        (["--fl", "2", "--fl", "1"], [2, 1]),
    ],
)
def test_fl_option(argv, fl):
    parser = argparse.ArgumentParser()
    add_processing_arguments(parser)
    assert processing_options(parser.parse_args(argv))["fl"] == fl


def test_fl_none_with_channels_and_a_typo_are_refused(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_processing_arguments(parser)
    with pytest.raises(ParamsError, match="--fl none and --fl 1 contradict"):
        processing_options(parser.parse_args(["--fl", "none", "--fl", "1"]))
    assert cli_main(["process", str(tmp_path / "x.nd2"), "-o", str(tmp_path), "--fl", "nne"]) == 2
    assert "'nne' is no channel: give a channel number, or none" in capsys.readouterr().err
