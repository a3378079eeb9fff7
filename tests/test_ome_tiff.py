"""OME-TIFF reader and writer: round trips, layouts, times, damaged files, pickling."""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pyama_lib.core.errors import (
    ChannelOutOfRangeError,
    CorruptFileError,
    FovOutOfRangeError,
    FrameOutOfRangeError,
    InputDataError,
    UnsupportedFormatError,
)
from pyama_lib.io import open_acquisition
from pyama_lib.io.readers.ome_tiff import OmeTiffAcquisition
from pyama_lib.io.readers.ome_tiff_writer import write_ome_tiff

NAMES = ["Phase", "GFP", "mCherry", "Cy5"]


def _data(n_fovs: int, n_frames: int, n_ch: int, seed: int = 0) -> np.ndarray:
    """(F, T, C, H, W) uint16 with the full value range, so any byte mix-up shows."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65536, (n_fovs, n_frames, n_ch, 24, 40), dtype=np.uint16)


def _write(path: Path, data: np.ndarray, times: np.ndarray, **kwargs: object) -> Path:
    # Generators, not arrays: the writer must accept a stream.
    fovs = ((frame for frame in fov) for fov in data)
    return write_ome_tiff(path, fovs, NAMES[: data.shape[2]], times, **kwargs)


def _frame_worker(args: tuple[OmeTiffAcquisition, int, int, int]) -> np.ndarray:
    acq, fov, channel, t = args
    return acq.frame(fov, channel, t)


@pytest.mark.parametrize("n_fl", [1, 2, 3])
def test_round_trip_frames_times_names(tmp_path: Path, n_fl: int) -> None:
    data = _data(3, 5, n_fl + 1, seed=n_fl)
    times = np.array([0.0, 7.5, 15.0, 22.5, 31.25])
    path = _write(tmp_path / "a.ome.tif", data, times)
    assert not list(tmp_path.glob("*.partial"))
    with open_acquisition(path) as acq:
        assert isinstance(acq, OmeTiffAcquisition)
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (3, 5, n_fl + 1)
        assert acq.shape == (24, 40) and acq.dtype == np.uint16
        assert acq.channel_names == NAMES[: n_fl + 1]
        assert acq.base_name == "a"
        for fov in range(3):
            np.testing.assert_allclose(acq.frame_times(fov), times, rtol=1e-12)
            for t in range(5):
                for c in range(n_fl + 1):
                    frame = acq.frame(fov, c, t)
                    assert frame.dtype == np.uint16
                    np.testing.assert_array_equal(frame, data[fov, t, c])


def test_round_trip_compressed_per_fov_times_in_minutes(tmp_path: Path) -> None:
    data = _data(2, 4, 2)
    times = np.array([[0.0, 10.0, 20.0, 30.0], [1.5, 11.5, 21.5, 31.5]])
    path = _write(tmp_path / "b.ome.tiff", data, times, compression="zlib", delta_t_unit="min")
    with OmeTiffAcquisition(path) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), times[0])
        np.testing.assert_array_equal(acq.frame_times(1), times[1])
        np.testing.assert_array_equal(acq.frame(1, 1, 3), data[1, 3, 1])


def test_writer_rejects_wrong_frames_and_leaves_no_file(tmp_path: Path) -> None:
    data = _data(1, 3, 2)
    path = tmp_path / "bad.ome.tif"
    with pytest.raises(InputDataError, match="2 frames, expected 3"):
        write_ome_tiff(path, [iter(data[0, :2])], NAMES[:2], [0.0, 1.0, 2.0])
    with pytest.raises(InputDataError, match="more than 3 frames"):
        write_ome_tiff(path, [list(data[0]) + [data[0, 0]]], NAMES[:2], [0.0, 1.0, 2.0])
    with pytest.raises(InputDataError, match="C=3"):
        write_ome_tiff(path, [iter(data[0])], NAMES[:3], [0.0, 1.0, 2.0])
    mixed = [data[0, 0], data[0, 1].astype(np.float32), data[0, 2]]
    with pytest.raises(InputDataError, match="frame 1"):
        write_ome_tiff(path, [mixed], NAMES[:2], [0.0, 1.0, 2.0])
    assert list(tmp_path.iterdir()) == []


def test_missing_delta_t_uses_interval(tmp_path: Path) -> None:
    data = _data(1, 4, 2)[0]
    path = tmp_path / "nodt.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "TCYX", "Channel": {"Name": ["PC", "GFP"]}})
    with OmeTiffAcquisition(path, interval_min=7.5) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 7.5, 15.0, 22.5])
        assert acq.channel_names == ["PC", "GFP"]
    with open_acquisition(path) as acq:  # default 1 min, as PyAMA
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 1.0, 2.0, 3.0])


def test_time_increment_gives_the_times_and_a_fallback_is_said(tmp_path: Path) -> None:
    data = _data(1, 3, 2)[0]
    path = tmp_path / "inc.ome.tif"
    meta = {"axes": "TCYX", "TimeIncrement": 10.0, "TimeIncrementUnit": "min"}
    tifffile.imwrite(path, data, metadata=meta)
    with open_acquisition(path) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 10.0, 20.0])
        assert acq.times_note is None
    seconds = tmp_path / "inc_s.ome.tif"
    tifffile.imwrite(seconds, data, metadata={"axes": "TCYX", "TimeIncrement": 90.0})
    with open_acquisition(seconds) as acq:  # OME's default unit: the second
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 1.5, 3.0])
    bare = tmp_path / "bare.ome.tif"
    tifffile.imwrite(bare, data, metadata={"axes": "TCYX"})
    with open_acquisition(bare) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 1.0, 2.0])
        assert acq.times_note == (
            f"{bare}: the file records no frame times (no OME DeltaT or TimeIncrement); frame t "
            "is taken at t x 1 min (PyAMA's fallback). Give the real interval with --interval "
            "MINUTES (pyama process, pyama info)"
        )


@pytest.mark.parametrize(("unit", "factor"), [("ms", 1 / 60_000), ("h", 60.0), ("s", 1 / 60)])
def test_delta_t_units(tmp_path: Path, unit: str, factor: float) -> None:
    data = _data(1, 3, 1)[0]
    raw = [0.0, 2.0, 5.0]
    path = tmp_path / f"{unit}.ome.tif"
    plane = {"DeltaT": raw, "DeltaTUnit": [unit] * 3}
    tifffile.imwrite(path, data, metadata={"axes": "TCYX", "Plane": plane})
    with OmeTiffAcquisition(path, interval_min=99.0) as acq:
        np.testing.assert_allclose(acq.frame_times(0), np.array(raw) * factor, rtol=1e-12)
        assert acq.channel_names == ["ch0"]  # tifffile writes Channel elements without names


def test_tczyx_reads_z0(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 4000, (4, 2, 3, 16, 20), dtype=np.uint16)  # T, C, Z, Y, X
    path = tmp_path / "z.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "TCZYX"})
    with open_acquisition(path) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.n_channels, acq.shape) == (1, 4, 2, (16, 20))
        for t in range(4):
            for c in range(2):
                np.testing.assert_array_equal(acq.frame(0, c, t), data[t, c, 0])


def test_imagej_hyperstack_tzcyx(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    data = rng.integers(0, 4000, (3, 2, 2, 16, 20), dtype=np.uint16)  # T, Z, C, Y, X
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    with open_acquisition(path) as acq:
        assert (acq.n_frames, acq.n_channels) == (3, 2)
        np.testing.assert_array_equal(acq.frame(0, 1, 2), data[2, 0, 1])


@pytest.mark.parametrize(
    ("axes", "shape", "frames", "channels"),
    [("CYX", (3, 16, 20), 1, 3), ("TYX", (5, 16, 20), 5, 1), ("YX", (16, 20), 1, 1)],
)
def test_missing_t_or_c_is_size_one(
    tmp_path: Path, axes: str, shape: tuple[int, ...], frames: int, channels: int
) -> None:
    data = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    path = tmp_path / "s.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": axes})
    with open_acquisition(path) as acq:
        assert (acq.n_frames, acq.n_channels) == (frames, channels)
        last = acq.frame(0, channels - 1, frames - 1)
        np.testing.assert_array_equal(last, data.reshape(-1, 16, 20)[-1])


def test_garbage_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "garbage.ome.tif"
    path.write_bytes(b"this is not a tiff file at all " * 40)
    with pytest.raises(CorruptFileError) as err:
        open_acquisition(path)
    assert str(path) in str(err.value)
    empty = tmp_path / "empty.ome.tif"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty.ome.tif"):
        open_acquisition(empty)


@pytest.mark.parametrize("keep", [0.97, 0.5, 0.1, 0.002])
def test_truncated_is_corrupt(tmp_path: Path, keep: float) -> None:
    full = _write(tmp_path / "full.ome.tif", _data(2, 4, 2), np.arange(4.0))
    raw = full.read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(raw[: max(16, int(len(raw) * keep))])
    with pytest.raises(CorruptFileError) as err:
        open_acquisition(cut)
    assert "cut.ome.tif" in str(err.value)


def test_rgb_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, np.zeros((16, 20, 3), np.uint8), photometric="rgb")
    with pytest.raises(UnsupportedFormatError, match="YXS"):
        open_acquisition(path)


def test_plain_multipage_tiff_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as writer:
        for _ in range(3):  # separate pages without shape metadata: axes "IYX"
            writer.write(np.zeros((16, 20), np.uint16), metadata=None)
    with pytest.raises(UnsupportedFormatError, match="IYX"):
        open_acquisition(path)


def test_series_of_different_shapes_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "mixed.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(np.zeros((2, 1, 16, 20), np.uint16), metadata={"axes": "TCYX"})
        writer.write(np.zeros((3, 1, 16, 20), np.uint16), metadata={"axes": "TCYX"})
    with pytest.raises(UnsupportedFormatError, match="series 1") as err:
        open_acquisition(path)
    assert "mixed.ome.tif" in str(err.value)


def test_series_with_different_channels_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "chans.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as writer:
        for names in (["PC", "GFP"], ["PC", "RFP"]):
            meta = {"axes": "TCYX", "Channel": {"Name": names}}
            writer.write(np.zeros((2, 2, 16, 20), np.uint16), metadata=meta)
    with pytest.raises(UnsupportedFormatError, match="different channels"):
        open_acquisition(path)


def test_indices_out_of_range(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.ome.tif", _data(2, 3, 2), np.arange(3.0))
    with open_acquisition(path) as acq:
        with pytest.raises(FovOutOfRangeError, match="valid indices 0-1"):
            acq.frame(2, 0, 0)
        with pytest.raises(ChannelOutOfRangeError, match="GFP"):
            acq.frame(0, 2, 0)
        with pytest.raises(FrameOutOfRangeError):
            acq.frame(0, 0, 3)
        with pytest.raises(FovOutOfRangeError):
            acq.frame_times(5)


def test_pickle_round_trip_and_spawned_worker(tmp_path: Path) -> None:
    data = _data(2, 3, 2)
    path = _write(tmp_path / "p.ome.tif", data, np.array([0.0, 5.0, 10.0]))
    acq = OmeTiffAcquisition(path, interval_min=3.0)
    clone = pickle.loads(pickle.dumps(acq))
    assert clone._options == {"interval_min": 3.0}
    np.testing.assert_array_equal(clone.frame(1, 1, 2), data[1, 2, 1])
    np.testing.assert_array_equal(clone.frame_times(1), [0.0, 5.0, 10.0])
    clone.close()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        frame = pool.map(_frame_worker, [(acq, 1, 0, 1)])[0]
    np.testing.assert_array_equal(frame, data[1, 1, 0])
    acq.close()


def test_a_damaged_file_in_one_thread_leaves_good_files_in_others_alone(tmp_path: Path) -> None:
    """tifffile's warnings go to one global logger: a thread opening a truncated file must
    not make another thread's good files look damaged."""
    import threading

    from pyama_lib.io.readers import index_cache

    full = _write(tmp_path / "full.ome.tif", _data(2, 4, 2), np.arange(4.0))
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.5)])
    goods = [tmp_path / f"good{i}.ome.tif" for i in range(4)]
    for good in goods:
        good.write_bytes(full.read_bytes())
    stop, refused = threading.Event(), []

    def open_damaged() -> None:
        while not stop.is_set():
            with contextlib.suppress(CorruptFileError):
                open_acquisition(cut).close()

    opener = threading.Thread(target=open_damaged)
    opener.start()
    try:
        for _ in range(40):
            for good in goods:
                index_cache.clear_index_cache()  # every open indexes the file again
                try:
                    open_acquisition(good).close()
                except CorruptFileError as exc:
                    refused.append(str(exc))
    finally:
        stop.set()
        opener.join()
    assert refused == []
