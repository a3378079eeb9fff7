"""OME-TIFF acquisitions: :class:`OmeTiffAcquisition` reads, :func:`write_ome_tiff` writes.

One TIFF series per position (FOV), axes TCYX or TCZYX (Z index 0 is read). Frames are read one
page at a time, never as a whole stack, so a 100 GB file costs one frame of memory. Writing
streams frames to ``tifffile`` the same way.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
from numpy.typing import ArrayLike

from pyama_lib.core.errors import (
    CorruptFileError,
    InputDataError,
    PyamaError,
    UnsupportedFormatError,
)
from pyama_lib.io.readers.acquisition import Acquisition

FovFrames = Iterable[np.ndarray]
"""One FOV to write: its frames in time order, each a (C, H, W) array."""

_SUPPORTED_AXES = set("TCZYX")
# OME UnitsTime symbols → minutes (OME's default unit for DeltaT is the second).
_MINUTES_PER_UNIT = {"s": 1 / 60, "ms": 1 / 60_000, "µs": 1 / 60e6, "us": 1 / 60e6}
_MINUTES_PER_UNIT |= {"min": 1.0, "h": 60.0, "d": 1440.0}


class OmeTiffAcquisition(Acquisition):
    """A multi-position OME-TIFF (or plain/ImageJ TIFF with T/C/Z axes) as an Acquisition.

    Parameters
    ----------
    path
        The ``.ome.tif``/``.ome.tiff``/``.tif`` file.
    interval_min
        Minutes between frames, used only when the file records no frame times (no OME
        ``DeltaT`` per plane, no ``TimeIncrement``); without it, PyAMA's 1 min.
    pinned
        ``(st_dev, st_ino)`` the opened file must have (see :class:`Acquisition`).
    """

    def __init__(
        self,
        path: str | Path,
        interval_min: float | None = None,
        pinned: Sequence[int] | None = None,
    ) -> None:
        super().__init__(path, interval_min=interval_min, pinned=pinned)

    def _fileno(self) -> int | None:
        return self._tif.filehandle.fileno() if self._tif is not None else None

    # -- Acquisition interface --------------------------------------------------------
    def _open(self) -> None:
        self._lock = threading.Lock()
        self._tif: tifffile.TiffFile | None = None
        warnings = _TiffWarnings()
        try:
            with warnings:
                self._tif = tifffile.TiffFile(self.path)
                self._index_series(self._tif)
        except Exception as exc:
            self._close()
            if isinstance(exc, PyamaError) and not warnings.damage:
                raise
            problem = warnings.damage[0] if warnings.damage else f"{type(exc).__name__}: {exc}"
            raise CorruptFileError(
                self.path,
                f"cannot be read as a TIFF file ({problem}); the file is damaged, truncated, "
                "still being written or not a TIFF; re-copy or re-export it",
            ) from exc
        if warnings.damage:
            # tifffile only logs broken IFD/tag offsets and falls back to what it can read, which
            # would silently present a truncated file as a shorter or plain one.
            self._close()
            raise CorruptFileError(
                self.path,
                f"the TIFF structure is damaged ({warnings.damage[0]}); the file is truncated "
                "or still being written; wait for the microscope to finish or re-copy it",
            )

    def _read_frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        page = self._pages[fov][t * self._t_stride + channel * self._c_stride]
        try:
            with self._lock:  # one file handle: seek + read must not interleave across threads
                frame = page.asarray()
        except Exception as exc:
            raise CorruptFileError(
                self.path,
                f"frame {t} of FOV {fov}, channel {channel} cannot be decoded "
                f"({type(exc).__name__}: {exc}); the file is damaged, re-export or re-copy it",
            ) from exc
        return frame.reshape(self.height, self.width)

    def _close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def frame_times(self, fov: int) -> np.ndarray:
        self.check_fov(fov)
        times = self._times[fov]
        if times is None:
            return np.arange(self.n_frames, dtype=np.float64) * self._interval_min
        return times.copy()

    # -- indexing ---------------------------------------------------------------------
    def _index_series(self, tif: tifffile.TiffFile) -> None:
        all_series = list(tif.series)
        if not all_series:
            raise CorruptFileError(self.path, "the TIFF holds no image data")
        layouts = [_series_layout(self.path, s, i) for i, s in enumerate(all_series)]
        first = layouts[0]
        for i, lay in enumerate(layouts[1:], start=1):
            if (lay["sizes"], lay["dtype"]) != (first["sizes"], first["dtype"]):
                raise UnsupportedFormatError(
                    self.path,
                    f"series {i} has sizes {lay['sizes']} and dtype {lay['dtype']} but series 0 "
                    f"has {first['sizes']} and {first['dtype']}; PyAMA Flow needs every position "
                    "to share shape and dtype (split the file per position)",
                )
        sizes = first["sizes"]
        self.n_fovs = len(all_series)
        self.n_frames, self.n_channels = sizes["T"], sizes["C"]
        self.height, self.width = sizes["Y"], sizes["X"]
        self.dtype = np.dtype(first["dtype"])
        self._t_stride, self._c_stride = first["strides"]["T"], first["strides"]["C"]
        self._pages = [lay["pages"] for lay in layouts]
        _check_pages_in_file(self.path, self._pages, os.path.getsize(self.path))

        images = _ome_images(tif.ome_metadata) if tif.is_ome else []
        if tif.is_ome and len(images) != self.n_fovs:
            images = []  # cannot pair OME Images with series: no names, no DeltaT
        names = [_channel_names(img, self.n_channels) for img in images] or [None]
        if any(n != names[0] for n in names):
            raise UnsupportedFormatError(
                self.path,
                f"positions have different channels ({names[0]} vs "
                f"{next(n for n in names if n != names[0])}); split the file per channel set",
            )
        self.channel_names = names[0] or [f"ch{c}" for c in range(self.n_channels)]
        self.pixel_size_um = _pixel_size_um(images[0]) if images else None
        times = [_times_minutes(self.path, img, self.n_frames) for img in images]
        self._times: list[np.ndarray | None] = times or [None] * self.n_fovs
        given = self._options["interval_min"]
        self._interval_min = 1.0 if given is None else float(given)
        if any(t is None for t in self._times):
            note = f"{self.path}: the file records no frame times (no OME DeltaT or TimeIncrement)"
            if given is None:
                note += (
                    "; frame t is taken at t x 1 min (PyAMA's fallback). Give the real interval "
                    "with --interval MINUTES (pyama process, pyama info)"
                )
            else:
                note += f"; frame t is taken at t x {self._interval_min:g} min, the interval given"
            self.times_note = note


class _TiffWarnings(logging.Handler):
    """Collects tifffile's log warnings about broken offsets while a file is opened."""

    _DAMAGE = ("invalid", "corrupt", "truncat", "missing", "out of range")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.damage: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(word in message.lower() for word in self._DAMAGE):
            self.damage.append(message)

    def __enter__(self) -> _TiffWarnings:
        logger = logging.getLogger("tifffile")
        self._saved_level = logger.level
        if not logger.isEnabledFor(logging.WARNING):  # an app silenced it: we still need them
            logger.setLevel(logging.WARNING)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("tifffile")
        logger.removeHandler(self)
        logger.setLevel(self._saved_level)


