"""What a TIFF stack's own metadata say: channel names, pixel size, frame times, position names.

One function per kind of series ``tifffile`` recognises: OME-XML (per-plane ``DeltaT``), ImageJ
hyperstacks (``finterval``), Micro-Manager MMStack (per-plane ``ElapsedTime-ms`` in each image's
``MicroManagerMetadata`` tag, else the Summary's ``Interval_ms``) and NDTiff (per-image JSON
metadata that ``NDTiff.index`` points to). Every FOV's times are the stamps of its own channel 0,
Z 0 planes: the channels of one frame are taken milliseconds apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile

from pyama_lib.core.errors import UnsupportedFormatError
from pyama_lib.io.readers.mm_legacy import number
from pyama_lib.io.readers.ome_metadata import (
    ome_channel_names,
    ome_pixel_size_um,
    ome_pixels,
    ome_times_minutes,
)
from pyama_lib.io.readers.sequence_names import natural_key
from pyama_lib.io.readers.tiff_layout import StackLayout

_FORMAT_NAMES = {"ome": "OME-TIFF", "imagej": "ImageJ hyperstack"}
_FORMAT_NAMES |= {"mmstack": "Micro-Manager MMStack", "ndtiff": "Micro-Manager NDTiff"}
# ImageJ's time units (Calibration.getTimeUnit) → minutes; its default is the second.
_IMAGEJ_MINUTES = {"sec": 1 / 60, "s": 1 / 60, "second": 1 / 60, "seconds": 1 / 60}
_IMAGEJ_MINUTES |= {"ms": 1 / 60_000, "msec": 1 / 60_000, "min": 1.0, "h": 60.0, "hour": 60.0}
_IMAGEJ_UM = {"micron": 1.0, "microns": 1.0, "um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0}
_IMAGEJ_UM |= {"nm": 1e-3, "mm": 1e3}


@dataclass
class StackMetadata:
    """The metadata of one TIFF stack, in PyAMA's units; None where the file says nothing."""

    format_name: str
    channel_names: list[str] | None = None
    pixel_size_um: float | None = None
    times: list[np.ndarray | None] | None = None  # per FOV, minutes
    times_source: str | None = None  # where the times come from, for ``pyama info``
    fov_names: list[str] | None = None
    fov_order: list[int] | None = None  # FOVs re-ordered by their names (NDTiff labels)


def stack_metadata(path: Path, tif: tifffile.TiffFile, layout: StackLayout) -> StackMetadata:
    """The metadata of ``tif`` for the FOVs of ``layout``, by the kind of its first series."""
    kind = tif.series[0].kind
    if kind == "mmstack":
        return _mmstack(tif, layout)
    if kind == "ndtiff":
        return _ndtiff(tif, layout)
    if kind == "imagej":
        return _imagej(tif, layout)
    if tif.is_ome:
        return _ome(path, tif, layout)
    return StackMetadata("TIFF stack")


def _ome(path: Path, tif: tifffile.TiffFile, layout: StackLayout) -> StackMetadata:
    meta = StackMetadata(_FORMAT_NAMES["ome"])
    images = ome_pixels(tif.ome_metadata)
    if len(images) != len(layout.pages):
        return meta  # cannot pair OME Images with positions: no names, no DeltaT
    names = [ome_channel_names(img, layout.n_channels) for img in images]
    if any(n != names[0] for n in names):
        raise UnsupportedFormatError(
            path,
            f"positions have different channels ({names[0]} vs "
            f"{next(n for n in names if n != names[0])}); split the file per channel set",
        )
    meta.channel_names = names[0]
    meta.pixel_size_um = ome_pixel_size_um(images[0])
    meta.times = [ome_times_minutes(path, img, layout.n_frames) for img in images]
    meta.times_source = "OME Plane DeltaT (channel 0, Z 0), else Pixels TimeIncrement"
    return meta


def _imagej(tif: tifffile.TiffFile, layout: StackLayout) -> StackMetadata:
    meta = StackMetadata(_FORMAT_NAMES["imagej"])
    info = tif.imagej_metadata or {}
    unit = str(info.get("unit", "")).lower()
    x_per_unit = tif.pages.first.resolution[0]
    if unit in _IMAGEJ_UM and x_per_unit > 0:
        meta.pixel_size_um = _IMAGEJ_UM[unit] / x_per_unit
    interval, t_unit = info.get("finterval"), str(info.get("tunit", "sec")).lower()
    if interval and float(interval) > 0 and t_unit in _IMAGEJ_MINUTES:
        step = float(interval) * _IMAGEJ_MINUTES[t_unit]
        times = np.arange(layout.n_frames, dtype=np.float64) * step
        meta.times = [times.copy() for _ in layout.pages]
        meta.times_source = f"ImageJ frame interval {float(interval):g} {t_unit}"
    return meta


def _mm_summary(tif: tifffile.TiffFile) -> dict[str, Any]:
    settings = tif.micromanager_metadata or {}
    summary = settings.get("Summary")
    return summary if isinstance(summary, dict) else {}


