"""`pyama view`: napari layers of a processed FOV, built from its store and Tracks table.

The layer tuples are checked without napari; the tests marked ``view`` build real napari
layers, read the store with napari-ome-zarr and render a screenshot on Xvfb (the dev extra
installs the ``[view]`` one; `.ci/run` installs Debian's xvfb).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from pyama_lib.core.selection import STAGES, Channels
from pyama_lib.io.store import FovStore
from pyama_lib.io.traces import read_traces_csv, traces_csv_path
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.stages import run_stage
from pyama_lib.synthetic.generator import make_synthetic
from pyama_lib.view.layers import fov_layers

N_FRAMES, SIZE, N_CELLS = 32, 128, 4
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> tuple[Path, FovStore]:
    root = tmp_path_factory.mktemp("view")
    acq = make_synthetic(
        root / "in", n_fovs=2, n_frames=N_FRAMES, size=SIZE, n_cells=N_CELLS, n_fl=2, seed=11
    ).path
    plan = plan_jobs(acq, root / "out", Channels(pc=0, fl=[1, 2]), fovs=[1])
    for stage in STAGES:
        run_stage(stage, plan.jobs[0])
    return root / "out", plan.jobs[0].store


def _positions(out: Path, channel: int) -> np.ndarray:
    """The traces' (cell, frame, y, x), sorted as napari's Tracks layer keeps them."""
    df = read_traces_csv(traces_csv_path(out, "synthetic", 1, channel))
    rows = df[["cell", "frame", "position_y", "position_x"]].to_numpy(np.float64)
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def test_layers_are_lazy_and_are_the_store(processed):
    out, store = processed
    view = fov_layers(out, fov=1)
    kinds = [(kwargs["name"], kind) for _, kwargs, kind in view.layers]
    assert kinds == [
        ("pc_ch_0 (Phase)", "image"),
        ("fl_ch_1 (GFP)", "image"),
        ("fl_ch_2 (mCherry)", "image"),
        ("fl_corrected_ch_1 (GFP)", "image"),
        ("fl_corrected_ch_2 (mCherry)", "image"),
        ("seg_labeled_ch_0", "labels"),
        ("tracks (ch 1)", "tracks"),
    ]
    images = [d for d, _, kind in view.layers if kind in ("image", "labels")]
    # dask over the Zarr arrays, one frame per chunk: napari reads the frame it shows
    assert all(isinstance(d, da.Array) and d.chunksize == (1, SIZE, SIZE) for d in images)
    labels = view.layers[5][0]
    np.testing.assert_array_equal(labels.compute(), store.open_array("seg_labeled_ch_0")[:])
    colours = {kw["name"]: kw["colormap"] for _, kw, _ in view.layers[:5]}
    assert colours["fl_ch_2 (mCherry)"] == colours["fl_corrected_ch_2 (mCherry)"] == "magenta"
    tracks, kwargs, _ = view.layers[6]
    assert len(tracks) == N_CELLS * N_FRAMES
    np.testing.assert_allclose(tracks, _positions(out, 1), atol=1e-6)
    assert {"good", "intensity_total", "area"} <= set(kwargs["features"].columns)
    assert kwargs["scale"] == [10.0, 0.65, 0.65]  # minutes per frame, µm per pixel


def test_tracks_of_another_channel(processed):
    out, _ = processed
    view = fov_layers(out, fov=1, channel=2)
    tracks = [d for d, _, kind in view.layers if kind == "tracks"]
    assert view.tracks_channel == 2
    np.testing.assert_allclose(tracks[0], _positions(out, 2), atol=1e-6)


def _pyama(
    *args: str, env: dict[str, str] | None = None, without_napari: bool = False
) -> subprocess.CompletedProcess:
    # A None in sys.modules makes `import napari` fail as on an install without the extra.
    block = "import sys; sys.modules['napari'] = None; " if without_napari else ""
    code = f"{block}import sys; from flows.cli.main import console_main; console_main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_view_errors_name_the_folder_and_the_fix(processed, tmp_path):
    out, _ = processed
    # a person's copy of a tracks table beside ours is not one of ours
    stray = out / "fov_001" / "synthetic_fov_001_tracks_ch_1 (copy).csv"
    stray.write_text("track_id,t,y,x\n")
    try:
        assert fov_layers(out, fov=1).tracks_channel == 1
    finally:
        stray.unlink()
    shot = _pyama("view", str(out), "--fov", "1", "--screenshot", str(tmp_path / "shot.pdf"))
    assert shot.returncode == 2 and "a screenshot is written as .png" in shot.stderr
    missing = _pyama("view", str(out), "--fov", "0")
    assert missing.returncode == 2
    assert f"{out}: no store for fov 0; the folder has fov_001" in missing.stderr
    empty = _pyama("view", str(tmp_path))
    assert empty.returncode == 2 and "no processed FOV stores here" in empty.stderr
    assert "Traceback" not in missing.stderr + empty.stderr
    no_napari = _pyama("view", str(out), "--fov", "1", without_napari=True)
    assert no_napari.returncode == 2 and "Traceback" not in no_napari.stderr
    assert "pyama view needs napari, an optional extra: pip install 'pyama-flow[view]'" in (
        no_napari.stderr
    )


# -- with napari ------------------------------------------------------------------------------


@pytest.mark.view
def test_napari_layers_equal_the_store(processed):
    from napari.layers import Layer
    from napari_ome_zarr._reader import napari_get_reader

    out, store = processed
    layers = {kind: Layer.create(d, kw, kind) for d, kw, kind in fov_layers(out, 1).layers}
    np.testing.assert_array_equal(
        np.asarray(layers["labels"].data), store.open_array("seg_labeled_ch_0")[:]
    )
    np.testing.assert_allclose(layers["tracks"].data, _positions(out, 1), atol=1e-6)
    assert layers["tracks"].features["intensity_total"].notna().all()
    # `napari <store>` with napari-ome-zarr: the phase contrast and the same labels
    read = napari_get_reader(str(store.path))(str(store.path))
    by_kind = {kind: data for data, _, kind in read}
    np.testing.assert_array_equal(np.asarray(by_kind["labels"][0]), layers["labels"].data)
    np.testing.assert_array_equal(np.asarray(by_kind["image"][0]), store.open_array("pc_ch_0")[:])


@pytest.fixture
def display() -> Iterator[str]:
    """An X display: the one set, else an Xvfb of our own (napari needs OpenGL to render)."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        pytest.skip("no X display and no Xvfb (apt install xvfb)")
    read_end, write_end = os.pipe()  # Xvfb picks a free display and writes its number here
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as numbers:
            yield f":{numbers.readline().strip()}"
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


@pytest.mark.view
def test_screenshot_shows_labels_and_tracks(processed, display, tmp_path):
    import imageio.v3 as iio

    out, _ = processed
    png = tmp_path / "fov_001.png"
    env = {**os.environ, "DISPLAY": display}
    env.pop("QT_QPA_PLATFORM", None)  # --screenshot renders offscreen by itself
    done = _pyama(
        "view", str(out), "--fov", "1", "--frame", "20", "--screenshot", str(png), env=env
    )
    assert done.returncode == 0, done.stderr
    image = iio.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    # napari's dark window and empty canvas are dark; the phase contrast under the labels is
    # the bright part: 532² of the 1280×800 window here
    bright = image[..., :3].astype(np.float64).mean(axis=-1) > 100
    assert bright.mean() > 0.15
