"""TIFF stacks through OmeTiffAcquisition: ImageJ hyperstacks, Micro-Manager MMStack (one and
several files), NDTiff datasets, plain multi-page TIFFs given their axes.

Real files (shared/data/formats, read in place; the MMStack test set gunzipped into a temporary
folder, as Micro-Manager's own test does): the ImageJ-written C=3 hyperstack, Micro-Manager
1.4's 4-position T2 Z2 C2 test set and a single-plane Andor MMStack file, the three NDTiff
datasets of NDStorage. Made files (tifffile, in tmp_path): ImageJ T+C and T+Z+C hyperstacks
(no real one exists), plain multi-page TIFFs. Expected values are read independently: tifffile's
own ``asarray`` of the series, the per-plane Micro-Manager tags, the NDTiff index.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pyama_lib.core.errors import CorruptFileError, UnsupportedFormatError
from pyama_lib.io import open_acquisition
from pyama_lib.io.readers.formats import reader_for
from pyama_lib.io.readers.ome_tiff import OmeTiffAcquisition

MM_SET = "1.4compatTest_3"


@pytest.fixture(scope="module")
def mmstack(formats_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Micro-Manager's own test set, gunzipped (4 x 10.6 MB) once for the module."""
    folder = tmp_path_factory.mktemp("mm") / MM_SET
    folder.mkdir()
    for gz in (formats_dir / "micromanager_mmstack" / MM_SET).glob("*.ome.tif.gz"):
        with gzip.open(gz) as src, open(folder / gz.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return folder


# -- ImageJ ------------------------------------------------------------------------------
def test_real_imagej_hyperstack(formats_dir: Path) -> None:
    """Real: ImageJ 1.53c, C=3, T=1, finterval 1800.0028 s, 0.325 um/px."""
    path = formats_dir / "imagej_hyperstack" / "test_still_stack.tif"
    expected = tifffile.imread(path)  # (C, Y, X)
    with open_acquisition(path) as acq:
        assert acq.format_name == "ImageJ hyperstack"
        assert (acq.n_fovs, acq.n_frames, acq.n_channels, acq.shape) == (1, 1, 3, (300, 300))
        assert acq.dtype == np.uint16 and acq.channel_names == ["ch0", "ch1", "ch2"]
        assert acq.pixel_size_um == pytest.approx(0.325, rel=1e-6)
        np.testing.assert_array_equal(acq.frame_times(0), [0.0])
        assert acq.times_note is None
        for c in range(3):
            np.testing.assert_array_equal(acq.frame(0, c, 0), expected[c])


@pytest.mark.parametrize(("axes", "shape"), [("TCYX", (4, 2)), ("TZCYX", (3, 2, 2))])
def test_made_imagej_hyperstack_t_and_c(tmp_path: Path, axes: str, shape: tuple[int, ...]) -> None:
    """Made: ImageJ hyperstacks with T and C (and Z), finterval 90 s."""
    data = np.random.default_rng(1).integers(0, 4000, (*shape, 8, 10), dtype=np.uint16)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": axes, "finterval": 90.0})
    z0 = data if axes == "TCYX" else data[:, 0]  # T, C, Y, X
    with open_acquisition(path) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (1, z0.shape[0], 2)
        np.testing.assert_allclose(acq.frame_times(0), np.arange(z0.shape[0]) * 1.5)
        assert acq.times_note is None
        for t in range(z0.shape[0]):
            for c in range(2):
                np.testing.assert_array_equal(acq.frame(0, c, t), z0[t, c])


def test_made_imagej_without_interval_says_so(tmp_path: Path) -> None:
    """Made: an ImageJ T stack without finterval falls back to 1 min per frame, and says so."""
    path = tmp_path / "noint.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 4), np.uint8), imagej=True, metadata={"axes": "TYX"})
    with open_acquisition(path) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 1.0, 2.0])
        assert "no ImageJ frame interval" in acq.times_note


