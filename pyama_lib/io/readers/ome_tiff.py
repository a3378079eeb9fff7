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
from pyama_lib.io.readers.index_cache import lease_index
from pyama_lib.io.readers.ome_metadata import (
    ome_channel_names,
    ome_pixel_size_um,
    ome_pixels,
    ome_times_minutes,
)

FovFrames = Iterable[np.ndarray]
"""One FOV to write: its frames in time order, each a (C, H, W) array."""

_SUPPORTED_AXES = set("TCZYX")


class OmeTiffAcquisition(Acquisition):
    """A multi-position OME-TIFF (or plain/ImageJ TIFF with T/C/Z axes) as an Acquisition.

    The file's index (every series' pages, its OME metadata) is built once per process and
    shared by every open of the same unchanged file (see
    :mod:`~pyama_lib.io.readers.index_cache`): opening one FOV of a file of a thousand costs
    what it does in a file of four.

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
        return None if self._lease.released else self._index.fileno()

    # -- Acquisition interface --------------------------------------------------------
    def _open(self) -> None:
        interval_min = self._options["interval_min"]
        self._lease = lease_index(
            self.path,
            (type(self).__name__, interval_min),
            lambda: _TiffIndex.build(self.path, interval_min),
        )
        self._index = self._lease.value
        self._adopt(self._index)

    def _read_frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        if self._lease.released:
            raise ValueError(f"{self.path}: the acquisition is closed")
        index = self._index
        page = index.pages[fov][t * index.t_stride + channel * index.c_stride]
        try:
            # One file handle: its seek + read must not interleave across threads, while the
            # decoding (zlib and the like) may run in parallel outside the lock.
            frame = page.asarray(lock=index.lock)
        except Exception as exc:
            raise CorruptFileError(
                self.path,
                f"frame {t} of FOV {fov}, channel {channel} cannot be decoded "
                f"({type(exc).__name__}: {exc}); the file is damaged, re-export or re-copy it",
            ) from exc
        return frame.reshape(self.height, self.width)

    def _close(self) -> None:
        self._lease.release()

    def frame_times(self, fov: int) -> np.ndarray:
        self.check_fov(fov)
        times = self._index.times[fov]
        if times is None:
            return np.arange(self.n_frames, dtype=np.float64) * self._index.interval_min
        return times.copy()


class _TiffIndex:
    """An opened, indexed TIFF: what every :class:`OmeTiffAcquisition` of the file shares.

    Holds the ``tifffile.TiffFile`` (all IFDs read), each FOV's pages, the metadata attributes
    and the lock of the one file handle. Implements
    :class:`~pyama_lib.io.readers.index_cache.Indexed`.
    """

    times_note: str | None = None

    def __init__(self, path: Path, tif: tifffile.TiffFile, interval_min: float | None) -> None:
        self.path, self.tif = path, tif
        self.lock = threading.RLock()
        self._index_series(interval_min)
        # Pages of other files (a multi-file OME-TIFF) would make the index depend on files
        # whose changes the cache does not see.
        self.cacheable = all(p.parent is tif for fov in self.pages for p in fov)

    @classmethod
    def build(cls, path: Path, interval_min: float | None) -> _TiffIndex:
        """Open and index ``path``; a damaged or unsupported file raises, leaving nothing open."""
        tif: tifffile.TiffFile | None = None
        warnings = _TiffWarnings()
        try:
            with warnings:
                tif = tifffile.TiffFile(path)
                index = cls(path, tif, interval_min)
        except Exception as exc:
            if tif is not None:
                tif.close()
            if isinstance(exc, PyamaError) and not warnings.damage:
                raise
            problem = warnings.damage[0] if warnings.damage else f"{type(exc).__name__}: {exc}"
            raise CorruptFileError(
                path,
                f"cannot be read as a TIFF file ({problem}); the file is damaged, truncated, "
                "still being written or not a TIFF; re-copy or re-export it",
            ) from exc
        if warnings.damage:
            # tifffile only logs broken IFD/tag offsets and falls back to what it can read, which
            # would silently present a truncated file as a shorter or plain one.
            tif.close()
            raise CorruptFileError(
                path,
                f"the TIFF structure is damaged ({warnings.damage[0]}); the file is truncated "
                "or still being written; wait for the microscope to finish or re-copy it",
            )
        return index

    def fileno(self) -> int | None:
        handle = self.tif.filehandle
        return None if handle.closed else handle.fileno()

    def reopen(self) -> None:
        self.tif.filehandle.open()  # by the path tifffile resolved; the cache checks its identity

    def close(self) -> None:
        self.tif.close()

    def _index_series(self, interval_min: float | None) -> None:
        path, tif = self.path, self.tif
        all_series = list(tif.series)
        if not all_series:
            raise CorruptFileError(path, "the TIFF holds no image data")
        layouts = [_series_layout(path, s, i) for i, s in enumerate(all_series)]
        first = layouts[0]
        for i, lay in enumerate(layouts[1:], start=1):
            if (lay["sizes"], lay["dtype"]) != (first["sizes"], first["dtype"]):
                raise UnsupportedFormatError(
                    path,
                    f"series {i} has sizes {lay['sizes']} and dtype {lay['dtype']} but series 0 "
                    f"has {first['sizes']} and {first['dtype']}; PyAMA Flow needs every position "
                    "to share shape and dtype (split the file per position)",
                )
        sizes = first["sizes"]
        self.n_fovs = len(all_series)
        self.n_frames, self.n_channels = sizes["T"], sizes["C"]
        self.height, self.width = sizes["Y"], sizes["X"]
        self.dtype = np.dtype(first["dtype"])
        self.t_stride, self.c_stride = first["strides"]["T"], first["strides"]["C"]
        self.pages: list[list[Any]] = [lay["pages"] for lay in layouts]
        _check_pages_in_file(path, self.pages, os.path.getsize(path))

        images = ome_pixels(tif.ome_metadata) if tif.is_ome else []
        if tif.is_ome and len(images) != self.n_fovs:
            images = []  # cannot pair OME Images with series: no names, no DeltaT
        names = [ome_channel_names(img, self.n_channels) for img in images] or [None]
        if any(n != names[0] for n in names):
            raise UnsupportedFormatError(
                path,
                f"positions have different channels ({names[0]} vs "
                f"{next(n for n in names if n != names[0])}); split the file per channel set",
            )
        self.channel_names = names[0] or [f"ch{c}" for c in range(self.n_channels)]
        self.pixel_size_um = ome_pixel_size_um(images[0]) if images else None
        times = [ome_times_minutes(path, img, self.n_frames) for img in images]
        self.times: list[np.ndarray | None] = times or [None] * self.n_fovs
        self.interval_min = 1.0 if interval_min is None else float(interval_min)
        if any(t is None for t in self.times):
            note = f"{path}: the file records no frame times (no OME DeltaT or TimeIncrement)"
            if interval_min is None:
                note += (
                    "; frame t is taken at t x 1 min (PyAMA's fallback). Give the real interval "
                    "with --interval MINUTES (pyama process, pyama info)"
                )
            else:
                note += f"; frame t is taken at t x {self.interval_min:g} min, the interval given"
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
