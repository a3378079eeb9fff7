"""The FOV store is valid OME-Zarr (NGFF 0.5): read by ome-zarr's reader, validated by
ome-zarr-models, with the pipeline's own arrays as its images and labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v05 import Image, ImageLabel

from pyama_lib.core.selection import STAGES, Channels
from pyama_lib.io import open_acquisition
from pyama_lib.io.store import FovStore
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.stages import copy_fov, results_entries, run_stage
from pyama_lib.synthetic.generator import PIXEL_SIZE_UM, make_synthetic

N_FRAMES, SIZE = 32, 128
INTERVAL_MIN = 10.0  # make_synthetic's default frame interval


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> tuple[Path, FovStore]:
    root = tmp_path_factory.mktemp("ngff")
    acq = make_synthetic(
        root / "in", n_fovs=1, n_frames=N_FRAMES, size=SIZE, n_cells=4, n_fl=2, seed=5
    ).path
    plan = plan_jobs(acq, root / "out", Channels(pc=0, fl=[1, 2]))
    for stage in STAGES:
        run_stage(stage, plan.jobs[0])
    return plan, plan.jobs[0].store


def _nodes(store: FovStore) -> list:
    return list(Reader(parse_url(str(store.path)))())


def test_ome_zarr_reader_finds_the_image_and_its_labels(processed):
    _, store = processed
    image, labels_group, label = _nodes(store)
    assert image.metadata["name"] == "pc_ch_0"
    assert image.metadata["channel_names"] == ["Phase (phase contrast)"]
    assert [a["name"] for a in image.metadata["axes"]] == ["t", "y", "x"]
    assert [a.get("unit") for a in image.metadata["axes"]] == ["minute", "micrometer", "micrometer"]
    assert image.metadata["coordinateTransformations"] == [
        [{"type": "scale", "scale": [INTERVAL_MIN, PIXEL_SIZE_UM, PIXEL_SIZE_UM]}]
    ]
    np.testing.assert_array_equal(np.asarray(image.data[0]), store.open_array("pc_ch_0")[:])
    assert label.metadata["name"] == "seg_labeled_ch_0"
    labels = np.asarray(label.data[0])
    assert labels.shape == (N_FRAMES, SIZE, SIZE) and labels.max() >= 4
    np.testing.assert_array_equal(labels, store.open_array("seg_labeled_ch_0")[:])


def test_ome_zarr_models_validate_every_image_in_the_store(processed):
    plan, store = processed
    group = zarr.open_group(store.path, mode="r")
    image = Image.from_zarr(group)
    names = [m.name for m in image.attributes.ome.multiscales]
    # phase contrast first (what a one-image reader shows), then fluorescence raw and corrected
    assert names == ["pc_ch_0", "fl_ch_1", "fl_ch_2", "fl_corrected_ch_1", "fl_corrected_ch_2"]
    assert [d.path for m in image.attributes.ome.multiscales for d in m.datasets] == names
    label = ImageLabel.from_zarr(group["labels/seg_labeled_ch_0"])
    assert label.attributes.ome.image_label.source.image == "../../"
    assert group["labels"].attrs["ome"]["labels"] == ["seg_labeled_ch_0"]
    # processing_results.yaml points at the labels where they now are
    fov = results_entries(plan, [0]).fov(0)
    assert fov.seg_labeled == (0, store.path / "labels" / "seg_labeled_ch_0" / "0")


def test_half_written_array_is_not_listed(processed, tmp_path):
    _, done = processed
    store = FovStore(tmp_path, "copy", 0)
    shutil.copytree(done.path, store.path)
    with pytest.raises(RuntimeError), store.writer("fl_corrected_ch_2", (2, 8, 8), np.float32):
        raise RuntimeError("killed")
    ome = zarr.open_group(store.path, mode="r").attrs["ome"]
    assert [m["name"] for m in ome["multiscales"]][-1] == "fl_corrected_ch_1"
    Image.from_zarr(zarr.open_group(store.path, mode="r"))  # still valid


def _copied_scale(path: Path, out: Path) -> list[tuple[str, str | None, float]]:
    with open_acquisition(path) as acq:
        store = FovStore(out, acq.base_name, 0)
        copy_fov(acq, 0, Channels(pc=0, fl=[]), store)
    ms = Image.from_zarr(zarr.open_group(store.path, mode="r")).attributes.ome.multiscales[0]
    factors = ms.datasets[0].coordinateTransformations[0].scale
    return [(a.name, a.unit, f) for a, f in zip(ms.axes, factors, strict=True)]


def test_nd2_pixel_size_and_frame_interval_become_the_scale(nd2_dir, tmp_path):
    with open_acquisition(nd2_dir / "cluster.nd2") as acq:
        assert acq.pixel_size_um == pytest.approx(0.16781, abs=1e-5)
    (t, y, x) = _copied_scale(nd2_dir / "arcadia-example-timelapse.nd2", tmp_path)
    assert t[:2] == ("t", "minute") and t[2] == pytest.approx(0.008336, abs=1e-6)
    assert [y, x] == [(n, "micrometer", pytest.approx(0.325)) for n in ("y", "x")]
    # NIS-Elements writes 1.0 on an uncalibrated axis, and this file's frames have no times:
    # no unit rather than a wrong one
    scale = _copied_scale(nd2_dir / "lim-JOBS-synthetic-objects-timelapse.nd2", tmp_path)
    assert scale == [("t", None, 1.0), ("y", None, 1.0), ("x", None, 1.0)]


def test_store_of_the_layout_before_ome_zarr_is_redone(processed, tmp_path):
    plan, done = processed
    store = FovStore(tmp_path, "synthetic", 0)
    shutil.copytree(done.path, store.path)
    # the old layout: dimension "frame", labels beside the other arrays
    shutil.move(store.array_path("seg_labeled_ch_0"), store.path / "seg_labeled_ch_0")
    for name in ("pc_ch_0", "seg_labeled_ch_0"):
        meta = store.path / name / "zarr.json"
        old = json.loads(meta.read_text())
        old["dimension_names"] = ["frame", "y", "x"]
        meta.write_text(json.dumps(old))
    assert not store.is_complete("pc_ch_0") and not store.is_complete("seg_labeled_ch_0")
    assert store.is_complete("fl_ch_1")
    job = plan_jobs(plan.jobs[0].input_path, tmp_path, Channels(pc=0, fl=[1, 2])).jobs[0]
    written = {s: run_stage(s, job).written for s in STAGES}
    assert written["copy"] == ["pc_ch_0"] and "seg_labeled_ch_0" in written["track"]
    assert not (store.path / "seg_labeled_ch_0").exists()
    Image.from_zarr(zarr.open_group(store.path, mode="r"))


def _listed(store: FovStore) -> tuple[list[str], list[str]]:
    group = zarr.open_group(store.path, mode="r")
    images = [m["name"] for m in group.attrs["ome"]["multiscales"]]
    return images, group["labels"].attrs["ome"]["labels"]


def test_a_listing_lost_to_a_kill_is_repaired_and_a_stale_label_is_unlisted(processed, tmp_path):
    plan, done = processed
    store = FovStore(tmp_path, "synthetic", 0)
    shutil.copytree(done.path, store.path)
    job = plan_jobs(plan.jobs[0].input_path, tmp_path, Channels(pc=0, fl=[1, 2])).jobs[0]
    # killed after the labels' marker, before their listing: the next run, each array's stage
    # skipped, lists them again (extract runs: the traces were not copied into tmp_path)
    zarr.open_group(store.path / "labels", mode="r+").attrs["ome"] = {
        "version": "0.5",
        "labels": [],
    }
    assert [s for s in STAGES if not run_stage(s, job).was_skipped] == ["extract"]
    assert _listed(store)[1] == ["seg_labeled_ch_0"]
    # a new segmentation: labels and corrected stacks computed from the old one are unlisted
    # (and pyama view does not show them) until their stages run again
    other = plan_jobs(
        plan.jobs[0].input_path,
        tmp_path,
        Channels(pc=0, fl=[1, 2]),
        params={"segmentation": {"n_sigma": 2.5}},
    ).jobs[0]
    assert run_stage("segment", other).written == ["seg_ch_0"]
    assert _listed(store) == (["pc_ch_0", "fl_ch_1", "fl_ch_2"], [])
    run_stage("track", other)
    assert _listed(store)[1] == ["seg_labeled_ch_0"]
    Image.from_zarr(zarr.open_group(store.path, mode="r"))


def test_an_array_killed_while_removed_is_unlisted_before_its_rewrite(processed, tmp_path):
    _, done = processed
    store = FovStore(tmp_path, "synthetic", 0)
    shutil.copytree(done.path, store.path)
    # a run killed while it removed fl_ch_2: listed still, its marker gone with its files
    meta = store.array_path("fl_ch_2") / "zarr.json"
    data = json.loads(meta.read_text())
    data["attributes"].pop("pyama_complete")
    meta.write_text(json.dumps(data))
    assert "fl_ch_2" in _listed(store)[0]
    with store.writer("fl_ch_2", (N_FRAMES, SIZE, SIZE), np.uint16) as arr:
        assert "fl_ch_2" not in _listed(store)[0]  # no reader opens it while it is written
        arr[:] = 1
    assert "fl_ch_2" in _listed(store)[0]