# -- Micro-Manager MMStack ---------------------------------------------------------------
def _mm_planes(folder: Path) -> dict[tuple[int, int, int, int], dict]:
    """Every plane's MicroManagerMetadata tag, by (position, t, c, z), read file by file."""
    planes = {}
    for path in folder.glob("*.ome.tif"):
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                tag = page.tags["MicroManagerMetadata"].value
                key = ("PositionIndex", "FrameIndex", "ChannelIndex", "SliceIndex")
                planes[tuple(int(tag[k]) for k in key)] = tag
    return planes


def test_real_mmstack_multi_file(mmstack: Path) -> None:
    """Real: Micro-Manager 1.4, 4 positions in 4 files, T2 Z2 C2; opened by folder or file."""
    with tifffile.TiffFile(next(mmstack.glob("*_000_000.ome.tif"))) as tif:
        expected = tif.series[0].asarray()  # R, T, Z, C, Y, X
    planes = _mm_planes(mmstack)
    for path in [mmstack, *sorted(mmstack.glob("*.ome.tif"))]:
        assert reader_for(path) is OmeTiffAcquisition
        with open_acquisition(path) as acq:
            assert acq.format_name == "Micro-Manager MMStack"
            assert (acq.n_fovs, acq.n_frames, acq.n_channels, acq.shape) == (4, 2, 2, (64, 64))
            assert acq.channel_names == ["Cy5", "DAPI"] and acq.pixel_size_um == 1.0
            np.testing.assert_allclose(acq.frame_times(0), [441 / 60_000, 5315 / 60_000])
            for fov in range(4):
                stamps = [planes[(fov, t, 0, 0)]["ElapsedTime-ms"] / 60_000 for t in range(2)]
                np.testing.assert_allclose(acq.frame_times(fov), stamps)
                for t in range(2):
                    for c in range(2):
                        np.testing.assert_array_equal(acq.frame(fov, c, t), expected[fov, t, 0, c])
            assert acq.times_note is None
            assert not acq._index.cacheable  # pages of 4 files: the cache sees one
            names = [planes[(fov, 0, 0, 0)]["PositionName"] for fov in range(4)]
            assert f"FOVs:     {', '.join(names)}" in acq.describe()
            clone = pickle.loads(pickle.dumps(acq))
            with clone:
                np.testing.assert_array_equal(clone.frame(3, 1, 1), expected[3, 1, 0, 1])


def test_mmstack_with_a_file_missing_is_refused(mmstack: Path, tmp_path: Path) -> None:
    """Real files, one of the 4 left out of the copy."""
    part = tmp_path / MM_SET
    part.mkdir()
    for path in sorted(mmstack.glob("*.ome.tif"))[:3]:
        shutil.copy(path, part / path.name)
    with pytest.raises(CorruptFileError, match="missing"):
        open_acquisition(part)


def test_real_single_plane_mmstack(formats_dir: Path, tmp_path: Path) -> None:
    """Real: Andor Zyla MMStack, one plane, 0.108 um/px; then a truncated copy of it."""
    folder = formats_dir / "micromanager_mmstack" / "HeLaS_Control_53BP1_IF_FISH_A647_WF1"
    path = next(folder.glob("*_MMStack_Pos0.ome.tif"))
    with tifffile.TiffFile(path) as tif:
        expected = tif.series[0].asarray()
        stamp = tif.pages[0].tags["MicroManagerMetadata"].value["ElapsedTime-ms"]
    with open_acquisition(folder) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.n_channels, acq.shape) == (1, 1, 1, (914, 914))
        assert acq.channel_names == ["Default"] and acq.pixel_size_um == 0.108
        np.testing.assert_allclose(acq.frame_times(0), [float(stamp) / 60_000])
        np.testing.assert_array_equal(acq.frame(0, 0, 0), expected)
    cut = tmp_path / path.name
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError) as err:
        open_acquisition(cut).frame(0, 0, 0)
    assert cut.name in str(err.value)


