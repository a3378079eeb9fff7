"""TIFF stacks as acquisitions: :class:`OmeTiffAcquisition`.

Reads what ``tifffile`` recognises: OME-TIFF (one series per position), ImageJ hyperstacks,
Micro-Manager MMStack OME-TIFFs (one or many files) and NDTiff datasets (positions ``R`` are
FOVs), and plain multi-page TIFFs given their axes (:func:`~pyama_lib.io.readers.tiff_layout.
parse_axes_hint`). Z index 0 is read. Frames are read one page at a time, never as a whole
stack, so a 100 GB file costs one frame of memory. The layout is in
:mod:`~pyama_lib.io.readers.tiff_layout`, the metadata in
:mod:`~pyama_lib.io.readers.tiff_stack_meta`; :func:`~pyama_lib.io.readers.ome_tiff_writer.
write_ome_tiff` writes OME-TIFFs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from pyama_lib.core.errors import CorruptFileError, PyamaError, UnsupportedFormatError
from pyama_lib.io.readers.acquisition import LeasedAcquisition, assumed_times_note
from pyama_lib.io.readers.index_cache import lease_index
from pyama_lib.io.readers.tiff_layout import (
    AxesHint,
    TiffWarnings,
    check_pages_in_files,
    parse_axes_hint,
    stack_layout,
)
from pyama_lib.io.readers.tiff_stack_meta import stack_metadata

# What each format's file lacks when it records no frame times, for the times note.
_NO_TIMES = {
    "OME-TIFF": "no OME DeltaT or TimeIncrement",
    "ImageJ hyperstack": "no ImageJ frame interval",
    "Micro-Manager MMStack": "no ElapsedTime-ms per image, no Interval_ms",
    "Micro-Manager NDTiff": "no ElapsedTime-ms per image",
    "TIFF stack": "a plain TIFF stack",
}


class OmeTiffAcquisition(LeasedAcquisition):
    """A TIFF stack (OME-TIFF, ImageJ hyperstack, Micro-Manager MMStack or NDTiff dataset,
    plain multi-page TIFF) as an Acquisition.

    The file's index (every series' pages, its metadata) is built once per process and shared
    by every open of the same unchanged file (see :mod:`~pyama_lib.io.readers.index_cache`):
    opening one FOV of a file of a thousand costs what it does in a file of four. A dataset of
    several files (multi-file MMStack, NDTiff) is indexed anew at each open, as the cache sees
    one file's changes only.

    Parameters
    ----------
    path
        The ``.ome.tif``/``.ome.tiff``/``.tif`` file (of a multi-file MMStack or NDTiff
        dataset: any of them), or a folder holding an NDTiff dataset (``NDTiff.index``) or a
        Micro-Manager MMStack acquisition (``*_MMStack*.ome.tif``).
    interval_min
        Minutes between frames, used only when the file records no frame times (no OME
        ``DeltaT`` per plane nor ``TimeIncrement``, no ImageJ ``finterval``, no Micro-Manager
        ``ElapsedTime-ms`` nor ``Interval_ms``); without it, PyAMA's 1 min.
    axes
        The axes of a stack whose file does not say them (``tifffile`` sees an unlabelled
        ``I``/``Q`` stack), slowest first, each letter once: T (frames), C (channels), Z (only
        index 0 is read), P (positions, each a FOV), a trailing ``YX`` allowed. Each letter may
        carry its size; one may go without, its size being what the page count leaves:
        ``"TC2"`` (frames of 2 channels), ``"C2T"`` (all frames of channel 0, then of 1),
        ``"T"`` (one channel), ``"P4TC2"``, ``"T60C2YX"``. Refused when the page count does not
        fit, or when it contradicts the axes of a file that names its own (leave it out then).
    pinned
        ``(st_dev, st_ino)`` the opened file (or folder) must have (see :class:`Acquisition`).
    """

    format_name: str = "OME-TIFF"

    def __init__(
        self,
        path: str | Path,
        interval_min: float | None = None,
        axes: str | None = None,
        pinned: Sequence[int] | None = None,
    ) -> None:
        # An unset axes option is no option at all: it does not cross into workers.
        given = {"axes": axes} if axes is not None else {}
        super().__init__(path, interval_min=interval_min, pinned=pinned, **given)

    def _fileno(self) -> int | None:
        # A folder's pin is the folder's own identity, which the base class stats.
        if self._lease.released or self.path.is_dir():
            return None
        return self._index.fileno()

    # -- Acquisition interface --------------------------------------------------------
    def _open(self) -> None:
        interval_min, axes = self._options["interval_min"], self._options.get("axes")
        hint = parse_axes_hint(self.path, axes) if axes else None
        stack = _stack_file(self.path) if self.path.is_dir() else self.path
        self._lease = lease_index(
            stack,
            (type(self).__name__, interval_min, axes),
            lambda: _TiffIndex.build(stack, interval_min, hint),
        )
        self._index = self._lease.value
        self._adopt(self._index)
        self.format_name = self._index.format_name

    def _read_frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        if self._lease.released:
            raise ValueError(f"{self.path}: the acquisition is closed")
        index = self._index
        page = index.layout.page(fov, t, channel)
        try:
            # One lock for the dataset's handles: a seek + read must not interleave across
            # threads, while the decoding (zlib and the like) may run in parallel outside it.
            frame = page.asarray(lock=index.lock)
        except Exception as exc:
            raise CorruptFileError(
                self.path,
                f"frame {t} of FOV {fov}, channel {channel} cannot be decoded "
                f"({type(exc).__name__}: {exc}); the file is damaged, re-export or re-copy it",
            ) from exc
        return frame.reshape(self.height, self.width)

    def describe(self) -> list[str]:
        index = self._index
        lines = [f"read as:  {index.format_name}, axes {index.layout.axes} (Z index 0 is read)"]
        if index.stack != self.path:
            lines.append(f"file:     {index.stack.name}")
        if index.times_source:
            lines.append(f"times of: {index.times_source}")
        if index.fov_names:
            lines.append(f"FOVs:     {', '.join(index.fov_names)}")
        return lines


def _stack_file(folder: Path) -> Path:
    """The TIFF of a dataset folder that ``tifffile`` opens to find the whole dataset."""
    if (folder / "NDTiff.index").is_file():
        files = sorted(folder.glob("*NDTiffStack*.tif")) or sorted(folder.glob("*.tif"))
        what = "an NDTiff dataset (NDTiff.index) without its *_NDTiffStack.tif"
    else:
        files = sorted(folder.glob("*_MMStack*.ome.tif"))
        prefixes = sorted({f.name.split("_MMStack")[0] for f in files})
        if len(prefixes) > 1:
            raise UnsupportedFormatError(
                folder,
                f"holds {len(prefixes)} Micro-Manager acquisitions ({', '.join(prefixes)}); "
                "open one of their *_MMStack*.ome.tif files instead of the folder",
            )
        what = "no Micro-Manager *_MMStack*.ome.tif file"
    if not files:
        raise UnsupportedFormatError(folder, f"holds {what}; copy the whole dataset folder")
    return files[0]


def _damaged(path: Path, warning: str) -> CorruptFileError:
    return CorruptFileError(
        path,
        f"the TIFF structure is damaged ({warning}); the file is truncated, still being "
        "written or a file of its dataset is missing; wait for the microscope to finish or "
        "re-copy the whole dataset",
    )


class _TiffIndex:
    """An opened, indexed TIFF dataset: what every :class:`OmeTiffAcquisition` of it shares.

    Holds the ``tifffile.TiffFile`` (all IFDs read), the handles of the dataset's other files,
    the layout of the FOVs' pages, the metadata attributes and the one lock of the handles.
    Implements :class:`~pyama_lib.io.readers.index_cache.Indexed`.
    """

    times_note: str | None = None

    def __init__(
        self, path: Path, tif: tifffile.TiffFile, interval_min: float | None, hint: AxesHint | None
    ) -> None:
        self.stack, self.tif = path, tif
        self.lock = threading.RLock()
        self.layout = stack_layout(path, list(tif.series), hint)
        # tifffile reads the other files of a dataset and closes them; their pages are read
        # through handles this index opens and closes with its own.
        others = {id(p.parent): p.parent for fov in self.layout.pages for p in fov}
        self.others = [parent for parent in others.values() if parent is not tif]
        # Other files, or the NDTiff.index beside the file, would make the index depend on
        # files whose changes the cache does not see.
        self.cacheable = not self.others and tif.series[0].kind != "ndtiff"
        try:
            self.reopen()
            check_pages_in_files(path, self.layout.pages)
            self._set_metadata(path, interval_min)
        except BaseException:
            self.close()
            raise

    @classmethod
    def build(cls, path: Path, interval_min: float | None, hint: AxesHint | None) -> _TiffIndex:
        """Open and index ``path``; a damaged or unsupported file raises, leaving nothing open."""
        tif: tifffile.TiffFile | None = None
        warnings = TiffWarnings()
        try:
            with warnings:
                tif = tifffile.TiffFile(path)
                index = cls(path, tif, interval_min, hint)
        except Exception as exc:
            if tif is not None:  # the index, where built, closed the dataset's other files
                tif.close()
            if warnings.damage:
                raise _damaged(path, warnings.damage[0]) from exc
            if isinstance(exc, PyamaError):
                raise
            raise CorruptFileError(
                path,
                f"cannot be read as a TIFF file ({type(exc).__name__}: {exc}); the file is "
                "damaged, truncated, still being written or not a TIFF; re-copy or re-export it",
            ) from exc
        if warnings.damage:
            # tifffile only logs broken IFD/tag offsets and missing files of a dataset, and
            # falls back to what it can read, which would silently present a truncated file
            # as a shorter or plain one.
            index.close()
            raise _damaged(path, warnings.damage[0])
        return index

    def fileno(self) -> int | None:
        handle = self.tif.filehandle
        return None if handle.closed else handle.fileno()

    def reopen(self) -> None:
        # By the paths tifffile resolved; the cache checks the main file's identity.
        for tif in (self.tif, *self.others):
            tif.filehandle.open()

    def close(self) -> None:
        for tif in (self.tif, *self.others):
            tif.close()

    def _set_metadata(self, path: Path, interval_min: float | None) -> None:
        layout = self.layout
        meta = stack_metadata(path, self.tif, layout)
        if meta.fov_order is not None:
            layout.pages = [layout.pages[i] for i in meta.fov_order]
        self.format_name, self.times_source = meta.format_name, meta.times_source
        self.fov_names = meta.fov_names
        self.n_fovs = len(layout.pages)
        self.n_frames, self.n_channels = layout.n_frames, layout.n_channels
        self.height, self.width = layout.height, layout.width
        self.dtype = np.dtype(layout.dtype)
        self.channel_names = meta.channel_names or [f"ch{c}" for c in range(self.n_channels)]
        self.pixel_size_um = meta.pixel_size_um
        self.times: list[np.ndarray | None] = meta.times or [None] * self.n_fovs
        self.interval_min = 1.0 if interval_min is None else float(interval_min)
        if any(t is None for t in self.times):
            lacking = f"the file records no frame times ({_NO_TIMES[self.format_name]})"
            self.times_note = assumed_times_note(path, lacking, interval_min)
