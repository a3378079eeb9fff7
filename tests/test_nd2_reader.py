"""ND2Acquisition against what the `nd2` package itself reports, on every shared ND2 file."""

from __future__ import annotations

import itertools
import os
import pickle
import time
from pathlib import Path

import nd2
import numpy as np
import pytest
from nd2.structures import NETimeLoop, NETimeLoopParams, Period, PeriodDiff

from pyama_lib.core.errors import (
    AcquisitionError,
    AcquisitionIncompleteError,
    AcquisitionNotFoundError,
    ChannelOutOfRangeError,
    CorruptFileError,
    FovOutOfRangeError,
    FrameOutOfRangeError,
    UnsupportedFormatError,
)
from pyama_lib.io.readers.nd2 import ND2Acquisition, _nominal_times_min, _sequence_table
from tests.conftest import ND2_DIR

ALL_ND2 = sorted(ND2_DIR.glob("*.nd2"))
RGB = {"lim-GA3_Children_node_example.nd2"}
HOUR_AGO = time.time() - 3600


def _expected_frame(arr: np.ndarray, sizes: dict[str, int], fov: int, c: int, t: int):
    """Index nd2's own full array by axis name (Z -> 0), independently of the reader."""
    pick = {"P": fov, "T": t, "Z": 0, "C": c}
    return arr[tuple(pick.get(axis, slice(None)) for axis in sizes)]


def test_every_shared_file_is_covered():
    assert len(ALL_ND2) == 11


@pytest.mark.parametrize("path", ALL_ND2, ids=[p.name for p in ALL_ND2])
def test_file_matches_nd2(path: Path):
    with nd2.ND2File(path) as f:
        sizes = dict(f.sizes)
        if path.name in RGB:
            assert f.is_rgb
        arr = f.asarray()
        names = [ch.channel.name for ch in f.metadata.channels]
    if path.name in RGB:
        with pytest.raises(UnsupportedFormatError, match="RGB ND2 not supported") as err:
            ND2Acquisition(path)
        assert path.name in str(err.value)
        assert "grayscale" in str(err.value)
        return
    with ND2Acquisition(path) as acq:
        assert acq.n_fovs == sizes.get("P", 1)
        assert acq.n_frames == sizes.get("T", 1)
        assert acq.n_channels == sizes.get("C", 1)
        assert (acq.height, acq.width) == (sizes["Y"], sizes["X"])
        assert acq.dtype == arr.dtype
        assert acq.channel_names == names
        assert acq.base_name == path.stem
        # Every (fov, channel, t), including the last of each.
        for fov in range(acq.n_fovs):
            for c in range(acq.n_channels):
                for t in range(acq.n_frames):
                    got = acq.frame(fov, c, t)
                    assert got.shape == (acq.height, acq.width)
                    assert got.dtype == arr.dtype
                    np.testing.assert_array_equal(got, _expected_frame(arr, sizes, fov, c, t))
        nominal = acq.frame_times(0)
        assert nominal.dtype == np.float64 and nominal.shape == (acq.n_frames,)
    with ND2Acquisition(path, times="measured") as acq:
        measured = acq.frame_times(acq.n_fovs - 1)
        assert measured.dtype == np.float64 and measured.shape == (acq.n_frames,)
        assert np.all(np.isfinite(measured)) and np.all(measured >= 0)


def test_z_index_0_and_time_order_are_picked_on_cluster():
    # cluster.nd2 loops T (outer) then Z (inner): sequence index of (t, z=0) is t * 10.
    path = ND2_DIR / "cluster.nd2"
    with nd2.ND2File(path) as f:
        assert list(f.sizes) == ["T", "Z", "C", "Y", "X"]
        planes = [f.read_frame(i) for i in range(30)]  # each (C, Y, X)
    with ND2Acquisition(path) as acq:
        got = acq.frame(0, 0, 2)
        np.testing.assert_array_equal(got, planes[20][0])
        # The neighbours it must not be: another Z plane, another time point, the other channel
        # (channel 1 is empty at Z 0).
        assert got.sum() == 406
        assert not np.array_equal(got, planes[21][0])
        assert not np.array_equal(got, planes[10][0])
        assert not np.array_equal(got, planes[20][1])


@pytest.mark.parametrize("order", list(itertools.permutations("PTZ")), ids="".join)
def test_sequence_table_for_any_loop_order(order: tuple[str, ...]):
    # No small multi-position ND2 exists to test with, so build the loop index as nd2 defines
    # it (frame i <-> the i-th element of the product of the loops, outermost first).
    counts = {"P": 3, "T": 4, "Z": 2}
    shape = [counts[a] for a in order]
    loop_indices = tuple(
        dict(zip(order, idx, strict=True)) for idx in itertools.product(*map(range, shape))
    )
    seq = _sequence_table(loop_indices, 3, 4)
    for fov, t in itertools.product(range(3), range(4)):
        coords = {"P": fov, "T": t, "Z": 0}
        assert seq[fov, t] == np.ravel_multi_index([coords[a] for a in order], shape)