def _series_layout(path: Path, series: Any, index: int) -> dict[str, Any]:
    """Sizes per axis, page strides and the page list of one series; rejects other layouts."""
    axes, shape = series.axes, tuple(series.shape)
    if not (set(axes) <= _SUPPORTED_AXES and axes.endswith("YX")):
        raise UnsupportedFormatError(
            path,
            f"series {index} has axes {axes!r} (shape {shape}); PyAMA Flow reads one series per "
            "position with axes TCYX or TCZYX (T, C and Z optional); RGB or unlabelled stacks "
            "must be re-exported as OME-TIFF",
        )
    sizes = dict.fromkeys("TCZ", 1) | dict(zip(axes, shape, strict=True))
    plane_axes = axes[:-2]
    # Pages are stored in C order over the non-YX axes: stride of an axis = product of later sizes.
    strides = {ax: math.prod(shape[i + 1 : len(plane_axes)]) for i, ax in enumerate(plane_axes)}
    strides = dict.fromkeys("TCZ", 0) | strides
    pages = list(series.pages)
    n_planes = math.prod(shape[: len(plane_axes)])
    if len(pages) != n_planes or any(p is None for p in pages):
        present = sum(p is not None for p in pages)
        raise CorruptFileError(
            path,
            f"series {index} should hold {n_planes} planes but only {present} can be found; the "
            "file is truncated or incomplete (still being written?); re-copy it",
        )
    return {"sizes": sizes, "dtype": str(series.dtype), "strides": strides, "pages": pages}


