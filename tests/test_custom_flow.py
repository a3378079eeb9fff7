"""The custom-workflow example (flows.reextract): extract again with extra features, for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.process import process_acquisition
from flows.reextract import reextract_with_features
from pyama_lib.core.errors import InputDataError, StoreError
from pyama_lib.io.results_yaml import load_results
from pyama_lib.io.store import FovStore
from pyama_lib.synthetic.generator import make_synthetic

N_FOVS, N_FRAMES, N_CELLS = 2, 32, 4
UPSTREAM = ("pc_ch_0", "fl_ch_1", "seg_ch_0", "seg_labeled_ch_0", "fl_corrected_ch_1")
EXTRA = ["intensity_mean", "local_background"]


def _csv(out: Path, fov: int) -> Path:
    return out / f"fov_{fov:03d}" / f"synthetic_fov_{fov:03d}_traces_ch_1.csv"


def _upstream_state(out: Path) -> dict[tuple[int, str], tuple[str | None, list[int]]]:
    """Fingerprint of every upstream array's completion marker and its files' mtimes."""
    state = {}
    for fov in range(N_FOVS):
        store = FovStore(out, "synthetic", fov)
        for name in UPSTREAM:
            files = sorted(store.array_path(name).rglob("*"))
            state[fov, name] = (store.fingerprint(name), [f.stat().st_mtime_ns for f in files])
    return state


def _check_local_background(out: Path, fov: int, traces: pd.DataFrame, frame: int) -> None:
    """Recompute the ring median (box grown by 10 px, minus the box and all cells) directly."""
    store = FovStore(out, "synthetic", fov)
    labels = store.frames("seg_labeled_ch_0")[frame]
    fl = store.frames("fl_corrected_ch_1")[frame]
    rows = traces[traces["frame"] == frame]
    assert len(rows) == N_CELLS
    for cell, value in zip(rows["cell"], rows["local_background"], strict=True):
        ys, xs = np.nonzero(labels == cell)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        ring = np.zeros(labels.shape, dtype=bool)
        ring[max(y0 - 10, 0) : y1 + 10, max(x0 - 10, 0) : x1 + 10] = True
        ring[y0:y1, x0:x1] = False
        ring &= labels == 0
        assert value == pytest.approx(float(np.median(fl[ring])), abs=1e-5)


@pytest.fixture(scope="module")
def processed(prefect_api, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("custom")
    info = make_synthetic(
        root / "in",
        n_fovs=N_FOVS,
        n_frames=N_FRAMES,
        size=128,
        n_cells=N_CELLS,
        write_labels=False,
    )
    out = root / "out"
    process_acquisition(str(info.path), str(out), runner="thread")
    return info.path, out


def test_reextract_adds_features_without_resegmenting(processed: tuple[Path, Path]) -> None:
    input_path, out = processed
    before = {fov: pd.read_csv(_csv(out, fov)) for fov in range(N_FOVS)}
    upstream = _upstream_state(out)
    assert all(fp is not None for fp, _ in upstream.values())

    summary = reextract_with_features(str(out), str(input_path), features=EXTRA, fl=[1])

    assert summary.stages == ["extract"]
    assert summary.fovs_done == [0, 1]
    # segmentation, tracking and correction were only read: markers and files unchanged
    assert _upstream_state(out) == upstream
    for fov in range(N_FOVS):
        old, new = before[fov], pd.read_csv(_csv(out, fov))
        assert list(new.columns) == [*old.columns, *EXTRA]
        assert list(old.columns[-2:]) == ["intensity_total", "area"]
        pd.testing.assert_frame_equal(new[old.columns], old)
        # the mean is the total over the area (CSV floats carry 6 decimals)
        np.testing.assert_allclose(
            new["intensity_mean"], new["intensity_total"] / new["area"], rtol=1e-5, atol=1e-5
        )
        assert new["local_background"].notna().all()
        _check_local_background(out, fov, new, frame=5)
    parquet = pd.read_parquet(out / "traces.parquet")
    assert set(EXTRA) <= set(parquet.columns)
    assert len(parquet) == N_FOVS * N_CELLS * N_FRAMES
    params = load_results(out).params
    assert params["extraction"]["features"] == EXTRA
    assert params["extraction"]["min_frames"] == 30  # the recorded parameters were kept


def test_reextract_refuses_folder_without_segmentation(
    processed: tuple[Path, Path], tmp_path: Path
) -> None:
    input_path, _ = processed
    out = tmp_path / "empty"
    with pytest.raises(StoreError, match=r"fov_000 \(seg_labeled_ch_0, fl_ch_1\)"):
        reextract_with_features(str(out), str(input_path), features=["intensity_mean"])
    assert not _csv(out, 0).exists()
    assert not (out / "processing_results.yaml").exists()


def test_reextract_unknown_feature(processed: tuple[Path, Path]) -> None:
    input_path, out = processed
    before = _csv(out, 0).read_bytes()
    with pytest.raises(InputDataError, match="unknown feature 'intensity_maxx'"):
        reextract_with_features(str(out), str(input_path), features=["intensity_maxx"])
    assert _csv(out, 0).read_bytes() == before


def test_reextract_reuses_the_recorded_input_channels_and_reader_options(
    prefect_api, nd2_dir: Path, tmp_path: Path
) -> None:
    """cluster.nd2 records no time-loop period (nominal times all 0): processed with measured
    times, a re-extraction given only the folder keeps the measured times, the input and the
    channels of the run record."""
    from pyama_lib.io import open_acquisition
    from pyama_lib.io.traces import read_traces_csv, traces_csv_path

    source, out = nd2_dir / "cluster.nd2", tmp_path / "out"
    process_acquisition(
        str(source),
        str(out),
        fl=[1],
        stages=["copy", "segment", "track", "extract"],
        params={"extraction": {"min_frames": 1}},
        reader_options={"times": "measured"},
        runner="thread",
    )
    # No correct stage: the traces measured the raw fluorescence, and the run record says so.
    from pyama_lib.pipeline.run_record import load_run_yaml

    assert load_run_yaml(out)[-1].summary["fl_sources"] == {0: {1: "fl_ch_1"}}
    with open_acquisition(source, times="measured") as acq:
        measured = acq.frame_times(0)
    assert measured.max() > 0  # nominal times would all be 0

    summary = reextract_with_features(str(out), features=["intensity_mean"])

    traces = read_traces_csv(traces_csv_path(out, "cluster", 0, 1))
    assert len(traces) > 0 and "intensity_mean" in traces.columns
    by_frame = traces.groupby("frame")["time"].first()
    np.testing.assert_allclose(by_frame.to_numpy(), measured[by_frame.index], atol=1e-6)
    assert summary.input_path == str(source)
    assert list(summary.fovs[0].cells) == [1]  # the recorded fluorescence channel