def test_sequence_table_marks_missing_frames():
    seq = _sequence_table(({"P": 0, "T": 0}, {"P": 0, "T": 1}), 2, 2)
    np.testing.assert_array_equal(seq, [[0, 1], [-1, -1]])


def test_frames_are_writable_copies():
    with ND2Acquisition(ND2_DIR / "arcadia-example-timelapse.nd2") as acq:
        img = acq.frame(0, 0, 5)
        original = img.copy()
        assert img.flags.writeable and img.flags.c_contiguous
        assert original.max() > 0
        img[:] = 0
        np.testing.assert_array_equal(acq.frame(0, 0, 5), original)


# -- times -------------------------------------------------------------------------------
def _events_minutes(path: Path) -> np.ndarray:
    """Measured times (minutes) of Z plane 0 per time point, from nd2's event table."""
    with nd2.ND2File(path) as f:
        ev = f.events(orient="list")
    seconds = np.asarray(ev["Time [s]"], dtype=np.float64)
    keep = np.asarray(ev.get("Z Index", [0] * len(seconds))) == 0
    assert list(np.asarray(ev["T Index"])[keep]) == list(range(keep.sum()))
    return seconds[keep] / 60.0


def test_times_arcadia_timelapse():
    path = ND2_DIR / "arcadia-example-timelapse.nd2"
    with nd2.ND2File(path) as f:
        nd2_t_ms = np.asarray(f._expand_coords()["T"])  # the T coordinate nd2 (and PyAMA) use
    with ND2Acquisition(path) as acq:
        nominal = acq.frame_times(0)
    assert nominal.dtype == np.float64 and nominal.shape == (53,)
    np.testing.assert_allclose(nominal, nd2_t_ms / 60000.0, rtol=1e-12)
    assert nominal[0] == 0.0
    np.testing.assert_allclose(nominal[52], 52 * 500.1600013146034 / 60000.0, rtol=1e-9)

    with ND2Acquisition(path, times="measured") as acq:
        measured = acq.frame_times(0)
    assert measured.dtype == np.float64 and measured.shape == (53,)
    np.testing.assert_allclose(measured, _events_minutes(path), rtol=1e-9)
    np.testing.assert_allclose(measured[0], 4227.198097657412 / 60000.0, rtol=1e-9)
    assert np.all(np.diff(measured) > 0)


def test_times_cluster():
    path = ND2_DIR / "cluster.nd2"
    with nd2.ND2File(path) as f:
        nd2_t_ms = np.asarray(f._expand_coords()["T"])
        stamps = [f.frame_metadata(i).channels[0].time.relativeTimeMs for i in (0, 10, 20)]
    with ND2Acquisition(path) as acq:
        nominal = acq.frame_times(0)
    # The time loop has period 0 ("as fast as possible") and no recorded average: nd2 says 0.
    np.testing.assert_array_equal(nominal, nd2_t_ms / 60000.0)
    np.testing.assert_array_equal(nominal, np.zeros(3))
    with ND2Acquisition(path, times="measured") as acq:
        measured = acq.frame_times(0)
    np.testing.assert_allclose(measured, np.asarray(stamps) / 60000.0, rtol=1e-12)
    np.testing.assert_allclose(measured, _events_minutes(path), rtol=1e-9)
    np.testing.assert_allclose(measured[1], 11086.18022211641 / 60000.0, rtol=1e-9)


def test_times_without_time_loop_and_with_netimeloop():
    with ND2Acquisition(ND2_DIR / "iobia-test_image.nd2") as acq:  # Z and C, no T
        np.testing.assert_array_equal(acq.frame_times(0), [0.0])
    with ND2Acquisition(ND2_DIR / "lim-JOBS-synthetic-objects-timelapse.nd2") as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 0.0])  # NETimeLoop, period 0


def test_netimeloop_phases_follow_each_other():
    def phase(period_ms: float, count: int) -> Period:
        return Period(0.0, period_ms, 0.0, PeriodDiff(avg=0.0, max=0.0, min=0.0), count)

    loop = NETimeLoop(5, 0, NETimeLoopParams(periods=[phase(60000.0, 2), phase(600000.0, 3)]))
    np.testing.assert_allclose(_nominal_times_min([loop], 5), [0, 1, 2, 12, 22])
    assert _nominal_times_min([loop], 4) is None  # a loop that does not fit the T axis


def test_invalid_times_option():
    with pytest.raises(ValueError, match="times must be one of"):
        ND2Acquisition(ND2_DIR / "cluster.nd2", times="exact")


