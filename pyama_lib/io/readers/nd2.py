"""Nikon ND2 acquisitions through the ``nd2`` package: :class:`ND2Acquisition`.

Frames are read one at a time with ``ND2File.read_frame(sequence_index)``; the sequence index of
(FOV, time point, Z = 0) is looked up in a table built from ``ND2File.loop_indices``, so any
nesting order of the P/T/Z loops works. The open file, its metadata and that table are built
once per process and file (:mod:`~pyama_lib.io.readers.index_cache`): both grow with the number
of positions. Nothing is ever written by this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import nd2
import numpy as np

from pyama_lib.core.errors import (
    AcquisitionError,
    AcquisitionIncompleteError,
    CorruptFileError,
    UnsupportedFormatError,
)
from pyama_lib.io.readers.acquisition import Acquisition
from pyama_lib.io.readers.index_cache import lease_index

__all__ = ["ND2Acquisition"]

_TIMES = ("nominal", "measured")
# Axes this reader understands; anything else (RGB "S", custom loops "U") is refused up front.
_KNOWN_AXES = frozenset("PTZCYX")
_MS_PER_MIN = 60_000.0


class ND2Acquisition(Acquisition):
    """A Nikon ND2 file as an :class:`~pyama_lib.io.readers.acquisition.Acquisition`.

    Parameters
    ----------
    path : str or Path
        The ``.nd2`` file.
    times : {"nominal", "measured"}
        ``"nominal"`` (default, as PyAMA): frame index × the time loop's period, which is what
        the ``nd2`` package's T coordinate gives. ``"measured"``: each FOV's per-frame time
        stamps (``relativeTimeMs`` of channel 0, from the start of the experiment).
    recent_seconds : float
        A file that cannot be indexed and was modified less than this many seconds ago is
        reported as still being written (:class:`AcquisitionIncompleteError`) rather than
        corrupt.
    pinned : (int, int), optional
        ``(st_dev, st_ino)`` the opened file must have (see :class:`Acquisition`).

    Notes
    -----
    Files without a T axis have one frame at time 0, without C one channel, without P one FOV;
    with a Z axis, Z index 0 is read. RGB files are refused.
    """

    format_name = "Nikon ND2"

    def __init__(
        self,
        path: str | Path,
        *,
        times: Literal["nominal", "measured"] = "nominal",
        recent_seconds: float = 120.0,
        pinned: Sequence[int] | None = None,
    ) -> None:
        if times not in _TIMES:
            raise ValueError(f"times must be one of {_TIMES}, got {times!r}")
        super().__init__(path, times=times, recent_seconds=float(recent_seconds), pinned=pinned)

    def _fileno(self) -> int | None:
        return None if self._lease.released else self._index.fileno()

    # -- opening ----------------------------------------------------------------------------
    def _open(self) -> None:
        recent_seconds = self._options["recent_seconds"]
        # The index does not depend on the options: ``times`` only chooses which times
        # frame_times gives, ``recent_seconds`` only how a failure is reported.
        self._lease = lease_index(
            self.path, type(self).__name__, lambda: _Nd2Index.build(self.path, recent_seconds)
        )
        self._index = self._lease.value
        self._adopt(self._index)

    # -- reading ----------------------------------------------------------------------------
    def _handle(self) -> nd2.ND2File:
        if self._lease.released:
            raise ValueError(f"{self.path}: the acquisition is closed")
        return self._index.f

    def _read_frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        f = self._handle()
        try:
            with self._index.lock:  # the handle is shared by every open of the file
                data = f.read_frame(int(self._index.seq[fov, t]))
        except Exception as exc:
            raise CorruptFileError(
                self.path,
                f"cannot read FOV {fov}, frame {t}: {type(exc).__name__}: {exc}; "
                "the file is probably damaged — copy it again from the microscope",
            ) from exc
        # read_frame squeezes length-1 axes (even Y or X); the reshape restores (C, Y, X).
        planes = np.asarray(data).reshape(self.n_channels, self.height, self.width)
        # Copy: read_frame may return a read-only view into the memory-mapped file (which stays
        # open while this acquisition holds its lease).
        return np.array(planes[channel], dtype=self.dtype, copy=True)

    def frame_times(self, fov: int) -> np.ndarray:
        """Times of the FOV's frames in minutes (float64, length ``n_frames``).

        Nominal times are the same for every FOV; measured times are the FOV's own stamps.
        """
        self.check_fov(fov)
        if self._options["times"] == "nominal":
            if self._index.nominal_min is None:
                raise CorruptFileError(
                    self.path,
                    f"the time loop does not describe the file's {self.n_frames} time points; "
                    "use times='measured'",
                )
            return self._index.nominal_min.copy()
        f = self._handle()
        stamps_ms = np.empty(self.n_frames, dtype=np.float64)
        for t in range(self.n_frames):
            with self._index.lock:
                meta = f.frame_metadata(int(self._index.seq[fov, t]))
            if not isinstance(meta, nd2.structures.FrameMetadata) or not meta.channels:
                raise UnsupportedFormatError(
                    self.path,
                    "this ND2 file has no per-frame time stamps (legacy format?); "
                    "use times='nominal'",
                )
            stamps_ms[t] = meta.channels[0].time.relativeTimeMs
        return stamps_ms / _MS_PER_MIN

    def _close(self) -> None:
        self._lease.release()


class _Nd2Index:
    """An opened ND2 file with its metadata and sequence table: what every
    :class:`ND2Acquisition` of the file shares. Implements
    :class:`~pyama_lib.io.readers.index_cache.Indexed`."""

    cacheable = True
    pixel_size_um: float | None = None
    times_note: str | None = None

    def __init__(self, path: Path, f: nd2.ND2File, recent_seconds: float) -> None:
        self.path, self.f = path, f
        self.lock = threading.Lock()
        self._read_layout(recent_seconds)

    @classmethod
    def build(cls, path: Path, recent_seconds: float) -> _Nd2Index:
        """Open and index ``path``; an unreadable or unsupported file raises, leaving nothing
        open."""
        try:
            supported = nd2.is_supported_file(path)
        except OSError as exc:  # unreadable (permissions, a folder named .nd2...), not corrupt
            raise AcquisitionError(path, f"cannot be read: {exc}") from exc
        if not supported:
            raise CorruptFileError(
                path,
                "not an ND2 file (unrecognised header); check that the file is a Nikon .nd2 "
                "and was copied completely",
            )
        try:
            f = nd2.ND2File(path)
        except Exception as exc:
            raise _unreadable(path, exc, recent_seconds) from exc
        try:
            return cls(path, f, recent_seconds)
        except BaseException:
            f.close()
            raise

    def fileno(self) -> int | None:
        # The nd2 package keeps its file object private; without it the path is checked.
        handle = getattr(getattr(self.f, "_rdr", None), "_fh", None)
        try:
            return handle.fileno() if handle is not None else None
        except (OSError, ValueError):
            return None

    def reopen(self) -> None:
        self.f.open()  # by path; the cache checks that it is still the file indexed

    def close(self) -> None:
        self.f.close()

    def _read_layout(self, recent_seconds: float) -> None:
        """Set the metadata attributes and the sequence-index table from the open file."""
        f, path = self.f, self.path
        try:
            # The chunk map at the end of the file is parsed lazily, on first metadata access;
            # a truncated file fails here.
            sizes = dict(f.sizes)
            is_rgb = f.is_rgb
            loop_indices = f.loop_indices
            experiment = f.experiment
            metadata = f.metadata
            dtype = np.dtype(f.dtype)
        except Exception as exc:
            raise _unreadable(path, exc, recent_seconds) from exc
        if is_rgb or "S" in sizes:
            raise UnsupportedFormatError(
                path,
                "RGB ND2 not supported; export the channels as grayscale (one component per "
                "channel) from NIS-Elements and use that file",
            )
        unknown = sorted(set(sizes) - _KNOWN_AXES)
        if unknown:
            raise UnsupportedFormatError(
                path,
                f"unsupported axes {unknown} (sizes {sizes}); PyAMA Flow reads ND2 files with "
                "P, T, Z and C loops only",
            )
        self.n_fovs = sizes.get("P", 1)
        self.n_frames = sizes.get("T", 1)
        self.n_channels = sizes.get("C", 1)
        self.height = sizes["Y"]
        self.width = sizes["X"]
        self.dtype = dtype
        self.channel_names = _channel_names(metadata, self.n_channels)
        self.pixel_size_um = _pixel_size_um(metadata)
        self.seq = _sequence_table(loop_indices, self.n_fovs, self.n_frames)
        if (self.seq < 0).any():
            fov, t = np.argwhere(self.seq < 0)[0]
            raise CorruptFileError(
                path,
                f"no frame for FOV {fov}, time point {t} in the loop index; the experiment "
                "metadata is inconsistent — open the file in NIS-Elements to check it",
            )
        self.nominal_min = _nominal_times_min(experiment, self.n_frames)


def _unreadable(
    path: Path, exc: Exception, recent_seconds: float
) -> CorruptFileError | AcquisitionIncompleteError:
    """The error for a file with a valid header that cannot be indexed."""
    detail = f"{type(exc).__name__}: {exc}"[:200]
    age = time.time() - path.stat().st_mtime
    if age < recent_seconds:
        return AcquisitionIncompleteError(
            path,
            f"cannot be indexed and was modified {max(age, 0.0):.0f} s ago: still being "
            "written? wait until the acquisition finishes, then run again "
            f"({detail})",
        )
    return CorruptFileError(
        path,
        "cannot be indexed: the file is truncated or damaged (was the copy interrupted?); "
        f"copy it again from the microscope, or try nd2.rescue_nd2 ({detail})",
    )


def _sequence_table(
    loop_indices: tuple[dict[str, int], ...], n_fovs: int, n_frames: int
) -> np.ndarray:
    """(n_fovs, n_frames) int64 table of the sequence index of (P, T, Z=0); -1 where missing.

    ``loop_indices[i]`` holds the loop coordinates of sequence frame ``i`` in the file's own
    nesting order, so no assumption about that order is needed.
    """
    seq = np.full((n_fovs, n_frames), -1, dtype=np.int64)
    for index, loops in enumerate(loop_indices):
        if loops.get("Z", 0) == 0:
            seq[loops.get("P", 0), loops.get("T", 0)] = index
    return seq


def _pixel_size_um(metadata: Any) -> float | None:
    """The calibrated x pixel size in µm; None when NIS-Elements left the axis uncalibrated
    (the file then says 1.0, which is no size at all)."""
    channels = getattr(metadata, "channels", None) or []
    volume = getattr(channels[0], "volume", None) if channels else None
    if volume is None or not volume.axesCalibrated[0]:
        return None
    size = float(volume.axesCalibration[0])
    return size if size > 0 else None


def _channel_names(metadata: Any, n_channels: int) -> list[str]:
    """Channel names from the metadata; ``C<i>`` when missing or blank."""
    channels = getattr(metadata, "channels", None) or []
    names = [ch.channel.name for ch in channels]
    if len(names) != n_channels:
        names = [""] * n_channels
    return [name if name.strip() else f"C{i}" for i, name in enumerate(names)]


def _period_ms(params: Any) -> float:
    """A time loop's period: the measured average interval, else the requested one.

    This is the period the ``nd2`` package's T coordinate (and so PyAMA) uses, except that an
    average of exactly 0 (not recorded) falls back to the requested period.
    """
    diff = getattr(params, "periodDiff", None)
    avg = getattr(diff, "avg", None)
    return float(avg) if avg else float(params.periodMs)


def _nominal_times_min(experiment: list[Any], n_frames: int) -> np.ndarray | None:
    """Nominal frame times in minutes, or None if the time loop does not match ``n_frames``.

    For an ``NETimeLoop`` (several phases with their own periods), each phase starts one of
    its predecessor's periods after that phase's last frame, so times keep increasing (the
    ``nd2`` coordinate restarts every phase at 0).
    """
    for loop in experiment:
        if loop.type == "TimeLoop" and loop.count > 1:
            times_ms = np.arange(loop.count, dtype=np.float64) * _period_ms(loop.parameters)
            break
        if loop.type == "NETimeLoop" and loop.count > 1:
            parts, start = [], 0.0
            for phase in loop.parameters.periods:
                period = _period_ms(phase)
                parts.append(start + np.arange(phase.count, dtype=np.float64) * period)
                start += phase.count * period
            times_ms = np.concatenate(parts) if parts else np.empty(0)
            break
    else:
        times_ms = np.zeros(n_frames, dtype=np.float64)
    if times_ms.shape != (n_frames,):
        return None
    return times_ms / _MS_PER_MIN
