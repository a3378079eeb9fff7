"""open_acquisition: dispatch by file name, errors before any reader, handles across processes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from pyama_lib.core.errors import AcquisitionNotFoundError, UnsupportedFormatError
from pyama_lib.io import open_acquisition
from pyama_lib.io.readers.acquisition import Acquisition
from pyama_lib.io.readers.nd2 import ND2Acquisition
from tests.conftest import ND2_DIR

TIMELAPSE = ND2_DIR / "arcadia-example-timelapse.nd2"
DIMS = ND2_DIR / "dims_z5t3c2y32x32.nd2"


def test_nd2_opens_as_nd2_acquisition():
    with open_acquisition(TIMELAPSE) as acq:
        assert isinstance(acq, ND2Acquisition) and isinstance(acq, Acquisition)
        assert acq.base_name == "arcadia-example-timelapse"
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (1, 53, 1)


def test_extension_is_case_insensitive(tmp_path: Path):
    path = tmp_path / "Plate 1.ND2"
    path.write_bytes(DIMS.read_bytes())
    with open_acquisition(path) as acq:
        assert isinstance(acq, ND2Acquisition)
        assert acq.base_name == "Plate 1"
        assert acq.channel_names == ["Widefield Green", "Widefield Red"]


def test_options_reach_the_reader():
    with open_acquisition(TIMELAPSE) as nominal, open_acquisition(TIMELAPSE, times="measured") as m:
        assert nominal.frame_times(0)[0] == 0.0
        assert m.frame_times(0)[0] == pytest.approx(4227.198097657412 / 60000.0)


def test_unknown_extension(tmp_path: Path):
    path = tmp_path / "x.xyz"  # .czi is read through bioio (tests/test_bioio_reader.py)
    path.write_bytes(b"ZISRAWFILE" + bytes(100))
    with pytest.raises(UnsupportedFormatError) as err:
        open_acquisition(path)
    msg = str(err.value)
    assert "x.xyz" in msg and "'.xyz'" in msg and ".nd2" in msg and "OME-TIFF" in msg


def test_no_extension(tmp_path: Path):
    path = tmp_path / "acquisition"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(UnsupportedFormatError, match="no extension"):
        open_acquisition(path)


@pytest.mark.parametrize("name", ["gone.nd2", "gone.czi"])
def test_missing_file(tmp_path: Path, name: str):
    with pytest.raises(AcquisitionNotFoundError) as err:
        open_acquisition(tmp_path / name)
    assert isinstance(err.value, FileNotFoundError)
    assert name in str(err.value) and "no such file" in str(err.value)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_with_block_closes_the_handle():
    target = str(TIMELAPSE.resolve())

    def held() -> bool:
        fds = (os.path.realpath(fd) for fd in Path("/proc/self/fd").iterdir())
        return target in fds or target in Path("/proc/self/maps").read_text()

    with open_acquisition(TIMELAPSE) as acq:
        acq.frame(0, 0, 52)
        assert held()
    assert not held()
    with pytest.raises(ValueError, match="closed"):
        acq.frame(0, 0, 0)


def _read_in_child(acq: Acquisition) -> tuple[np.ndarray, np.ndarray, int]:
    with acq:
        return acq.frame(0, 1, 2), acq.frame_times(0), os.getpid()


def test_acquisition_reopens_in_a_spawned_process():
    # Spawned (not forked) workers are what Prefect/Dask use: only path + options travel.
    with open_acquisition(DIMS, times="measured") as acq:
        expected = acq.frame(0, 1, 2), acq.frame_times(0)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            frame, times, pid = pool.apply(_read_in_child, (acq,))
    assert pid != os.getpid()
    np.testing.assert_array_equal(frame, expected[0])
    np.testing.assert_array_equal(times, expected[1])
    assert times[0] > 0  # measured stamps, so the option travelled too