# -- errors ------------------------------------------------------------------------------
@pytest.fixture
def cut_copy(tmp_path: Path) -> Path:
    data = (ND2_DIR / "cluster.nd2").read_bytes()
    path = tmp_path / "cut.nd2"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_cut_copy_is_corrupt(cut_copy: Path):
    os.utime(cut_copy, (HOUR_AGO, HOUR_AGO))
    with pytest.raises(CorruptFileError) as err:
        ND2Acquisition(cut_copy)
    assert not isinstance(err.value, AcquisitionIncompleteError)
    msg = str(err.value)
    assert "cut.nd2" in msg and "truncated" in msg and "copy it again" in msg


def test_cut_copy_recently_modified_is_incomplete(cut_copy: Path):
    os.utime(cut_copy, (time.time() - 5, time.time() - 5))
    with pytest.raises(AcquisitionIncompleteError) as err:
        ND2Acquisition(cut_copy)
    msg = str(err.value)
    assert "cut.nd2" in msg and "still being written" in msg and "wait until" in msg
    # The threshold is an option: 0 s means never "recent".
    with pytest.raises(CorruptFileError, match="truncated"):
        ND2Acquisition(cut_copy, recent_seconds=0)


def test_garbage_is_corrupt_even_when_fresh(tmp_path: Path):
    path = tmp_path / "noise.nd2"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CorruptFileError, match="not an ND2 file") as err:
        ND2Acquisition(path)
    assert not isinstance(err.value, AcquisitionIncompleteError)
    assert "noise.nd2" in str(err.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(AcquisitionNotFoundError, match="no such file") as err:
        ND2Acquisition(tmp_path / "gone.nd2")
    assert "gone.nd2" in str(err.value)


def test_out_of_range_indices():
    path = ND2_DIR / "cluster.nd2"
    with ND2Acquisition(path) as acq:
        with pytest.raises(FovOutOfRangeError, match=r"FOV 1 .* valid indices 0-0") as err:
            acq.frame(1, 0, 0)
        assert "cluster.nd2" in str(err.value)
        with pytest.raises(FovOutOfRangeError):
            acq.frame_times(-1)
        with pytest.raises(ChannelOutOfRangeError) as err:
            acq.frame(0, 2, 0)
        assert "0='5-FAM/pH 9.0', 1='FM 4-64/2% CHAPS'" in str(err.value)
        with pytest.raises(FrameOutOfRangeError, match="frame 3 .* 3 frames"):
            acq.frame(0, 0, 3)


def test_reader_writes_nothing(tmp_path: Path):
    path = tmp_path / "copy.nd2"
    path.write_bytes((ND2_DIR / "dims_z5t3c2y32x32.nd2").read_bytes())
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    before = path.read_bytes()
    with ND2Acquisition(path, times="measured") as acq:
        acq.frame(0, 1, 2)
        acq.frame_times(0)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.nd2"]
    assert path.read_bytes() == before
    assert path.stat().st_mtime == pytest.approx(HOUR_AGO)


# -- handle lifetime and pickling ----------------------------------------------------------
def _mapped_or_open(path: Path) -> bool:
    """Whether this process holds `path` open (a file descriptor or a memory map)."""
    target = str(path.resolve())
    fds = Path("/proc/self/fd")
    if any(os.path.realpath(fd) == target for fd in fds.iterdir()):
        return True
    return target in Path("/proc/self/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_close_releases_the_file():
    path = ND2_DIR / "arcadia-example-zstack.nd2"
    acq = ND2Acquisition(path)
    acq.frame(0, 0, 0)
    assert _mapped_or_open(path)
    acq.close()
    assert not _mapped_or_open(path)
    with pytest.raises(ValueError, match="closed"):
        acq.frame(0, 0, 0)
    acq.close()  # closing twice is harmless


def test_pickle_round_trip_gives_equal_frames():
    path = ND2_DIR / "dims_z5t3c2y32x32.nd2"
    with ND2Acquisition(path, times="measured") as acq:
        clone = pickle.loads(pickle.dumps(acq))
        try:
            assert isinstance(clone, ND2Acquisition)
            assert repr(clone) == repr(acq)
            for c, t in [(0, 0), (1, 2)]:
                np.testing.assert_array_equal(clone.frame(0, c, t), acq.frame(0, c, t))
            np.testing.assert_array_equal(clone.frame_times(0), acq.frame_times(0))
            assert clone.frame_times(0)[0] > 0  # still "measured" after the round trip
        finally:
            clone.close()
        acq.frame(0, 0, 1)  # the original's handle is untouched


def test_folder_named_nd2_is_reported_not_crashed(tmp_path: Path):
    path = tmp_path / "folder.nd2"
    path.mkdir()
    with pytest.raises(AcquisitionError, match="cannot be read") as err:
        ND2Acquisition(path)
    assert "folder.nd2" in str(err.value)
