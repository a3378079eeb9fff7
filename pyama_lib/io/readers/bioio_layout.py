"""What a bioio scene holds, and what :class:`~pyama_lib.io.readers.bioio_files.BioioAcquisition`
refuses: one :class:`SceneLayout` per scene, the checks that keep out what is not a time-lapse
of XY planes, and the frame times that CZI and LIF files record in their own metadata.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyama_lib.core.errors import CorruptFileError, UnsupportedFormatError

_AXES = "TCZYX"
_CZI_SEGMENT = 32  # a ZISRAW segment header: 16-byte id, allocated and used size (int64)
_EXPORT = "export it as an OME-TIFF time-lapse (axes T, C, Y, X)"
# bioio's dimension letters beyond TCZYX, and what a size above 1 means.
_OTHER_DIMS = {
    "M": "mosaic tiles",
    "S": "samples per pixel (RGB)",
    "H": "phases",
    "V": "views",
    "I": "illuminations",
    "R": "rotations",
    "B": "acquisition blocks",
}


@dataclass(frozen=True)
class SceneLayout:
    """One scene (FOV) of a bioio file: its lazy array and the metadata read from it."""

    name: str
    array: Any  # xarray.DataArray backed by dask, in the plugin's own dimensions
    n_frames: int
    n_channels: int
    n_z: int
    height: int
    width: int
    dtype: np.dtype
    channel_names: list[str]
    pixel_size_um: float | None

    def plane(self, t: int, channel: int) -> Any:
        """The lazy (Y, X) dask array of frame ``t``, ``channel`` at Z index 0."""
        dims = self.array.dims
        where = {d: 0 for d in dims if d not in ("Y", "X")}
        where.update({d: i for d, i in (("T", t), ("C", channel)) if d in dims})
        return self.array.isel(where).transpose("Y", "X").data


def scene_layout(path: Path, reader: Any, index: int, name: str) -> SceneLayout:
    """Read scene ``index`` of a bioio ``reader``; refuse tiles, RGB and other extra axes."""
    reader.set_scene(index)
    array = reader.xarray_dask_data
    sizes = {str(d): int(n) for d, n in array.sizes.items()}
    where = f"scene {index} ({name!r})"
    for dim, n in sizes.items():
        if dim in _AXES or n <= 1:
            continue
        if dim == "M":
            problem = (
                f"is a mosaic of {n} tiles; PyAMA Flow tracks cells in one camera field per "
                "position: stitch the tiles in the acquisition software (ZEN: Stitching, LAS X: "
                "Mosaic Merge) and export the result, or export each tile as its own position"
            )
        elif dim == "S":
            problem = (
                f"has {n} samples per pixel (RGB); PyAMA Flow reads grey-level planes: acquire "
                "or export the colours as separate channels"
            )
        else:
            what = _OTHER_DIMS.get(dim, "an axis PyAMA Flow does not know")
            problem = (
                f"has a {dim} dimension of {n} ({what}); PyAMA Flow reads only T, C, Z, Y and X: "
                f"{_EXPORT}"
            )
        raise UnsupportedFormatError(path, f"{where} {problem}")
    height, width = sizes.get("Y", 1), sizes.get("X", 1)
    if height <= 1 or width <= 1:
        raise UnsupportedFormatError(
            path,
            f"{where} holds {height} x {width} pixel frames: a line or XZ scan, not XY images; "
            "PyAMA Flow segments cells in XY planes: acquire an XY time-lapse (xyt) instead",
        )
    n_channels = sizes.get("C", 1)
    names = [str(n) for n in (reader.channel_names or [])]
    if len(names) != n_channels:
        names = [f"ch{c}" for c in range(n_channels)]
    size_x = reader.physical_pixel_sizes.X  # µm in bioio's convention
    return SceneLayout(
        name=name,
        array=array,
        n_frames=sizes.get("T", 1),
        n_channels=n_channels,
        n_z=sizes.get("Z", 1),
        height=height,
        width=width,
        dtype=np.dtype(array.dtype),
        channel_names=names,
        pixel_size_um=float(size_x) if size_x is not None and size_x > 0 else None,
    )


def check_same_layout(path: Path, scenes: list[SceneLayout]) -> None:
    """Refuse scenes that differ from the first in frames, channels, shape or dtype."""
    first = scenes[0]
    for i, scene in enumerate(scenes[1:], start=1):
        differ = [
            f"{label} {got} (scene 0: {want})"
            for label, got, want in (
                ("frames", scene.n_frames, first.n_frames),
                ("channels", scene.channel_names, first.channel_names),
                ("shape", f"{scene.height}x{scene.width}", f"{first.height}x{first.width}"),
                ("dtype", scene.dtype, first.dtype),
            )
            if got != want
        ]
        if differ:
            raise UnsupportedFormatError(
                path,
                f"scene {i} ({scene.name!r}) differs from scene 0 ({first.name!r}) in "
                f"{'; '.join(differ)}; PyAMA Flow reads the scenes as FOVs of one time-lapse "
                "and needs them to match: export the scenes as separate files",
            )


def czi_times_s(metadata: Any, n_frames: int) -> np.ndarray | None:
    """Frame times in seconds from a CZI's ``Information/Image/Dimensions/T/Positions``:
    the per-frame ``List/Offsets``, else ``Interval`` start and increment; else None."""
    positions = metadata.find(".//Information/Image/Dimensions/T/Positions")
    if positions is None:
        return None
    offsets = positions.findtext("List/Offsets")
    if offsets:
        values = np.array(offsets.split(), dtype=np.float64)
        return values[:n_frames] if values.size >= n_frames else None
    increment = positions.findtext("Interval/Increment")
    if increment is None:
        return None  # e.g. ZEN black: times only in the binary TimeStamps attachment
    start = float(positions.findtext("Interval/Start") or 0.0)
    step = float(increment)
    if n_frames > 1 and not step > 0:
        return None
    return start + np.arange(n_frames, dtype=np.float64) * step


def check_czi_complete(path: Path) -> None:
    """Refuse a CZI whose last subblock runs past the end of the file (truncated, or still
    being written). The subblock directory often sits near the start, so bioio opens such a
    file and fails only at a frame's read, mid-run.

    The layout is the ZISRAW format's: the file header holds the directory's position
    (offset 52 of its data), the directory lists each subblock's file position (offset 6 of
    each 32-byte entry, followed by 20 bytes per dimension), and each subblock segment starts
    with its id and sizes. A file that does not parse so is left to bioio to refuse.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(_CZI_SEGMENT + 60)
        if not head.startswith(b"ZISRAWFILE") or len(head) < _CZI_SEGMENT + 60:
            return
        (directory,) = struct.unpack_from("<q", head, _CZI_SEGMENT + 52)
        f.seek(directory)
        header = f.read(_CZI_SEGMENT + 128)
        if not header.startswith(b"ZISRAWDIRECTORY") or len(header) < _CZI_SEGMENT + 4:
            return
        (count,) = struct.unpack_from("<i", header, _CZI_SEGMENT)
        last = 0
        for _ in range(count):
            entry = f.read(32)
            if len(entry) < 32 or not entry.startswith(b"DV"):
                return
            (position,) = struct.unpack_from("<q", entry, 6)
            (n_dims,) = struct.unpack_from("<i", entry, 28)
            f.seek(20 * n_dims, 1)
            last = max(last, position)
        f.seek(last)
        segment = f.read(_CZI_SEGMENT)
    end = last + _CZI_SEGMENT  # the used size: what the subblock's data actually fill
    end += struct.unpack_from("<q", segment, 24)[0] if len(segment) == _CZI_SEGMENT else 0
    if end > size:
        raise CorruptFileError(
            path,
            f"its image data run past the end of the file (to byte {end}, the file has "
            f"{size}); the file is truncated or still being written: wait for ZEN to finish "
            "or re-copy it",
        )


