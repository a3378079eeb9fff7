"""CZI and LIF through bioio (the ``formats`` extra): metadata, frames, times, refusals.

Real inputs, read in place from ``shared/data/formats`` (their README.md says what each
holds): ``czi/CD_s_1_t_3_c_2_z_5.czi`` (ZEN, one scene, T=3, C=2, Z=5), the mosaic CZIs
``czi/S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi`` and ``czi/tiles_time_z.czi``, and the LIFs
``lif/PR2729_frameOrderCombinedScanTypes.lif`` (tiles), ``lif/testdata_2channel_xz.lif`` (XZ
scans) and ``lif/LeicaLASX_wavelength-sweep_example.lif`` (λ sweeps). Made inputs, in
``tmp_path``: CZIs written with pylibCZIrw (no times, or scenes the metadata does not name),
a truncated copy of the real CZI (first 1 MB), a file of garbage bytes, and an unknown extension.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import aicspylibczi
import liffile
import numpy as np
import pytest

from flows.cli.main import main as cli_main
from pyama_lib.core.errors import (
    ChannelOutOfRangeError,
    CorruptFileError,
    FovOutOfRangeError,
    FrameOutOfRangeError,
    InboxPathError,
    UnsupportedFormatError,
)
from pyama_lib.io import open_acquisition
from pyama_lib.io.readers.bioio_files import BioioAcquisition
from pyama_lib.io.readers.bioio_layout import SceneLayout, check_same_layout
from pyama_lib.io.readers.formats import reader_for
from pyama_lib.io.readers.index_cache import clear_index_cache

CD = "czi/CD_s_1_t_3_c_2_z_5.czi"


@pytest.fixture(autouse=True)
def _cache() -> Iterator[None]:
    """An empty index cache, so that every test opens its file anew."""
    clear_index_cache()
    yield
    clear_index_cache()


def test_czi_time_lapse_is_read_with_its_metadata(formats_dir: Path) -> None:
    """Real CZI: one scene, T=3, C=2 (LED555, LED470), 170x240 uint16, times from
    ``T/Positions/List/Offsets`` (0, 60.075, 120.15 s), 0.0906 µm pixels."""
    with open_acquisition(formats_dir / CD) as acq:
        assert type(acq) is BioioAcquisition
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (1, 3, 2)
        assert acq.channel_names == ["LED555", "LED470"]
        assert (acq.height, acq.width, acq.dtype) == (170, 240, np.dtype(np.uint16))
        np.testing.assert_allclose(acq.frame_times(0), [0.0, 1.00125, 2.0025])
        assert acq.frame_times(0).dtype == np.float64
        assert acq.times_note is None
        assert acq.pixel_size_um == pytest.approx(0.0905767, rel=1e-5)
        assert acq.base_name == "CD_s_1_t_3_c_2_z_5"


def test_czi_frames_equal_an_independent_read_at_z0(formats_dir: Path) -> None:
    """Real CZI: every (t, c) frame equals aicspylibczi's own read of that plane at Z 0, and
    the lazy array holds one plane per chunk (a frame never reads its Z stack)."""
    czi = aicspylibczi.CziFile(formats_dir / CD)
    with open_acquisition(formats_dir / CD) as acq:
        for t in range(3):
            for c in range(2):
                want = czi.read_image(T=t, C=c, Z=0)[0].reshape(170, 240)
                got = acq.frame(0, c, t)
                assert got.dtype == np.uint16 and got.shape == (170, 240)
                np.testing.assert_array_equal(got, want)
        # Z 0 really: plane 1 differs, so a Z mix-up would show.
        assert not np.array_equal(
            acq.frame(0, 0, 0), czi.read_image(T=0, C=0, Z=1)[0][..., 0, :, :]
        )
        chunks = acq._index.scenes[0].array.data.chunksize
        assert chunks == (1, 1, 1, 170, 240)


@pytest.mark.parametrize(
    ("name", "tiles"),
    [
        ("czi/S3_1Pos_2Mosaic_T2_Z3_CH2_sm.czi", 10),
        ("czi/tiles_time_z.czi", 4),
        ("lif/PR2729_frameOrderCombinedScanTypes.lif", 4),
    ],
)
def test_mosaic_tiles_are_refused(formats_dir: Path, name: str, tiles: int) -> None:
    """Real mosaics (ZEN blue, ZEN black, LAS X): bioio would stitch them into one plane;
    refused, saying tiles and what to do."""
    with pytest.raises(UnsupportedFormatError) as err:
        open_acquisition(formats_dir / name)
    message = str(err.value)
    assert str(formats_dir / name) in message
    assert f"mosaic of {tiles} tiles" in message and "stitch the tiles" in message


def test_lif_xz_scans_and_wavelength_sweeps_are_refused(formats_dir: Path) -> None:
    """Real LIFs: the first image of each (``xzt``: an XZ time series; ``x_y_lambdaEmi``: an
    emission sweep) is no XY time-lapse, which bioio-lif would not show (Y=1, λ dropped)."""
    with pytest.raises(UnsupportedFormatError, match=r"image 0 \('xzt'\) is an XZ scan"):
        open_acquisition(formats_dir / "lif/testdata_2channel_xz.lif")
    with pytest.raises(UnsupportedFormatError) as err:
        open_acquisition(formats_dir / "lif/LeicaLASX_wavelength-sweep_example.lif")
    assert "'x_y_lambdaEmi') is a wavelength sweep (an emission λ dimension of 20)" in str(
        err.value
    )


def test_a_lif_plane_is_taken_at_tile_0_and_z_0_in_the_plugins_axes(formats_dir: Path) -> None:
    """Real LIF (M, T, C, Z, Y, X in bioio-lif): the plane a scene gives equals liffile's own
    read of that tile, time, channel at Z 0. Tests the indexing of other axes, which the
    refused mosaic never reaches."""
    import bioio
    import bioio_lif

    path = formats_dir / "lif/PR2729_frameOrderCombinedScanTypes.lif"
    reader = bioio.BioImage(path, reader=bioio_lif.Reader, chunk_dims="YX").reader
    array = reader.xarray_dask_data
    scene = SceneLayout("TileScan_001", array, 2, 2, 3, 64, 64, array.dtype, ["a", "b"], None)
    with liffile.LifFile(path) as lif:
        for t, c in ((0, 1), (1, 0)):
            want = lif.images[0].frames(T=t, C=c, Z=0, M=0).asarray()
            got = scene.plane(t, c).compute(scheduler="synchronous")
            np.testing.assert_array_equal(got, want.reshape(64, 64))


def test_scenes_that_differ_are_refused_naming_what_differs(tmp_path: Path) -> None:
    """Made layouts (no file): scene 1 with another shape and channel names."""
    a = SceneLayout("A", None, 5, 2, 1, 64, 64, np.dtype(np.uint16), ["GFP", "RFP"], None)
    b = SceneLayout("B", None, 5, 2, 1, 64, 80, np.dtype(np.uint16), ["GFP", "Cy5"], None)
    check_same_layout(tmp_path / "x.czi", [a, a])
    with pytest.raises(UnsupportedFormatError) as err:
        check_same_layout(tmp_path / "x.czi", [a, b])
    message = str(err.value)
    assert "scene 1 ('B') differs from scene 0 ('A')" in message
    assert "shape 64x80 (scene 0: 64x64)" in message and "'Cy5'" in message
    assert "frames" not in message  # only what differs


def _write_czi(path: Path, frames: np.ndarray, scenes: int = 1) -> Path:
    from pylibCZIrw import czi as pyczi

    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for s in range(scenes):
            for t, frame in enumerate(frames):
                writer.write(frame[..., None], location=(0, 100 * s), plane={"T": t}, scene=s)
    return path


def test_a_czi_without_times_uses_the_interval_given(tmp_path: Path) -> None:
    """Made CZI (pylibCZIrw, no time metadata): frames as written, times t x interval_min,
    and a note saying the file has none."""
    frames = np.random.default_rng(0).integers(0, 65535, (3, 12, 20), dtype=np.uint16)
    path = _write_czi(tmp_path / "plain.czi", frames)
    with open_acquisition(path) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 1.0, 2.0])
        assert "records no frame times" in acq.times_note and "--interval" in acq.times_note
    with open_acquisition(path, interval_min=2.5) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 2.5, 5.0])
        assert "2.5 min, the interval given" in acq.times_note
        for t in range(3):
            np.testing.assert_array_equal(acq.frame(0, 0, t), frames[t])


def test_czi_scenes_missing_from_the_metadata_are_refused(tmp_path: Path) -> None:
    """Made CZI with two scenes of data but no scene metadata, which bioio lists as one."""
    frames = np.zeros((2, 8, 8), dtype=np.uint16)
    path = _write_czi(tmp_path / "two.czi", frames, scenes=2)
    with pytest.raises(UnsupportedFormatError, match="hold 2 scenes but its metadata describe 1"):
        open_acquisition(path)


def test_pickle_round_trip_and_index_errors(formats_dir: Path) -> None:
    """Real CZI: a pickled acquisition re-opens with its options; indices out of range are
    refused naming the valid range."""
    with open_acquisition(formats_dir / CD, interval_min=5.0) as acq:
        clone = pickle.loads(pickle.dumps(acq))
        try:
            assert clone._options["interval_min"] == 5.0
            assert clone.channel_names == acq.channel_names
            np.testing.assert_array_equal(clone.frame(0, 1, 2), acq.frame(0, 1, 2))
            np.testing.assert_array_equal(clone.frame_times(0), acq.frame_times(0))
        finally:
            clone.close()
        with pytest.raises(FovOutOfRangeError, match="valid indices 0-0"):
            acq.frame(1, 0, 0)
        with pytest.raises(ChannelOutOfRangeError, match="1='LED470'"):
            acq.frame(0, 2, 0)
        with pytest.raises(FrameOutOfRangeError, match="3 frames"):
            acq.frame(0, 0, 3)
    with pytest.raises(ValueError, match="closed"):
        acq.frame(0, 0, 0)


def test_a_pinned_file_must_be_the_one_checked(formats_dir: Path) -> None:
    """Real CZI: opened with its own (st_dev, st_ino) it reads; with another, refused."""
    st = (formats_dir / CD).stat()
    with open_acquisition(formats_dir / CD, pinned=(st.st_dev, st.st_ino)) as acq:
        assert acq.n_frames == 3
    with pytest.raises(InboxPathError, match="no longer the file that was checked"):
        open_acquisition(formats_dir / CD, pinned=(st.st_dev, st.st_ino + 1))


def test_missing_extra_is_named_in_one_line(
    formats_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real CZI with bioio made unimportable (``sys.modules`` entry None): the message names
    the extra and the pip command, on one line."""
    monkeypatch.setitem(sys.modules, "bioio", None)
    with pytest.raises(UnsupportedFormatError) as err:
        open_acquisition(formats_dir / CD)
    message = str(err.value)
    assert "\n" not in message and str(formats_dir / CD) in message
    assert "pip install 'pyama-flow[formats]'" in message