def _mm_common(meta: StackMetadata, summary: dict[str, Any], layout: StackLayout) -> None:
    """Channel names and pixel size from a Micro-Manager Summary."""
    names = summary.get("ChNames")
    if isinstance(names, list) and len(names) == layout.n_channels:
        meta.channel_names = [str(n) for n in names]
    size = summary.get("PixelSize_um")
    if isinstance(size, int | float) and size > 0:
        meta.pixel_size_um = float(size)


def _mmstack(tif: tifffile.TiffFile, layout: StackLayout) -> StackMetadata:
    meta = StackMetadata(_FORMAT_NAMES["mmstack"])
    summary = _mm_summary(tif)
    _mm_common(meta, summary, layout)
    # Each FOV's channel-0, Z-0 planes, frame by frame; their IFDs hold the plane's JSON.
    planes = [
        [_mm_plane(fov[t * layout.n_channels]) for t in range(layout.n_frames)]
        for fov in layout.pages
    ]
    elapsed = [[number(p.get("ElapsedTime-ms")) for p in fov] for fov in planes]
    if all(ms is not None for fov in elapsed for ms in fov):
        meta.times = [np.asarray(fov, dtype=np.float64) / 60_000 for fov in elapsed]
        meta.times_source = "Micro-Manager ElapsedTime-ms of each FOV's channel 0, Z 0 planes"
    elif (interval := number(summary.get("Interval_ms"))) is not None and interval > 0:
        times = np.arange(layout.n_frames, dtype=np.float64) * interval / 60_000
        meta.times = [times.copy() for _ in layout.pages]
        meta.times_source = f"Micro-Manager Summary Interval_ms {interval:g} (no per-plane times)"
    names = [fov[0].get("PositionName") for fov in planes if fov]
    if names and all(isinstance(n, str) and n for n in names):
        meta.fov_names = names
    return meta


def _mm_plane(page: Any) -> dict[str, Any]:
    """The ``MicroManagerMetadata`` tag of a page's IFD, {} where there is none."""
    if not isinstance(page, tifffile.TiffPage):
        if page.offset is None:  # a frame known only from an index: no IFD to read
            return {}
        page = page.aspage()
    tag = page.tags.get("MicroManagerMetadata")
    return tag.value if tag is not None and isinstance(tag.value, dict) else {}


def _ndtiff(tif: tifffile.TiffFile, layout: StackLayout) -> StackMetadata:
    meta = StackMetadata(_FORMAT_NAMES["ndtiff"])
    _mm_common(meta, _mm_summary(tif), layout)
    folder = Path(tif.filehandle.dirname)
    # Index entry of each image, by where its pixels are: what tifffile's pages know.
    entries = {(e[1], e[2]): e for e in tifffile.read_ndtiff_index(folder / "NDTiff.index")}

    def axes(page: Any) -> dict[str, Any]:
        found = entries.get((page.parent.filename, page.dataoffsets[0]))
        return found[0] if found is not None else {}

    labels = [axes(layout.page(0, 0, c)).get("channel") for c in range(layout.n_channels)]
    if all(isinstance(n, str) for n in labels):
        meta.channel_names = labels
    positions = [axes(fov[0]).get("position") for fov in layout.pages]
    order = list(range(len(layout.pages)))
    if all(isinstance(n, str) for n in positions):
        # Labels are numbered in the order the index first lists them (the stage's path), so
        # FOVs follow the labels' natural order instead: Pos0, Pos1, ..., Pos10.
        order.sort(key=lambda i: natural_key(positions[i]))
        meta.fov_order, meta.fov_names = order, [positions[i] for i in order]
    with _MetadataReader(folder) as reader:
        elapsed = [
            [
                reader.elapsed_ms(entries.get((p.parent.filename, p.dataoffsets[0])))
                for p in (layout.page(fov, t, 0) for t in range(layout.n_frames))
            ]
            for fov in order
        ]
    if all(ms is not None for fov in elapsed for ms in fov):
        meta.times = [np.asarray(fov, dtype=np.float64) / 60_000 for fov in elapsed]
        meta.times_source = "NDTiff ElapsedTime-ms of each FOV's channel 0, Z 0 images"
    return meta


class _MetadataReader:
    """Reads the per-image JSON an NDTiff index entry points to, each file opened once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, BinaryIO] = {}

    def elapsed_ms(self, entry: tuple[Any, ...] | None) -> float | None:
        """The image's ``ElapsedTime-ms``; None when unindexed, compressed or unreadable."""
        if entry is None:
            return None
        name, offset, size, compression = entry[1], entry[7], entry[8], entry[9]
        if compression != 0 or size <= 0:
            return None
        if name not in self.files:
            self.files[name] = open(self.folder / name, "rb")  # noqa: SIM115 (closed on exit)
        handle = self.files[name]
        handle.seek(offset)
        try:
            plane = json.loads(handle.read(size))
        except (ValueError, UnicodeDecodeError):
            return None
        return number(plane.get("ElapsedTime-ms")) if isinstance(plane, dict) else None

    def __enter__(self) -> _MetadataReader:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.files.values():
            handle.close()
