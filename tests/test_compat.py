"""PyAMA's scripting API (flows.compat) on a real synthetic acquisition and real flow runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from flows.compat import (
    Channels,
    MicroscopyMetadata,
    ProcessingContext,
    load_microscopy_file,
    run_complete_workflow,
)
from pyama_lib.core import selection
from pyama_lib.core.errors import AcquisitionNotFoundError
from pyama_lib.synthetic.generator import make_synthetic

N_FOVS, N_FRAMES, SIZE, N_CELLS = 2, 32, 128, 4


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory: pytest.TempPathFactory):
    # 128 px / ceil(sqrt(4)) = 64 px grid spacing: every cell survives PyAMA's segmentation.
    return make_synthetic(
        tmp_path_factory.mktemp("compat_in"),
        n_fovs=N_FOVS,
        n_frames=N_FRAMES,
        size=SIZE,
        n_cells=N_CELLS,
        write_labels=False,
    )


@pytest.fixture(scope="module")
def metadata(acquisition) -> MicroscopyMetadata:
    image, md = load_microscopy_file(acquisition.path)
    image.close()
    return md


def test_channels_is_the_library_record() -> None:
    assert Channels is selection.Channels
    assert Channels(pc=0, fl=[1, 2]).fl == (1, 2)


def test_load_microscopy_file_returns_image_and_metadata(acquisition) -> None:
    image, md = load_microscopy_file(str(acquisition.path))
    with image:
        frame = image.frame(1, 1, 5)
        expected = tifffile.imread(acquisition.path, series=1)[5, 1]
        np.testing.assert_array_equal(frame, expected)
    assert md.file_path == Path(acquisition.path)
    assert md.base_name == "synthetic"
    assert md.file_type == "ome-tiff"
    assert (md.n_fovs, md.n_frames, md.n_channels) == (N_FOVS, N_FRAMES, 2)
    assert (md.height, md.width) == (SIZE, SIZE)
    assert md.channel_names == ["Phase", "GFP"]
    assert md.dtype == "uint16"
    # minutes, from the OME DeltaT the synthetic writer sets (10 min per frame)
    assert md.timepoints == pytest.approx([10.0 * t for t in range(N_FRAMES)])


def test_load_microscopy_file_missing(tmp_path: Path) -> None:
    with pytest.raises(AcquisitionNotFoundError, match="missing.nd2"):
        load_microscopy_file(tmp_path / "missing.nd2")


def test_run_complete_workflow_processes_and_fills_context(
    prefect_api, metadata: MicroscopyMetadata, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    context = ProcessingContext(output_dir=out, channels=Channels(pc=0, fl=[1]), params={})
    ok = run_complete_workflow(
        metadata, context, fov_start=0, fov_end=1, batch_size=2, n_workers=2, runner="thread"
    )
    assert ok is True
    assert (out / "processing_results.yaml").is_file()
    assert context.time_units == "min"
    assert sorted(context.results_paths) == [0, 1]
    for fov in (0, 1):
        entry = context.results_paths[fov]
        assert [ch for ch, _ in entry.traces_csv] == [1]
        csv = entry.traces_csv[0][1]
        assert csv == out / f"fov_{fov:03d}" / f"synthetic_fov_{fov:03d}_traces_ch_1.csv"
        df = pd.read_csv(csv)
        assert df["cell"].nunique() == N_CELLS
        assert len(df) == N_CELLS * N_FRAMES
        assert entry.seg_labeled is not None and entry.seg_labeled[0] == 0
        assert entry.seg_labeled[1].is_dir()


def test_run_complete_workflow_dict_context_and_fov_subset(
    prefect_api, metadata: MicroscopyMetadata, tmp_path: Path
) -> None:
    # PyAMA's earlier TypedDict context, and a one-FOV range
    context = {"output_dir": tmp_path / "out", "channels": {"pc": 0, "fl": [1]}, "params": {}}
    ok = run_complete_workflow(metadata, context, 1, 1, 1, 1, runner="thread")
    assert ok is True
    assert sorted(context["results_paths"]) == [1]
    assert not (tmp_path / "out" / "fov_000").exists()
    assert (tmp_path / "out" / "fov_001" / "synthetic_fov_001_traces_ch_1.csv").is_file()


def test_unguarded_pyama_script_runs_on_threads_with_a_warning(
    prefect_api, acquisition, tmp_path: Path
) -> None:
    """A PyAMA script calling run_complete_workflow at its top level (fine with PyAMA's fork
    workers on Linux) would be re-run by every stage worker: it runs on threads instead."""
    from prefect.settings import PREFECT_API_URL

    out = tmp_path / "out"
    script = tmp_path / "pyama_script.py"
    script.write_text(
        "from flows.compat import Channels, ProcessingContext, load_microscopy_file\n"
        "from flows.compat import run_complete_workflow\n"
        f"image, metadata = load_microscopy_file({str(acquisition.path)!r})\n"
        f"context = ProcessingContext(output_dir={str(out)!r}, channels=Channels(pc=0, fl=[1]))\n"
        "print('ok', run_complete_workflow(metadata, context, 0, 0, 1, 2))\n"
    )
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's test API
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "ok True"
    assert f"top level of {script}:5" in proc.stderr
    assert "runner='thread'" in proc.stderr
    df = pd.read_csv(out / "fov_000" / "synthetic_fov_000_traces_ch_1.csv")
    assert df["cell"].nunique() == N_CELLS


def test_invalid_fov_range_returns_false_before_writing(
    metadata: MicroscopyMetadata, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    context = ProcessingContext(output_dir=tmp_path / "out", channels=Channels(pc=0, fl=[1]))
    with caplog.at_level(logging.ERROR, logger="flows.compat"):
        ok = run_complete_workflow(metadata, context, fov_start=0, fov_end=N_FOVS)
    assert ok is False
    assert "Invalid FOV range: 0-2" in caplog.text
    assert not (tmp_path / "out").exists()


def test_missing_output_dir_returns_false(
    metadata: MicroscopyMetadata, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="flows.compat"):
        ok = run_complete_workflow(metadata, ProcessingContext(channels=Channels(pc=0, fl=[1])))
    assert ok is False
    assert "no output_dir" in caplog.text


def test_failing_run_returns_false_with_error_logged(
    prefect_api, metadata: MicroscopyMetadata, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # channel 3 does not exist: the flow's validation fails before any output is written
    out = tmp_path / "out"
    context = ProcessingContext(output_dir=out, channels=Channels(pc=0, fl=[3]), params={})
    with caplog.at_level(logging.ERROR, logger="flows.compat"):
        ok = run_complete_workflow(metadata, context, runner="thread")
    assert ok is False
    assert "Error in workflow pipeline" in caplog.text
    assert "channel 3 is out of range" in caplog.text
    assert not (out / "processing_results.yaml").exists()
    assert not (out / "fov_000").exists()
    assert context.results_paths is None
