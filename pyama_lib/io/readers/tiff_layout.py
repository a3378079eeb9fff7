"""How the pages of a TIFF stack map to FOVs, frames and channels: :func:`stack_layout`.

``tifffile`` names the axes of each series it finds (OME, ImageJ, Micro-Manager MMStack,
NDTiff, or ``I``/``Q`` when the file says nothing). Positions (``R`` in tifffile, ``P`` in an
axes hint) and separate series are FOVs; T and C are frames and channels; only Z index 0 is
kept. A plain multi-page TIFF gets its axes from the reader's ``axes`` option
(:func:`parse_axes_hint`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyama_lib.core.errors import CorruptFileError, UnsupportedFormatError

# tifffile's axis letters → ours: R (a position in MMStack/NDTiff) is a FOV, like P in a hint.
_AXIS_NAMES = {"T": "T", "C": "C", "Z": "Z", "R": "P", "P": "P"}
_UNLABELLED = set("IQ")  # tifffile's "some image sequence" axes: the file says nothing
_HINT_AXES = "TCZP"
_HINT = re.compile(r"([TCZP])(\d*)")


@dataclass
class AxesHint:
    """The reader's ``axes`` option parsed: letters in storage order, a size or None each."""

    text: str
    axes: str
    sizes: list[int | None]

    def resolve(self, path: Path, n_pages: int) -> tuple[str, tuple[int, ...]]:
        """The axes and sizes for a series of ``n_pages`` pages; the one free size (if any)
        is what the page count leaves."""
        known = math.prod(s for s in self.sizes if s is not None)
        free = [i for i, s in enumerate(self.sizes) if s is None]
        sizes = list(self.sizes)
        if free and n_pages % known == 0:
            sizes[free[0]] = n_pages // known
        if math.prod(s or 0 for s in sizes) != n_pages:
            given = " x ".join(
                f"{a}={s or '?'}" for a, s in zip(self.axes, self.sizes, strict=True)
            )
            raise UnsupportedFormatError(
                path,
                f"holds {n_pages} images, which axes {self.text!r} ({given}) cannot describe; "
                "give sizes that multiply to the image count",
            )
        return self.axes, tuple(s for s in sizes if s is not None)


def parse_axes_hint(path: Path, text: str) -> AxesHint:
    """Parse an ``axes`` option such as ``"TC2"``, ``"T60C2"``, ``"CTYX"`` or ``"P4TC2"``.

    Letters name the axes of the pages in storage order, slowest first: T (frames), C
    (channels), Z (only index 0 is read) and P (positions, each a FOV); a trailing ``YX`` is
    allowed. A letter may be followed by its size; one letter may go without, its size being
    what the page count leaves.

    Raises
    ------
    UnsupportedFormatError
        The text is not of that form, repeats a letter or leaves more than one size open.
    """
    body = text.strip().upper().removesuffix("YX")
    parts = _HINT.findall(body)
    axes = "".join(a for a, _ in parts)
    if not parts or "".join(a + n for a, n in parts) != body or len(set(axes)) != len(axes):
        raise UnsupportedFormatError(
            path,
            f"axes {text!r} is not an axes description: give the stack's axes slowest first, "
            "each letter once from T (frames), C (channels), Z, P (positions), each with its "
            "size or one without, e.g. 'TC2' (2 channels, frames as many as the pages give)",
        )
    sizes = [int(n) if n else None for _, n in parts]
    if sizes.count(None) > 1 or 0 in sizes:
        raise UnsupportedFormatError(
            path,
            f"axes {text!r} leaves {sizes.count(None)} sizes open (or one is 0); give the size "
            f"of every axis but one, e.g. {axes[0]}" + "".join(f"{a}2" for a in axes[1:]),
        )
    return AxesHint(text, axes, sizes)


@dataclass
class StackLayout:
    """The FOVs of a TIFF: each FOV's Z-0 pages, frame-major (``pages[fov][t * C + c]``)."""

    n_frames: int
    n_channels: int
    height: int
    width: int
    dtype: str
    pages: list[list[Any]] = field(default_factory=list)
    axes: str = ""  # the axes as read (after a hint), for ``pyama info``

    def page(self, fov: int, t: int, channel: int) -> Any:
        return self.pages[fov][t * self.n_channels + channel]


