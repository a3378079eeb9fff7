"""The copy stage: streams frames into the store, marks complete last, redoes a broken copy."""

from __future__ import annotations

import numpy as np
import pytest

from pyama_lib.core.errors import ChannelOutOfRangeError, FovOutOfRangeError
from pyama_lib.core.selection import Channels
from pyama_lib.io.readers.ome_tiff import OmeTiffAcquisition
from pyama_lib.io.store import FovStore
from pyama_lib.pipeline.stages import copy_fov
from pyama_lib.synthetic.generator import make_synthetic


class _DiesAfter(OmeTiffAcquisition):
    """A real reader that fails after ``limit`` frames, as a killed copy would stop."""

    limit = 3

    def _read_frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        if t >= self.limit:
            raise OSError("simulated crash half-way through the copy")
        return super()._read_frame(fov, channel, t)


@pytest.fixture(scope="module")
def acq_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("acq")
    return make_synthetic(out, n_fovs=2, n_frames=8, size=128, n_cells=4, n_fl=2, seed=5).path


def test_copy_writes_frames_and_skips_when_complete(acq_path, tmp_path):
    store = FovStore(tmp_path, "synthetic", 1)
    with OmeTiffAcquisition(acq_path) as acq:
        first = copy_fov(acq, 1, Channels(pc=0, fl=[2]), store)
        assert first.written == ["pc_ch_0", "fl_ch_2"] and not first.skipped
        for name, channel in (("pc_ch_0", 0), ("fl_ch_2", 2)):
            arr = store.open_array(name)
            assert arr.dtype == acq.dtype and arr.shape == (8, 128, 128)
            for t in (0, 7):
                np.testing.assert_array_equal(arr[t], acq.frame(1, channel, t))
        again = copy_fov(acq, 1, Channels(pc=0, fl=[2]), store)
        assert again.was_skipped and again.skipped == ["pc_ch_0", "fl_ch_2"]


def test_copy_killed_half_way_is_not_complete_and_is_redone(acq_path, tmp_path):
    store = FovStore(tmp_path, "synthetic", 0)
    channels = Channels(pc=0, fl=[1])
    with _DiesAfter(acq_path) as broken, pytest.raises(OSError, match="half-way"):
        copy_fov(broken, 0, channels, store)
    assert not store.is_complete("pc_ch_0")
    assert store.array_names(complete_only=False) == ["pc_ch_0"]  # the half-written array
    with OmeTiffAcquisition(acq_path) as acq:
        redo = copy_fov(acq, 0, channels, store)
        assert redo.written == ["pc_ch_0", "fl_ch_1"]
        np.testing.assert_array_equal(store.open_array("pc_ch_0")[7], acq.frame(0, 0, 7))


def test_copy_validates_before_writing(acq_path, tmp_path):
    store = FovStore(tmp_path, "synthetic", 0)
    with OmeTiffAcquisition(acq_path) as acq:
        with pytest.raises(ChannelOutOfRangeError, match="channel 5"):
            copy_fov(acq, 0, Channels(pc=0, fl=[5]), store)
        with pytest.raises(FovOutOfRangeError, match="FOV 2"):
            copy_fov(acq, 2, Channels(pc=0, fl=[1]), store)
    assert not tmp_path.joinpath("fov_000").exists()