# -- NDTiff ------------------------------------------------------------------------------
def _ndtiff_expected(folder: Path) -> tuple[np.ndarray, list[dict]]:
    """tifffile's array of the dataset and the index entries' axes and metadata, in order."""
    stack = next(folder.glob("*_NDTiffStack.tif"))
    with tifffile.TiffFile(stack) as tif:
        data = tif.series[0].asarray()
    entries = []
    with open(stack, "rb") as fh:
        for axes, _, _, _, _, _, _, offset, size, _ in tifffile.read_ndtiff_index(
            folder / "NDTiff.index"
        ):
            fh.seek(offset)
            entries.append({"axes": axes, "meta": json.loads(fh.read(size))})
    return data, entries


@pytest.mark.parametrize(
    ("name", "frames", "elapsed_ms"),
    [
        ("ndtiff3.2_multichannel", 8, [0, 498, 890, 1255, 1645, 2055, 2420, 2767]),
        ("12_bit_pycromanager_mda", 4, [0, 25, 50, 76]),
    ],
)
def test_real_ndtiff_t_c(formats_dir: Path, name: str, frames: int, elapsed_ms: list) -> None:
    """Real NDTiff datasets (T, C [DAPI, FITC], Z in the first), opened by folder."""
    folder = formats_dir / "ndtiff" / name
    data, entries = _ndtiff_expected(folder)
    z0 = data[:, :, 0] if data.ndim == 5 else data  # T, C, Y, X
    first_planes = [
        e for e in entries if e["axes"]["channel"] == "DAPI" and e["axes"].get("z", 0) == 0
    ]
    stamps = {e["axes"]["time"]: e["meta"]["ElapsedTime-ms"] for e in first_planes}
    assert [stamps[t] for t in range(frames)] == elapsed_ms
    assert reader_for(folder) is OmeTiffAcquisition
    with open_acquisition(folder) as acq:
        assert acq.format_name == "Micro-Manager NDTiff"
        assert (acq.n_fovs, acq.n_frames, acq.n_channels, acq.shape) == (1, frames, 2, (64, 64))
        assert acq.channel_names == ["DAPI", "FITC"] and acq.dtype == np.uint16
        np.testing.assert_allclose(acq.frame_times(0), np.array(elapsed_ms) / 60_000)
        assert acq.times_note is None
        for t in range(frames):
            for c in range(2):
                np.testing.assert_array_equal(acq.frame(0, c, t), z0[t, c])
        if name.startswith("12_bit"):
            assert max(int(acq.frame(0, c, t).max()) for t in range(4) for c in range(2)) < 4096


def test_real_ndtiff_named_positions(formats_dir: Path) -> None:
    """Real NDTiff with 3 positions labelled Pos0..Pos2, indexed in the order Pos2, Pos0, Pos1."""
    folder = formats_dir / "ndtiff" / "labeled_positions_1"
    data, entries = _ndtiff_expected(folder)
    listed = [e["axes"]["position"] for e in entries]  # tifffile's R order
    with open_acquisition(next(folder.glob("*.tif"))) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.n_channels, acq.shape) == (3, 1, 1, (512, 512))
        assert "FOVs:     Pos0, Pos1, Pos2" in acq.describe()
        for fov in range(3):
            np.testing.assert_array_equal(acq.frame(fov, 0, 0), data[listed.index(f"Pos{fov}")])
            meta = entries[listed.index(f"Pos{fov}")]["meta"]
            np.testing.assert_allclose(acq.frame_times(fov), [meta["ElapsedTime-ms"] / 60_000])


# -- plain multi-page TIFFs --------------------------------------------------------------
def _plain(path: Path, n_pages: int) -> np.ndarray:
    data = np.random.default_rng(2).integers(0, 60000, (n_pages, 6, 7), dtype=np.uint16)
    with tifffile.TiffWriter(path) as writer:
        for page in data:  # separate pages without shape metadata: axes "IYX"
            writer.write(page, metadata=None)
    return data