def stack_layout(path: Path, all_series: list[Any], hint: AxesHint | None) -> StackLayout:
    """Lay out every series of a TIFF as FOVs; all must share sizes and dtype."""
    layout: StackLayout | None = None
    for index, series in enumerate(all_series):
        axes, shape = _series_axes(path, series, index, hint)
        sizes = dict.fromkeys("TCZP", 1) | dict(zip(axes, shape, strict=True))
        height, width = series.shape[-2:]
        pages = _fov_pages(path, series, index, axes, shape)
        if layout is None:
            layout = StackLayout(sizes["T"], sizes["C"], height, width, str(series.dtype))
            layout.axes = axes + "YX"
        key = (sizes["T"], sizes["C"], height, width, str(series.dtype))
        first = (layout.n_frames, layout.n_channels, layout.height, layout.width, layout.dtype)
        if key != first:
            raise UnsupportedFormatError(
                path,
                f"series {index} has T, C, Y, X, dtype {key} but series 0 has {first}; PyAMA "
                "Flow needs every position to share shape and dtype (split the file per position)",
            )
        layout.pages += pages
    if layout is None:
        raise CorruptFileError(path, "the TIFF holds no image data")
    return layout


def _series_axes(
    path: Path, series: Any, index: int, hint: AxesHint | None
) -> tuple[str, tuple[int, ...]]:
    """The series' non-YX axes (ours: T, C, Z, P) and sizes, from the file or the hint."""
    axes, shape = series.axes, tuple(series.shape)
    if not axes.endswith("YX"):
        raise UnsupportedFormatError(
            path,
            f"series {index} has axes {axes!r} (shape {shape}); PyAMA Flow reads grey-level "
            "images (axes ending YX); RGB stacks must be re-exported with one channel per image",
        )
    lead, lead_shape = axes[:-2], shape[:-2]
    if set(lead) & _UNLABELLED:
        if hint is None:
            raise UnsupportedFormatError(
                path,
                f"series {index} (axes {axes!r}) is a stack of {math.prod(lead_shape)} images "
                "whose file does not say which are frames and which channels; give the axes "
                "(reader option axes, pyama --axes), e.g. 'TC2' for frames of 2 channels",
            )
        return hint.resolve(path, math.prod(lead_shape))
    if not set(lead) <= set(_AXIS_NAMES):
        raise UnsupportedFormatError(
            path,
            f"series {index} has axes {axes!r} (shape {shape}); PyAMA Flow reads positions, "
            "T, C and Z (axes among RTCZ before YX); re-export the other axes as those",
        )
    ours = "".join(_AXIS_NAMES[a] for a in lead)
    if hint is not None:
        given = dict(zip(hint.axes, hint.sizes, strict=True))
        if hint.axes != ours or any(
            given[a] not in (None, n) for a, n in zip(ours, lead_shape, strict=True)
        ):
            raise UnsupportedFormatError(
                path,
                f"axes {hint.text!r} contradicts the file's own axes {ours or '(none)'} "
                f"(sizes {lead_shape}); leave the axes option out for this file",
            )
    return ours, lead_shape


def _fov_pages(
    path: Path, series: Any, index: int, axes: str, shape: tuple[int, ...]
) -> list[list[Any]]:
    """Each position's Z-0 pages, frame-major; refuses a series with pages missing."""
    pages = list(series.pages)
    n_planes = math.prod(shape)
    if len(pages) < n_planes and getattr(series, "dataoffset", None) is not None and pages:
        pages = ContiguousPlane.series(series, n_planes)
    if len(pages) != n_planes or any(p is None for p in pages):
        present = sum(p is not None for p in pages)
        raise CorruptFileError(
            path,
            f"series {index} should hold {n_planes} planes but only {present} can be found; the "
            "file is truncated or incomplete (still being written?); re-copy it",
        )
    # Pages are stored in C order over the axes: stride of an axis = product of later sizes.
    strides = dict.fromkeys("TCZP", 0)
    strides |= {a: math.prod(shape[i + 1 :]) for i, a in enumerate(axes)}
    sizes = dict.fromkeys("TCZP", 1) | dict(zip(axes, shape, strict=True))
    return [
        [
            pages[p * strides["P"] + t * strides["T"] + c * strides["C"]]
            for t in range(sizes["T"])
            for c in range(sizes["C"])
        ]
        for p in range(sizes["P"])
    ]


