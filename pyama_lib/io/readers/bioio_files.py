"""Every other microscopy format through bioio (the optional ``formats`` extra):
:class:`BioioAcquisition` reads Zeiss CZI, Leica LIF and DeltaVision DV files.

ND2 and TIFF files stay on the native readers (:mod:`~pyama_lib.io.readers.formats`); bioio
and its plugins are imported only when such a file is opened, so PyAMA Flow installs and runs
without them, and says which extra to install when one is needed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from pyama_lib.core.errors import CorruptFileError, UnsupportedFormatError
from pyama_lib.io.readers.acquisition import LeasedAcquisition, assumed_times_note
from pyama_lib.io.readers.bioio_layout import (
    SceneLayout,
    check_czi_complete,
    check_czi_scene_count,
    check_same_layout,
    czi_times_s,
    lif_scene_problems,
    lif_times_s,
    scene_layout,
)
from pyama_lib.io.readers.index_cache import lease_index
from pyama_lib.io.readers.ome_metadata import ome_pixels, ome_times_minutes

# suffix -> (plugin module, its PyPI name, whether its Reader takes ``chunk_dims``)
_PLUGINS = {
    ".czi": ("bioio_czi", "bioio-czi", True),
    ".lif": ("bioio_lif", "bioio-lif", True),
    ".dv": ("bioio_dv", "bioio-dv", False),
    ".r3d": ("bioio_dv", "bioio-dv", False),
}
_FORMAT_NAMES = {
    ".czi": "Zeiss CZI",
    ".lif": "Leica LIF",
    ".dv": "DeltaVision",
    ".r3d": "DeltaVision",
}
BIOIO_SUFFIXES = tuple(_PLUGINS)
"""The file extensions :func:`~pyama_lib.io.open_acquisition` hands to bioio."""

_INSTALL = "pip install 'pyama-flow[formats]'"


class BioioAcquisition(LeasedAcquisition):
    """A CZI, LIF or DV file read through bioio: scenes are FOVs, T and C its axes.

    Every scene (a CZI scene, a LIF image) is one FOV; they must share frame count, channels,
    shape and dtype. Frames are bioio's Y, X planes at Z index 0, read one at a time: the lazy
    arrays are chunked one plane per chunk and computed in the calling thread, so a frame
    costs one plane of memory whatever the file's size. What is not a time-lapse of XY planes
    is refused with the reason: mosaic tiles (an ``M`` dimension), RGB samples, XZ line scans,
    wavelength (λ) sweeps.

    PyAMA (the desktop tool) opens these files with ``bioio.BioImage`` too: FOVs are
    ``img.scenes``, frame count, channels and shape come from ``img.dims`` (T, C, Y, X), the
    frame is ``xarray_dask_data.isel(T=t, C=c, Z=0)`` after ``set_scene(fov)``, channel names
    from the ``C`` coordinate and times from the ``T`` coordinate (frame indices when absent).
    The same mapping here, with two differences: PyAMA's ``BioImage`` stitches mosaics silently
    and reads the scenes as if they matched the first; here tiles and mismatched scenes are
    refused. Times come from the file's own metadata rather than the T coordinate, whose unit
    differs between plugins: CZI ``Dimensions/T/Positions`` (the per-frame ``Offsets``, else
    the ``Interval``), LIF the time dimension's length, other plugins OME ``DeltaT`` or
    ``TimeIncrement``, then bioio's ``time_interval``; else frame index × ``interval_min``
    (1 min, PyAMA's fallback) with :attr:`times_note` saying so.

    Parameters
    ----------
    path
        The ``.czi``/``.lif``/``.dv``/``.r3d`` file.
    interval_min
        Minutes between frames, used only when the file records no frame times.
    pinned
        ``(st_dev, st_ino)`` the opened file must have (see :class:`Acquisition`).
    """

    def __init__(
        self,
        path: str | Path,
        interval_min: float | None = None,
        pinned: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(path, interval_min=interval_min, pinned=pinned)

    # -- Acquisition interface --------------------------------------------------------
    def _open(self) -> None:
        interval_min = self._options["interval_min"]
        # Opening a multi-scene file builds one lazy array per scene; a FOV stage re-opens
        # the file, so the result is kept per process like the TIFF and ND2 indexes.
        self._lease = lease_index(
            self.path,
            (type(self).__name__, interval_min),
            lambda: _BioioIndex.build(self.path, interval_min),
        )
        self._index = self._lease.value
        self._adopt(self._index)
        self.format_name = f"{_FORMAT_NAMES[_suffix(self.path)]} (through bioio)"

    def _read_frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        if self._lease.released:
            raise ValueError(f"{self.path}: the acquisition is closed")
        scene = self._index.scenes[fov]
        try:
            # The synchronous scheduler: in a Dask worker, a plain compute() would send the
            # read to the cluster from inside a task.
            frame = scene.plane(t, channel).compute(scheduler="synchronous")
        except Exception as exc:
            raise CorruptFileError(
                self.path,
                f"frame {t} of FOV {fov} ({scene.name!r}), channel {channel} cannot be read "
                f"({type(exc).__name__}: {exc}); the file is damaged or truncated, re-copy it",
            ) from exc
        return np.asarray(frame, dtype=self.dtype).reshape(self.height, self.width)

    def describe(self) -> list[str]:
        index = self._index
        names = [s.name for s in index.scenes]
        shown = ", ".join(names) if len(names) <= 4 else f"{names[0]} … {names[-1]}"
        lines = [f"reader:   bioio with {index.plugin}", f"scenes:   {len(names)} ({shown})"]
        if index.n_z > 1:
            lines.append(f"z:        {index.n_z} planes; only Z 0 is read")
        return lines


class _BioioIndex:
    """An opened file's scenes, lazy arrays and times: what every open of it shares.

    Implements :class:`~pyama_lib.io.readers.index_cache.Indexed`. bioio's plugins open the
    file for each read, so there is no handle to close or re-open between leases.
    """

    cacheable = True
    times_note: str | None = None
    times: list[np.ndarray | None]  # per FOV, minutes; None where the file records none
    interval_min: float  # the fallback's minutes per frame

    def __init__(self, plugin: str, scenes: list[SceneLayout]) -> None:
        self.plugin = plugin
        self.scenes = scenes
        first = scenes[0]
        self.n_fovs = len(scenes)
        self.n_frames, self.n_channels = first.n_frames, first.n_channels
        self.height, self.width = first.height, first.width
        self.n_z = first.n_z
        self.dtype = first.dtype
        self.channel_names = list(first.channel_names)
        self.pixel_size_um = first.pixel_size_um

    @classmethod
    def build(cls, path: Path, interval_min: float | None) -> _BioioIndex:
        """Open ``path`` with its bioio plugin, check every scene, find the frame times."""
        module, dist, chunked = _PLUGINS[_suffix(path)]
        bioio, plugin = _import_plugin(path, module, dist)
        if module == "bioio_czi":
            check_czi_complete(path)
        if module == "bioio_lif":
            # bioio-lif hides wavelength dimensions and presents an XZ scan as a Z stack:
            # liffile (its own library) still tells them apart.
            lif_scene_problems(path)
        try:
            # One plane per chunk: a frame read decodes that plane, not its Z stack.
            kwargs: dict[str, Any] = {"chunk_dims": "YX"} if chunked else {}
            image = bioio.BioImage(path, reader=plugin.Reader, **kwargs)
            reader = image.reader
            names = list(reader.scenes)
            if module == "bioio_czi":
                check_czi_scene_count(path, len(names))
            scenes = [scene_layout(path, reader, i, str(name)) for i, name in enumerate(names)]
            check_same_layout(path, scenes)
            index = cls(dist, scenes)
            index.times = _scene_times(path, module, image, index)
        except (UnsupportedFormatError, CorruptFileError):
            raise
        except Exception as exc:
            raise UnsupportedFormatError(
                path,
                f"bioio's {dist} reader cannot read it ({type(exc).__name__}: {exc}); the file "
                "is damaged, truncated, or a variant the plugin does not read: re-copy it, or "
                "export it as OME-TIFF",
            ) from exc
        index.interval_min = 1.0 if interval_min is None else float(interval_min)
        if any(t is None for t in index.times):
            lacking = "the file records no frame times"
            index.times_note = assumed_times_note(path, lacking, interval_min)
        return index

    def fileno(self) -> int | None:
        return None

    def reopen(self) -> None:
        """Nothing to re-open: the plugins open the file per read."""

    def close(self) -> None:
        """Nothing to close: the plugins open the file per read."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    suffix = next((s for s in BIOIO_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise UnsupportedFormatError(
            path,
            f"unknown file type {path.suffix or '(no extension)'!r}; bioio is used for "
            f"{', '.join(BIOIO_SUFFIXES)} files only",
        )
    return suffix


