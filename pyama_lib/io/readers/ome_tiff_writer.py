"""Writing OME-TIFF acquisitions: :func:`write_ome_tiff`, one series per FOV, streaming.

Frames go to ``tifffile`` one at a time, so writing a large synthetic acquisition costs one
frame of memory; :class:`~pyama_lib.io.readers.ome_tiff.OmeTiffAcquisition` reads the result.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
from numpy.typing import ArrayLike

from pyama_lib.core.errors import InputDataError

FovFrames = Iterable[np.ndarray]
"""One FOV to write: its frames in time order, each a (C, H, W) array."""


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
