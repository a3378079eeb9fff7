"""Synthetic acquisition: determinism, ground truth consistency, and the ``pyama`` CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import ndimage as ndi
from scipy.integrate import solve_ivp

from flows.cli.main import main
from pyama_lib.core.errors import InputDataError
from pyama_lib.io import open_acquisition
from pyama_lib.synthetic.cells import maturation
from pyama_lib.synthetic.generator import SyntheticInfo, make_synthetic

N_FRAMES, SIZE, N_CELLS = 6, 192, 9
# Hourly frames: totals grow large enough within 6 frames for the pixel-sum check to bite.
KWARGS = {"n_fovs": 2, "n_frames": N_FRAMES, "size": SIZE, "n_cells": N_CELLS, "n_fl": 2}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SyntheticInfo:
    return make_synthetic(tmp_path_factory.mktemp("synth"), seed=11, interval_min=60.0, **KWARGS)


def _log_std_mask(image: np.ndarray) -> np.ndarray:
    """The log-std threshold (mode + 3σ), without the morphology."""
    x = image.astype(np.float32)
    mean = ndi.uniform_filter(x, 3)
    var = ndi.uniform_filter(x * x, 3) - mean * mean
    log_std = np.where(var > 0, 0.5 * np.log(np.where(var > 0, var, 1.0)), 0.0)
    counts, edges = np.histogram(log_std, 200)
    mode = 0.5 * (edges[counts.argmax()] + edges[counts.argmax() + 1])
    return log_std > mode + 3 * log_std[log_std <= mode].std()


def _pyama_segmentation(image: np.ndarray) -> np.ndarray:
    """Log-std mask, fill holes, opening then closing by a 19×19 square (3 × 7×7)."""
    mask = ndi.binary_fill_holes(_log_std_mask(image))
    square = np.ones((19, 19), bool)
    mask = ndi.binary_dilation(ndi.binary_erosion(mask, square, border_value=0), square)
    return ndi.binary_erosion(ndi.binary_dilation(mask, square), square, border_value=0)


def _labels(info: SyntheticInfo, fov: int) -> np.ndarray:
    return zarr.open_group(info.labels_path, mode="r")[f"fov_{fov:03d}"][:]


def test_layout_and_metadata(synth: SyntheticInfo) -> None:
    assert synth.path.name == "synthetic.ome.tif"
    assert synth.channel_names == ("Phase", "GFP", "mCherry")
    with open_acquisition(synth.path) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (2, N_FRAMES, 3)
        assert acq.shape == (SIZE, SIZE) and acq.dtype == np.uint16
        assert acq.channel_names == ["Phase", "GFP", "mCherry"]
        np.testing.assert_allclose(acq.frame_times(1), np.arange(N_FRAMES) * 60.0)
    cells = pd.read_csv(synth.cells_csv)
    assert len(cells) == 2 * N_CELLS * 2  # fov × cell × fluorescence channel
    assert set(cells["channel"]) == {1, 2}
    assert (cells.loc[~cells["expresses"], "ktl"] == 0).all()
    assert cells["expresses"].any() and not cells["expresses"].all()
    assert cells["t0"].between(0, 1).all() and (cells["delta"] > cells["beta"]).all()
    assert _labels(synth, 0).shape == (N_FRAMES, SIZE, SIZE)


def test_same_seed_same_data_different_seed_differs(tmp_path: Path, synth: SyntheticInfo) -> None:
    again = make_synthetic(tmp_path / "a", seed=11, interval_min=60.0, **KWARGS)
    other = make_synthetic(tmp_path / "b", seed=12, interval_min=60.0, **KWARGS)
    assert again.cells_csv.read_bytes() == synth.cells_csv.read_bytes()
    assert again.traces_csv.read_bytes() == synth.traces_csv.read_bytes()
    assert other.cells_csv.read_bytes() != synth.cells_csv.read_bytes()
    np.testing.assert_array_equal(_labels(again, 1), _labels(synth, 1))
    with (
        open_acquisition(synth.path) as ref,
        open_acquisition(again.path) as same,
        open_acquisition(other.path) as diff,
    ):
        for fov, c, t in [(0, 0, 0), (1, 2, N_FRAMES - 1), (1, 1, 3)]:
            np.testing.assert_array_equal(same.frame(fov, c, t), ref.frame(fov, c, t))
            assert not np.array_equal(diff.frame(fov, c, t), ref.frame(fov, c, t))


def test_labels_match_phase_contrast_blobs(synth: SyntheticInfo) -> None:
    with open_acquisition(synth.path) as acq:
        for fov in range(2):
            labels = _labels(synth, fov)
            for t in (0, N_FRAMES - 1):
                phase, truth = acq.frame(fov, 0, t), labels[t]
                assert set(np.unique(truth)) == set(range(N_CELLS + 1))
                # Every body pixel has high local variance; little else does.
                covered = ndi.mean(_log_std_mask(phase), truth, np.arange(1, N_CELLS + 1))
                assert covered.min() > 0.98
                far = ~ndi.binary_dilation(truth > 0, iterations=4)
                assert _log_std_mask(phase)[far].mean() < 0.01
                # PyAMA's full segmentation keeps each cell as exactly one blob.
                blobs, n_blobs = ndi.label(_pyama_segmentation(phase))
                pairs = set(zip(blobs[truth > 0].tolist(), truth[truth > 0].tolist(), strict=True))
                assert n_blobs == N_CELLS
                assert len(pairs - {(0, cell) for cell in range(N_CELLS + 1)}) == N_CELLS


def test_cells_drift_slowly(synth: SyntheticInfo) -> None:
    labels = _labels(synth, 0)
    for t in range(N_FRAMES - 1):
        for cell in range(1, N_CELLS + 1):
            a, b = labels[t] == cell, labels[t + 1] == cell
            assert (a & b).sum() / (a | b).sum() > 0.7
    traces = pd.read_csv(synth.traces_csv)
    per_cell = traces.groupby(["fov", "cell", "channel"])
    moved = np.hypot(
        per_cell["position_x"].agg(np.ptp), per_cell["position_y"].agg(np.ptp)
    ).to_numpy()
    assert moved.max() <= 2.0 + 1e-9 and moved.min() > 0.3


def test_truth_traces_match_model_labels_and_pixels(synth: SyntheticInfo) -> None:
    traces = pd.read_csv(synth.traces_csv)
    cells = pd.read_csv(synth.cells_csv)
    assert len(traces) == 2 * N_CELLS * N_FRAMES * 2
    merged = traces.merge(cells, on=["fov", "cell", "channel"])
    silent = merged[~merged["expresses"]]
    assert len(silent) > 0 and (silent["intensity_total"] == 0).all()
    params = [merged[p].to_numpy() for p in ("t0", "ktl", "km", "delta", "beta")]
    expected = maturation(merged["time"].to_numpy() / 60.0, *params)
    np.testing.assert_allclose(merged["intensity_total"], expected, rtol=1e-12)
    started = merged["expresses"] & (merged["time"] / 60.0 > merged["t0"])
    assert started.sum() > 10 and merged.loc[started, "intensity_total"].min() > 0

    # Illumination is static per FOV and nothing is expressed at frame 0 (t0 > 0), so frame t
    # minus frame 0 over a cell's body is its true total plus shot/read noise only.
    assert (traces.loc[traces["frame"] == 0, "intensity_total"] == 0).all()
    fov, t = 1, N_FRAMES - 1
    truth = _labels(synth, fov)[t]
    ids = np.arange(1, N_CELLS + 1)
    rows = traces[(traces["fov"] == fov) & (traces["frame"] == t)]
    with open_acquisition(synth.path) as acq:
        for channel in (1, 2):
            sub = rows[rows["channel"] == channel].set_index("cell").loc[ids]
            np.testing.assert_array_equal(sub["area"], np.bincount(truth.ravel())[1:])
            now = acq.frame(fov, channel, t).astype(np.float64)
            start = acq.frame(fov, channel, 0).astype(np.float64)
            measured = ndi.sum(now - start, truth, ids)
            sigma = np.sqrt(ndi.sum(now + start, truth, ids))  # Poisson: variance ≈ counts
            np.testing.assert_array_less(np.abs(measured - sub["intensity_total"]), 4.5 * sigma)
    assert rows["intensity_total"].max() > 20 * sigma.max()  # the check above has teeth


def test_maturation_solves_the_kinetic_ode() -> None:
    t0, ktl, km, delta, beta = 0.4, 2000.0, 1.1, 0.12, 0.01
    times = np.linspace(0.0, 12.0, 13)

    def rhs(_t: float, y: np.ndarray) -> list[float]:
        mrna, immature, mature = y
        return [-delta * mrna, ktl * mrna - (km + beta) * immature, km * immature - beta * mature]

    after = times[times > t0]
    ode = solve_ivp(rhs, (0, after[-1] - t0), [1, 0, 0], t_eval=after - t0, rtol=1e-10, atol=1e-8)
    model = maturation(times, t0, ktl, km, delta, beta)
    assert (model[times <= t0] == 0).all()
    np.testing.assert_allclose(model[times > t0], ode.y[2], rtol=1e-6)


def test_options_and_validation(tmp_path: Path) -> None:
    info = make_synthetic(
        tmp_path / "nolab", n_fovs=1, n_frames=2, size=128, n_cells=4, n_fl=4, write_labels=False
    )
    assert info.labels_path is None and not list(tmp_path.glob("nolab/*.zarr"))
    assert info.channel_names == ("Phase", "FL1", "FL2", "FL3", "FL4")
    with pytest.raises(InputDataError, match="size must be ≥ 64"):
        make_synthetic(tmp_path / "bad", size=32)
    with pytest.raises(InputDataError, match="interval_min"):
        make_synthetic(tmp_path / "bad", interval_min=0)
    with pytest.raises(InputDataError, match="100 cells do not fit a 256 px image"):
        make_synthetic(tmp_path / "bad", size=256, n_cells=100)
    assert not (tmp_path / "bad").exists()  # validated before anything is written


# -- CLI ------------------------------------------------------------------------------------
def test_cli_synth_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["synth", str(out), "--fovs", "2", "--frames", "3", "--size", "128", "--cells", "4"]
    assert main([*argv, "--seed", "5", "--fl-channels", "2", "--interval", "5"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "synthetic.ome.tif") in printed
    for line in ("fovs:     2", "frames:   3", "0=Phase, 1=GFP, 2=mCherry", "128 x 128", "uint16"):
        assert line in printed
    assert "0-10 min, every 5 min" in printed
    assert (out / "synthetic_truth_traces.csv").is_file()

    assert main(["info", str(out / "synthetic.ome.tif")]) == 0
    printed = capsys.readouterr().out
    assert "OmeTiffAcquisition" in printed and "channels: 3" in printed


def test_cli_errors_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.ome.tif"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err and err.count("\n") == 1
    broken = tmp_path / "broken.ome.tif"
    broken.write_bytes(b"\x00" * 64)
    assert main(["info", str(broken)]) == 2
    assert str(broken) in capsys.readouterr().err
    assert main(["info", str(tmp_path / "x.czi")]) == 2
    assert main(["synth", str(tmp_path / "s"), "--size", "8"]) == 2
    assert "size must be" in capsys.readouterr().err
    assert main([]) == 2  # usage error, not SystemExit
    assert main(["--help"]) == 0


def test_hard_cases_arrive_leave_fade_and_shrink(tmp_path: Path) -> None:
    from pyama_lib.synthetic.cells import HardCases

    half = HardCases(late=0.5, leaving=0.5, faint=0.5, small=0.5)
    info = make_synthetic(tmp_path, n_fovs=1, n_frames=12, size=320, n_cells=16, seed=2, hard=half)
    cells = pd.read_csv(info.cells_csv).set_index("cell")
    truth = pd.read_csv(info.traces_csv)
    labels = zarr.open_group(info.labels_path, mode="r")["fov_000"][:]
    frames = truth.groupby("cell")["frame"].agg(["min", "max", "count"])
    for kind in ("late", "leaving", "faint", "small"):
        assert 0 < cells[kind].sum() < 16, kind
    for cell, row in cells.iterrows():
        first, last = frames.loc[cell, "min"], frames.loc[cell, "max"]
        assert frames.loc[cell, "count"] == last - first + 1  # one truth row per frame it is in
        assert (first > 0) == row["late"] and (last < 11) == row["leaving"]
        in_labels = [t for t in range(12) if (labels[t] == cell).any()]
        assert in_labels == list(range(first, last + 1))
    areas = truth.groupby("cell")["area"].median()
    # semi-minor axis under 12 px (the major one up to 1.3 times it) against at least 12 px
    assert areas[cells["small"]].max() < 1.3 * np.pi * 12**2
    assert areas[cells["small"]].median() < 0.95 * np.pi * 12**2 <= areas[~cells["small"]].min()
    with open_acquisition(info.path) as acq:  # phase contrast: a faint body darkens it less
        pc = np.stack([acq.frame(0, 0, t) for t in range(12)]).astype(np.float64)
    darkening = {
        cell: 1500.0 - pc[frames.loc[cell, "min"]][labels[frames.loc[cell, "min"]] == cell].mean()
        for cell in cells.index
    }
    faint = np.median([d for c, d in darkening.items() if cells.loc[c, "faint"]])
    normal = np.median([d for c, d in darkening.items() if not cells.loc[c, "faint"]])
    assert 0.45 < faint / normal < 0.65  # HardCases.faint_contrast = 0.55
    easy = pd.read_csv(make_synthetic(tmp_path / "easy", n_fovs=1, n_frames=4, size=256).cells_csv)
    assert "late" not in easy.columns


def test_hard_cases_out_of_range_are_named() -> None:
    from pyama_lib.synthetic.cells import HardCases

    with pytest.raises(InputDataError, match=r"late must be within \[0, 1\], got 1.5"):
        HardCases(late=1.5)
    with pytest.raises(InputDataError, match="small_radius must be"):
        HardCases(small_radius=(12.0, 8.0))


def test_brightness_scales_the_reporter_and_nothing_else(tmp_path: Path) -> None:
    small = {"n_fovs": 1, "n_frames": 8, "size": 192, "n_cells": 9, "seed": 4, "interval_min": 60}
    dim = make_synthetic(tmp_path / "dim", **small)
    bright = make_synthetic(tmp_path / "bright", **small, brightness=5.0)
    a, b = pd.read_csv(dim.traces_csv), pd.read_csv(bright.traces_csv)
    expressing = a["intensity_total"] > 0
    assert expressing.any()
    np.testing.assert_allclose(b["intensity_total"], 5.0 * a["intensity_total"], rtol=1e-9)
    assert a["area"].equals(b["area"])
    with open_acquisition(dim.path) as da, open_acquisition(bright.path) as db:
        np.testing.assert_array_equal(da.frame(0, 0, 7), db.frame(0, 0, 7))  # phase contrast
        fl_dim, fl_bright = da.frame(0, 1, 7).astype(float), db.frame(0, 1, 7).astype(float)
    labels = _labels(dim, 0)[7]
    cells, background = labels > 0, labels == 0
    # each cell's pixels carry 5× its signal over the same background (up to the noise)
    assert (fl_bright - fl_dim)[cells].sum() == pytest.approx(
        4.0 * (fl_dim[cells] - np.median(fl_dim[background])).sum(), rel=0.05
    )
    with pytest.raises(InputDataError, match="brightness must be > 0, got 0"):
        make_synthetic(tmp_path / "none", **small, brightness=0.0)