def check_czi_scene_count(path: Path, n_scenes: int) -> None:
    """Refuse a CZI whose image data hold more scenes than its metadata names: bioio-czi
    lists scenes from the metadata and would silently leave the others out."""
    import aicspylibczi  # bioio-czi's own dependency

    shapes = aicspylibczi.CziFile(path).get_dims_shape()
    in_data = max((d["S"][1] for d in shapes if "S" in d), default=1)
    if in_data != n_scenes:
        raise UnsupportedFormatError(
            path,
            f"its image data hold {in_data} scenes but its metadata describe {n_scenes}; "
            "bioio would leave scenes out: re-save the file in ZEN, or export it as OME-TIFF",
        )


def lif_scene_problems(path: Path) -> None:
    """Refuse LIF images that bioio-lif presents as XY stacks but are not: wavelength
    sweeps (bioio-lif drops the λ axis) and XZ scans (it calls their Z rows Y)."""
    import liffile  # bioio-lif's own dependency

    try:
        with liffile.LifFile(path) as lif:
            images = [(image.name, tuple(image.dims), dict(image.sizes)) for image in lif.images]
    except Exception as exc:
        raise UnsupportedFormatError(
            path,
            f"cannot be read as a Leica LIF file ({type(exc).__name__}: {exc}); the file is "
            "damaged or truncated: re-copy it, or export it from LAS X as OME-TIFF",
        ) from exc
    for i, (name, dims, sizes) in enumerate(images):
        where = f"image {i} ({name!r})"
        sweep = [d for d in dims if d in ("λ", "Λ")]
        if sweep:
            kind = "an emission" if sweep[0] == "λ" else "an excitation"
            raise UnsupportedFormatError(
                path,
                f"{where} is a wavelength sweep ({kind} λ dimension of {sizes[sweep[0]]}); "
                "PyAMA Flow reads time-lapses at fixed wavelengths: acquire the detection "
                "bands as channels (xyt with channels) instead",
            )
        if dims[-2:] != ("Y", "X"):
            raise UnsupportedFormatError(
                path,
                f"{where} is an {dims[-1]}{dims[-2]} scan (its planes are {dims[-2]} x "
                f"{dims[-1]}, not Y x X); PyAMA Flow segments cells in XY planes: acquire an "
                "XY time-lapse (xyt) instead",
            )


def lif_times_s(path: Path, n_images: int, n_frames: int) -> list[np.ndarray | None]:
    """Each LIF image's frame times in seconds: its time dimension (``DimID`` 4) spans
    ``Length`` over ``NumberOfElements - 1`` steps, as LAS X records it; None without one."""
    import liffile

    times: list[np.ndarray | None] = []
    with liffile.LifFile(path) as lif:
        for image in lif.images[:n_images]:
            dims = image.xml_element.findall(".//DimensionDescription")
            t = next((d for d in dims if d.get("DimID") == "4"), None)
            times.append(_lif_dimension_times(t, n_frames))
    return times


def _lif_dimension_times(dim: Any, n_frames: int) -> np.ndarray | None:
    if dim is None or dim.get("Unit") != "s":
        return None
    count = int(dim.get("NumberOfElements", 0))
    length = float(dim.get("Length", 0.0))
    if count != n_frames or count < 2 or not length > 0:
        return None
    return np.arange(n_frames, dtype=np.float64) * (length / (count - 1))