def _check_pages_in_file(path: Path, pages: list[list[Any]], file_size: int) -> None:
    """Raise CorruptFileError when any page's pixel data lies beyond the end of the file."""
    for fov, fov_pages in enumerate(pages):
        for page in fov_pages:
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
            if max(ends, default=0) > file_size:
                raise CorruptFileError(
                    path,
                    f"the pixel data of FOV {fov} run past the end of the file "
                    f"({max(ends)} > {file_size} bytes); the file is truncated, re-copy it",
                )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_images(xml: str | None) -> list[ET.Element]:
    """The OME ``Pixels`` elements that hold data, in file order (as tifffile's series)."""
    if not xml:
        return []
    root = ET.fromstring(xml)
    pixels = [
        px
        for image in root
        if _local(image.tag) == "Image"
        for px in image
        if _local(px.tag) == "Pixels"
    ]
    # tifffile skips Images without TiffData; pairing must skip them too.
    return [px for px in pixels if any(_local(e.tag) == "TiffData" for e in px)]


def _channel_names(pixels: ET.Element, n_channels: int) -> list[str]:
    chans = [e for e in pixels if _local(e.tag) == "Channel"]
    names = [e.get("Name") or f"ch{i}" for i, e in enumerate(chans)]
    return (names + [f"ch{i}" for i in range(len(names), n_channels)])[:n_channels]


_MICROMETRES_PER_UNIT = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}


def _pixel_size_um(pixels: ET.Element) -> float | None:
    """``PhysicalSizeX`` in µm (OME's default unit), or None when absent or in another unit."""
    size, unit = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit", "µm")
    if size is None or unit not in _MICROMETRES_PER_UNIT:
        return None
    um = float(size) * _MICROMETRES_PER_UNIT[unit]
    return um if um > 0 else None


def _times_minutes(path: Path, pixels: ET.Element, n_frames: int) -> np.ndarray | None:
    """Frame times in minutes: the planes' DeltaT, else ``Pixels@TimeIncrement`` per frame,
    else None (the file has none)."""
    times = _delta_t_minutes(path, pixels, n_frames)
    increment = pixels.get("TimeIncrement")
    if times is not None or increment is None:
        return times
    unit = pixels.get("TimeIncrementUnit", "s")
    if unit not in _MINUTES_PER_UNIT:
        raise UnsupportedFormatError(
            path,
            f"OME TimeIncrementUnit {unit!r} is not a time unit PyAMA Flow knows (s, ms, min, h)",
        )
    step = float(increment) * _MINUTES_PER_UNIT[unit]
    if not np.isfinite(step) or step <= 0:
        return None
    return np.arange(n_frames, dtype=np.float64) * step


def _delta_t_minutes(path: Path, pixels: ET.Element, n_frames: int) -> np.ndarray | None:
    """Per-frame times in minutes from Plane DeltaT (Z 0, first channel), or None if incomplete."""
    times: dict[int, float] = {}
    for plane in pixels:
        if _local(plane.tag) != "Plane" or plane.get("DeltaT") is None:
            continue
        if int(plane.get("TheZ", 0)) != 0:
            continue
        t = int(plane.get("TheT", 0))
        unit = plane.get("DeltaTUnit", "s")
        if unit not in _MINUTES_PER_UNIT:
            raise UnsupportedFormatError(
                path, f"OME DeltaTUnit {unit!r} is not a time unit PyAMA Flow knows (s, ms, min, h)"
            )
        # The first channel's plane wins: channels of one frame are taken a few ms apart.
        times.setdefault(t, float(plane.get("DeltaT", "nan")) * _MINUTES_PER_UNIT[unit])
    if not all(t in times for t in range(n_frames)):
        return None
    out = np.array([times[t] for t in range(n_frames)], dtype=np.float64)
    return out if np.isfinite(out).all() else None