@pytest.mark.parametrize(
    ("axes", "fovs", "frames", "channels", "index"),
    [
        ("TC2", 1, 6, 2, lambda p, t, c: t * 2 + c),
        ("C2TYX", 1, 6, 2, lambda p, t, c: c * 6 + t),
        ("T", 1, 12, 1, lambda p, t, c: t),
        ("P2T3C2", 2, 3, 2, lambda p, t, c: p * 6 + t * 2 + c),
        ("tz2c3", 1, 2, 3, lambda p, t, c: t * 6 + c),  # Z index 0 of each frame
    ],
)
def test_plain_stack_with_axes(
    tmp_path: Path, axes: str, fovs: int, frames: int, channels: int, index: Callable
) -> None:
    """Made: 12 pages that say nothing about their axes, given the axes option."""
    path = tmp_path / "plain.tif"
    data = _plain(path, 12)
    with open_acquisition(path, axes=axes) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (fovs, frames, channels)
        assert acq.format_name == "TIFF stack" and "plain TIFF stack" in acq.times_note
        for p in range(fovs):
            for t in range(frames):
                for c in range(channels):
                    np.testing.assert_array_equal(acq.frame(p, c, t), data[index(p, t, c)])
        clone = pickle.loads(pickle.dumps(acq))
        with clone:
            assert clone.n_frames == frames


@pytest.mark.parametrize(
    ("axes", "problem"),
    [
        (None, "give the axes"),
        ("TC5", "cannot describe"),
        ("TC", "2 sizes open"),
        ("TCT2", "not an axes description"),
        ("TX2", "not an axes description"),
    ],
)
def test_plain_stack_axes_refused(tmp_path: Path, axes: str | None, problem: str) -> None:
    """Made: 12 plain pages; no axes, or axes that cannot describe them."""
    path = tmp_path / "plain.tif"
    _plain(path, 12)
    with pytest.raises(UnsupportedFormatError, match=problem) as err:
        open_acquisition(path, **({"axes": axes} if axes else {}))
    assert "plain.tif" in str(err.value)


def test_axes_must_agree_with_the_files_own(tmp_path: Path) -> None:
    """Made: an OME-TIFF of T3 C2; a matching axes option is accepted, another refused."""
    data = np.zeros((3, 2, 6, 7), np.uint16)
    path = tmp_path / "own.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "TCYX"})
    with open_acquisition(path, axes="T3C2") as acq:
        assert (acq.n_frames, acq.n_channels) == (3, 2)
    with pytest.raises(UnsupportedFormatError, match="contradicts the file's own axes"):
        open_acquisition(path, axes="C2T")


def test_imagej_with_a_single_page_index(tmp_path: Path) -> None:
    """Made: ImageJ saves hyperstacks over 4 GB with one page index and the planes back to
    back; the same layout is made here by cutting a small file's page chain after page 0."""
    data = np.arange(3 * 2 * 16 * 20, dtype=np.uint16).reshape(3, 2, 16, 20)
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, data, imagej=True, metadata={"axes": "TCYX", "finterval": 60.0})
    with tifffile.TiffFile(full) as tif:
        first = tif.pages.first
        next_ifd = first.offset + 2 + 12 * len(first.tags)  # classic TIFF: 2 + 12 per tag
    raw = bytearray(full.read_bytes())
    raw[next_ifd : next_ifd + 4] = bytes(4)
    single = tmp_path / "single.tif"
    single.write_bytes(bytes(raw))
    with tifffile.TiffFile(single) as tif:
        assert len(tif.pages) == 1  # what the reader has to cope with
    with open_acquisition(single) as acq:
        assert (acq.n_frames, acq.n_channels) == (3, 2)
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 1.0, 2.0])
        for t in range(3):
            for c in range(2):
                np.testing.assert_array_equal(acq.frame(0, c, t), data[t, c])
    cut = tmp_path / "cut.tif"
    cut.write_bytes(bytes(raw[: len(raw) // 2]))  # into the planes
    with pytest.raises(CorruptFileError, match="cut.tif"):
        open_acquisition(cut)