def _import_plugin(path: Path, module: str, dist: str) -> tuple[Any, Any]:
    """bioio and the file's plugin, or a one-line refusal naming the extra to install."""
    try:
        return importlib.import_module("bioio"), importlib.import_module(module)
    except ImportError as exc:
        raise UnsupportedFormatError(
            path,
            f"{_suffix(path)} files are read through bioio and {dist}, which are not "
            f"installed; install the formats extra: {_INSTALL}",
        ) from exc


def _scene_times(
    path: Path, module: str, image: Any, index: _BioioIndex
) -> list[np.ndarray | None]:
    """Each scene's frame times in minutes, or None where the file records none."""
    n = index.n_frames
    if module == "bioio_czi":
        seconds = czi_times_s(image.metadata, n)
        return [None if seconds is None else seconds / 60.0] * index.n_fovs
    if module == "bioio_lif":
        return [None if s is None else s / 60.0 for s in lif_times_s(path, index.n_fovs, n)]
    times: list[np.ndarray | None] = [None] * index.n_fovs
    try:
        pixels = ome_pixels(image.ome_metadata.to_xml())
    except Exception:  # plugins without OME conversion raise NotImplementedError and others
        pixels = []
    if len(pixels) == index.n_fovs:
        times = [ome_times_minutes(path, px, n) for px in pixels]
    for fov in range(index.n_fovs):
        if times[fov] is None:
            image.reader.set_scene(fov)  # only here, while building: frames never switch scene
            interval = image.reader.time_interval  # a timedelta, or None
            if interval is not None and interval.total_seconds() > 0:
                times[fov] = np.arange(n, dtype=np.float64) * interval.total_seconds() / 60.0
    return times