class ContiguousPlane:
    """One plane of a series stored back to back behind a single page index, as ImageJ saves
    hyperstacks over 4 GB: read at its offset (uncompressed by construction). Quacks like the
    ``tifffile.TiffPage`` the reader asks for (``asarray``, ``parent``, data offsets)."""

    def __init__(self, first: Any, offset: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.parent = first.parent
        self.shape, self.dtype = shape, dtype
        self.nbytes = math.prod(shape) * dtype.itemsize
        self.dataoffsets, self.databytecounts = (offset,), (self.nbytes,)

    @classmethod
    def series(cls, series: Any, n_planes: int) -> list[ContiguousPlane]:
        first = series.pages[0]
        dtype = np.dtype(series.dtype).newbyteorder(first.parent.byteorder)
        shape = tuple(series.shape[-2:])
        step = math.prod(shape) * dtype.itemsize
        return [cls(first, series.dataoffset + i * step, shape, dtype) for i in range(n_planes)]

    def asarray(self, lock: Any) -> np.ndarray:
        handle = self.parent.filehandle
        with lock:
            handle.seek(self.dataoffsets[0])
            data = handle.read(self.nbytes)
        if len(data) != self.nbytes:
            raise ValueError(f"{len(data)} of {self.nbytes} bytes at {self.dataoffsets[0]}")
        return np.frombuffer(data, self.dtype).astype(self.dtype.newbyteorder("="))


def check_pages_in_files(path: Path, pages: list[list[Any]]) -> None:
    """Raise CorruptFileError when a page's pixel data lie beyond the end of its file."""
    sizes: dict[int, int] = {}
    for fov, fov_pages in enumerate(pages):
        for page in fov_pages:
            parent = page.parent
            if id(parent) not in sizes:
                sizes[id(parent)] = os.path.getsize(parent.filehandle.path)
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
            if max(ends, default=0) > sizes[id(parent)] or min(page.dataoffsets, default=1) == 0:
                raise CorruptFileError(
                    path,
                    f"the pixel data of FOV {fov} lie outside {parent.filename} (it ends at "
                    f"{sizes[id(parent)]} bytes); the file is truncated, re-copy it",
                )


class TiffWarnings(logging.Handler):
    """Collects tifffile's log warnings about broken offsets while a file is opened.

    The logger is global and files are opened from several threads at once: each handler keeps
    only its own thread's records, and the logger's level is raised (if an application
    silenced it) while any handler is active and restored after the last one.
    """

    _DAMAGE = ("invalid", "corrupt", "truncat", "missing", "out of range", "not found")
    _lock = threading.Lock()
    _active = 0
    _saved_level = logging.NOTSET

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.damage: list[str] = []
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread:
            return  # another thread's file
        message = record.getMessage()
        if any(word in message.lower() for word in self._DAMAGE):
            self.damage.append(message)

    def __enter__(self) -> TiffWarnings:
        logger = logging.getLogger("tifffile")
        with TiffWarnings._lock:
            if TiffWarnings._active == 0:
                TiffWarnings._saved_level = logger.level
                if not logger.isEnabledFor(logging.WARNING):  # silenced: we still need them
                    logger.setLevel(logging.WARNING)
            TiffWarnings._active += 1
            logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("tifffile")
        with TiffWarnings._lock:
            logger.removeHandler(self)
            TiffWarnings._active -= 1
            if TiffWarnings._active == 0:
                logger.setLevel(TiffWarnings._saved_level)
