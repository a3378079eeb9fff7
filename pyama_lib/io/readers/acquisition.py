"""One interface over every acquisition format: the :class:`Acquisition` base class.

Readers subclass :class:`Acquisition`; :func:`pyama_lib.io.open_acquisition` picks the
reader. An acquisition holds an open file handle, so it is a context manager; it pickles as its
path and options and re-opens lazily in the receiving process, which is what spawned
Prefect/Dask workers need.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from pyama_lib.core.errors import (
    AcquisitionNotFoundError,
    ChannelOutOfRangeError,
    FovOutOfRangeError,
    FrameOutOfRangeError,
    InboxPathError,
)

# The metadata attributes every reader sets in ``_open``.
_METADATA = ("n_fovs", "n_frames", "n_channels", "height", "width", "dtype", "channel_names")
_METADATA += ("pixel_size_um", "times_note")


class Acquisition(ABC):
    """A multi-FOV time-lapse: ``frame(fov, channel, t)`` gives one 2-D image.

    Subclasses set the metadata attributes in ``_open`` and implement ``_read_frame`` and
    ``_close``. Indices are validated here, before a reader is touched. Every reader takes the
    option ``pinned=(st_dev, st_ino)``: the file it opened must be that one (the inbox service
    pins the file it checked), else :class:`~pyama_lib.core.errors.InboxPathError`.
    """

    path: Path
    base_name: str
    format_name: str = "acquisition"  # what the input is, in words (``pyama info``)
    n_fovs: int
    n_frames: int
    n_channels: int
    height: int
    width: int
    dtype: np.dtype
    channel_names: list[str]
    # Micrometres per pixel when the file is calibrated (the store's OME-Zarr scale), else None.
    pixel_size_um: float | None = None
    # Set when the file holds no frame times and the reader assumes a fixed interval: a
    # sentence saying so, for the run's log, run.yaml and ``pyama info``.
    times_note: str | None = None

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path)
        # Options that cross into workers (pickling); an unset pin is no option at all.
        self._options = {k: v for k, v in options.items() if k != "pinned" or v is not None}
        if not self.path.exists():
            raise AcquisitionNotFoundError(
                self.path, "no such file; check the path and that the share is mounted"
            )
        self.base_name = acquisition_base_name(self.path)
        self._open()
        if options.get("pinned") is not None:
            self._check_pinned(options["pinned"])

    # -- reader interface -------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Open the file, validate it and set the metadata attributes."""

    @abstractmethod
    def _read_frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        """Return one frame; indices are already validated."""

    @abstractmethod
    def _close(self) -> None:
        """Release file handles."""

    @abstractmethod
    def frame_times(self, fov: int) -> np.ndarray:
        """Times of the FOV's frames in minutes, float64 array of length ``n_frames``."""

    def _fileno(self) -> int | None:
        """The descriptor of the open file, where the reader exposes it."""
        return None

    def _adopt(self, index: Any) -> None:
        """Take the metadata attributes from an index shared by several opens of one file
        (:mod:`~pyama_lib.io.readers.index_cache`); lists are copied, so that one acquisition
        altering its own cannot alter the others'."""
        for name in _METADATA:
            value = getattr(index, name)
            setattr(self, name, list(value) if isinstance(value, list) else value)

    def _check_pinned(self, pinned: Sequence[int]) -> None:
        """Refuse a file that is not the one checked before (``pinned``: its device and inode).

        A path checked once and opened again later can meanwhile lead elsewhere (a folder
        swapped for a symlink): the file actually opened must be the one that was checked.
        """
        fd = self._fileno()
        st = os.fstat(fd) if fd is not None else os.stat(self.path)
        if (st.st_dev, st.st_ino) != tuple(pinned):
            self._close()
            raise InboxPathError(
                self.path,
                "is no longer the file that was checked (it was replaced, or the path now "
                "leads elsewhere through a symlink); refused, nothing read",
            )

    # -- public API ---------------------------------------------------------------------
    def frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        """The 2-D image (height, width) of one FOV, channel and time point."""
        self.check_fov(fov)
        self.check_channel(channel)
        if not 0 <= t < self.n_frames:
            raise FrameOutOfRangeError(
                self.path, f"frame {t} is out of range: the file has {self.n_frames} frames"
            )
        return self._read_frame(fov, channel, t)

    def check_fov(self, fov: int) -> None:
        if not 0 <= fov < self.n_fovs:
            raise FovOutOfRangeError(
                self.path,
                f"FOV {fov} is out of range: the file has {self.n_fovs} FOV(s), "
                f"valid indices 0-{self.n_fovs - 1}",
            )

    def check_channel(self, channel: int) -> None:
        if not 0 <= channel < self.n_channels:
            names = ", ".join(f"{i}={n!r}" for i, n in enumerate(self.channel_names))
            raise ChannelOutOfRangeError(
                self.path,
                f"channel {channel} is out of range: the file has {self.n_channels} "
                f"channel(s) ({names})",
            )

    def describe(self) -> list[str]:
        """Lines saying how the input was understood (``pyama info``), beyond the metadata."""
        return []

    def check_files(self) -> None:  # noqa: B027 (readers whose open checks all do nothing)
        """Check what opening did not (a sequence's every image); a run calls it once while
        planning, before anything is written."""

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Only the path and options cross a process boundary; the handle is re-opened there.
        return {"path": str(self.path), "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], **state["options"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, fovs={self.n_fovs}, "
            f"frames={self.n_frames}, channels={self.channel_names}, "
            f"shape={self.height}x{self.width}, dtype={self.dtype})"
        )


class LeasedAcquisition(Acquisition):
    """A reader whose index is leased from the per-process cache
    (:func:`~pyama_lib.io.readers.index_cache.lease_index`) in ``_open``: closing gives the
    lease back, and the index holds each FOV's frame times (``times``, None where the file
    records none: frame index × the index's ``interval_min``)."""

    _lease: Any
    _index: Any

    def _close(self) -> None:
        self._lease.release()

    def frame_times(self, fov: int) -> np.ndarray:
        self.check_fov(fov)
        times = self._index.times[fov]
        if times is None:
            return np.arange(self.n_frames, dtype=np.float64) * self._index.interval_min
        return times.copy()


def assumed_times_note(path: Path, lacking: str, interval_min: float | None) -> str:
    """The sentence a reader sets as ``times_note`` when the input records no frame times:
    what it lacks and which interval is assumed instead.

    Examples
    --------
    >>> assumed_times_note(Path("exp"), "the images record no times", None)[:60]
    'exp: the images record no times; frame t is taken at t x 1 m'
    """
    if interval_min is None:
        return (
            f"{path}: {lacking}; frame t is taken at t x 1 min (PyAMA's fallback). Give the real "
            "interval with --interval MINUTES (pyama process, pyama info)"
        )
    return f"{path}: {lacking}; frame t is taken at t x {interval_min:g} min, the interval given"


TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")


def acquisition_base_name(path: Path) -> str:
    """The file name without its format's extension: ``exp`` for ``exp.ome.tif``; a folder's
    (a TIFF sequence) name as it is."""
    name = path.name
    if path.is_dir():
        return name
    for suffix in (".nd2", *TIFF_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