# -- writing ------------------------------------------------------------------------------
def write_ome_tiff(
    path: str | Path,
    fovs: Iterable[FovFrames],
    channel_names: Sequence[str],
    times_min: ArrayLike,
    *,
    compression: str | None = None,
    delta_t_unit: Literal["s", "min"] = "s",
    pixel_size_um: float | None = None,
) -> Path:
    """Write an OME-TIFF, one series per FOV (axes TCYX), streaming one frame at a time.

    Parameters
    ----------
    path
        Output file (``.ome.tif``). Written to ``<path>.partial`` and renamed when complete, so
        a watcher never sees a half-written acquisition.
    fovs
        One :data:`FovFrames` per FOV: an iterable (a generator is fine) of ``len(times_min)``
        arrays of shape (C, H, W); all FOVs share shape and dtype.
    channel_names
        C names, stored as OME ``Channel Name``.
    times_min
        Frame times in minutes, shape (T,) shared by all FOVs or (n_fovs, T); stored as
        per-plane OME ``DeltaT``.
    compression
        A ``tifffile`` compression (``"zlib"``, ...) or None (fastest, the default).
    delta_t_unit
        Unit of the stored ``DeltaT``: seconds (OME's default, what most readers assume) or min.
    pixel_size_um
        Stored as OME ``PhysicalSizeX``/``PhysicalSizeY`` (µm) when given.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    times = np.asarray(times_min, dtype=np.float64)
    if times.ndim not in (1, 2):
        raise InputDataError(f"{path}: times_min must be (T,) or (n_fovs, T), got {times.shape}")
    n_frames, n_ch = times.shape[-1], len(channel_names)
    partial = path.with_name(path.name + ".partial")
    scale = 60.0 if delta_t_unit == "s" else 1.0
    first_key: tuple[tuple[int, ...], np.dtype] | None = None
    try:
        with tifffile.TiffWriter(partial, bigtiff=True, ome=True) as writer:
            for fov, frames in enumerate(fovs):
                head, planes = _planes(path, fov, frames, n_frames, n_ch)
                if first_key is None:
                    first_key = (head.shape, head.dtype)
                elif (head.shape, head.dtype) != first_key:
                    raise InputDataError(
                        f"{path}: FOV {fov} frames are {head.shape} {head.dtype}, FOV 0's are "
                        f"{first_key[0]} {first_key[1]}; all FOVs must match"
                    )
                fov_times = times if times.ndim == 1 else times[fov]
                delta_t = np.repeat(fov_times * scale, n_ch).tolist()
                metadata = {
                    "axes": "TCYX",
                    "Name": f"fov_{fov:03d}",
                    "Channel": {"Name": list(channel_names)},
                    "Plane": {"DeltaT": delta_t, "DeltaTUnit": [delta_t_unit] * len(delta_t)},
                }
                if pixel_size_um is not None:
                    metadata["PhysicalSizeX"] = metadata["PhysicalSizeY"] = pixel_size_um
                writer.write(
                    planes,
                    shape=(n_frames, n_ch, *head.shape[1:]),
                    dtype=head.dtype,
                    photometric="minisblack",
                    compression=compression,
                    metadata=metadata,
                )
                next(planes, None)  # resumes the generator: raises if the FOV has extra frames
        if first_key is None:
            raise InputDataError(f"{path}: no FOVs given; nothing to write")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _planes(
    path: Path, fov: int, frames: FovFrames, n_frames: int, n_ch: int
) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """Peek a FOV's first frame (for shape/dtype) and return an iterator over its 2-D planes."""
    it = iter(frames)
    head = next(it, None)
    if head is None:
        raise InputDataError(f"{path}: FOV {fov} has no frames; expected {n_frames}")
    head = np.asarray(head)
    if head.ndim != 3 or head.shape[0] != n_ch:
        raise InputDataError(
            f"{path}: FOV {fov} frames must be (C, H, W) with C={n_ch} channels, got {head.shape}"
        )

    def planes() -> Iterator[np.ndarray]:
        count = 0
        for t, frame in enumerate(itertools.chain([head], it)):
            frame = np.asarray(frame)
            if frame.shape != head.shape or frame.dtype != head.dtype:
                raise InputDataError(
                    f"{path}: FOV {fov} frame {t} is {frame.shape} {frame.dtype}, "
                    f"frame 0 is {head.shape} {head.dtype}"
                )
            count += 1
            if count > n_frames:
                raise InputDataError(f"{path}: FOV {fov} has more than {n_frames} frames")
            yield from frame
        if count != n_frames:
            raise InputDataError(f"{path}: FOV {fov} has {count} frames, expected {n_frames}")

    return head, planes()
