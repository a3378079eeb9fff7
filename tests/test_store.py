"""The Zarr store: layout, completion markers, half-written arrays, moved folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from pyama_lib.core.errors import StoreError
from pyama_lib.io.store import FovStore, array_name, fov_store_path


def test_layout_follows_design(tmp_path):
    store = FovStore(tmp_path, "acq", 7)
    assert store.path == tmp_path / "fov_007" / "acq_fov_007.zarr"
    assert fov_store_path(tmp_path, "acq", 7) == store.path
    assert array_name("seg_labeled", 2) == "seg_labeled_ch_2"
    with pytest.raises(ValueError, match="unknown array kind"):
        array_name("segmentation", 0)


def test_written_array_is_frame_chunked_and_marked(tmp_path):
    store = FovStore(tmp_path, "acq", 0)
    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with store.writer("pc_ch_0", data.shape, np.uint16, {"a": 1, "t": (1, 2)}) as arr:
        for t in range(3):
            arr[t] = data[t]
    assert store.is_complete("pc_ch_0")
    assert store.is_complete("pc_ch_0", {"t": [1, 2], "a": 1})  # JSON-normalised
    assert not store.is_complete("pc_ch_0", {"a": 2, "t": (1, 2)})
    raw = zarr.open_array(store.path / "pc_ch_0", mode="r")
    assert raw.chunks == (1, 4, 5) and raw.metadata.zarr_format == 3
    np.testing.assert_array_equal(store.open_array("pc_ch_0")[:], data)
    assert store.completion("pc_ch_0")["n_frames"] == 3
    assert store.array_names() == ["pc_ch_0"]


def test_half_written_array_is_absent_and_rewritten(tmp_path):
    store = FovStore(tmp_path, "acq", 0)
    with pytest.raises(RuntimeError), store.writer("seg_ch_0", (4, 2, 2), bool) as arr:
        arr[0] = np.ones((2, 2), bool)
        raise RuntimeError("killed")
    assert not store.is_complete("seg_ch_0")
    assert store.array_names() == []
    assert store.array_names(complete_only=False) == ["seg_ch_0"]
    with pytest.raises(StoreError, match="half-written"):
        store.open_array("seg_ch_0")
    # a rewrite with another shape leaves no stale chunk of the first attempt
    with store.writer("seg_ch_0", (2, 2, 2), bool) as arr:
        arr[1] = np.ones((2, 2), bool)
    np.testing.assert_array_equal(store.open_array("seg_ch_0")[0], np.zeros((2, 2), bool))
    assert store.open_array("seg_ch_0").shape == (2, 2, 2)


def test_missing_array_error_names_path_and_stage(tmp_path):
    store = FovStore(tmp_path, "acq", 3)
    with pytest.raises(StoreError, match=r"fov_003.*fl_corrected_ch_1.*does not exist"):
        store.open_array("fl_corrected_ch_1")


def test_corrupt_metadata_counts_as_absent(tmp_path):
    store = FovStore(tmp_path, "acq", 0)
    with store.writer("pc_ch_0", (1, 2, 2), np.uint16) as arr:
        arr[0] = 1
    (store.path / "pc_ch_0" / "zarr.json").write_text("{not json")
    assert not store.is_complete("pc_ch_0")


def test_moved_output_folder_stays_valid(tmp_path):
    store = FovStore(tmp_path / "run", "acq", 1)
    with store.writer("pc_ch_0", (2, 3, 3), np.uint16, {"k": 1}) as arr:
        arr[:] = 5
    shutil.move(tmp_path / "run", tmp_path / "moved")
    moved = FovStore(tmp_path / "moved", "acq", 1)
    assert moved.is_complete("pc_ch_0", {"k": 1})
    assert int(moved.open_array("pc_ch_0")[1].sum()) == 45


def test_writer_rejects_non_stack_shape(tmp_path):
    with (
        pytest.raises(StoreError, match=r"\(T, H, W\)"),
        FovStore(tmp_path, "a", 0).writer("pc_ch_0", (2, 2), np.uint16),
    ):
        pass