def test_which_reader_and_what_is_refused(tmp_path: Path, formats_dir: Path) -> None:
    """Made files: an unknown extension, garbage named .czi, a truncated copy of the real
    CZI; a folder named like a CZI stays a TIFF sequence."""
    assert reader_for(formats_dir / CD) is BioioAcquisition
    assert reader_for(formats_dir / "lif/testdata_2channel_xz.lif") is BioioAcquisition
    folder = tmp_path / "looks_like.czi"
    folder.mkdir()
    assert reader_for(folder).__name__ == "TiffSequenceAcquisition"
    unknown = tmp_path / "scan.xyz"
    unknown.write_bytes(b"\0" * 64)
    with pytest.raises(UnsupportedFormatError, match=r"scan\.xyz: unknown file type '\.xyz'"):
        open_acquisition(unknown)
    garbage = tmp_path / "garbage.czi"
    garbage.write_bytes(b"not a czi file" * 100)
    with pytest.raises(UnsupportedFormatError, match=r"garbage\.czi: bioio's bioio-czi reader"):
        open_acquisition(garbage)
    truncated = tmp_path / "truncated.czi"
    truncated.write_bytes((formats_dir / CD).read_bytes()[:1_000_000])
    # Its subblock directory (near the start) survives the cut: bioio alone would open it.
    with pytest.raises(CorruptFileError, match=r"truncated\.czi: its image data run past the end"):
        open_acquisition(truncated)


def test_pyama_info_prints_a_czi(formats_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real CZI through the CLI: the reader, channels, times and the Z planes not read."""
    assert cli_main(["info", str(formats_dir / CD)]) == 0
    out = capsys.readouterr().out
    assert "format:   Zeiss CZI (through bioio) (BioioAcquisition)" in out
    assert "channels: 2 (0=LED555, 1=LED470)" in out and "shape:    170 x 240" in out
    assert "reader:   bioio with bioio-czi" in out and "z:        5 planes" in out
