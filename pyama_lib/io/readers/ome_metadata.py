"""OME-XML metadata of an OME-TIFF: the data-holding ``Pixels`` and their channels, pixel size
and frame times, as :class:`~pyama_lib.io.readers.ome_tiff.OmeTiffAcquisition` reads them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pyama_lib.core.errors import UnsupportedFormatError

# OME UnitsTime symbols → minutes (OME's default unit for DeltaT is the second).
_MINUTES_PER_UNIT = {"s": 1 / 60, "ms": 1 / 60_000, "µs": 1 / 60e6, "us": 1 / 60e6}
_MINUTES_PER_UNIT |= {"min": 1.0, "h": 60.0, "d": 1440.0}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ome_pixels(xml: str | None) -> list[ET.Element]:
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


def ome_channel_names(pixels: ET.Element, n_channels: int) -> list[str]:
    """The ``Channel`` names of one ``Pixels``, ``ch<i>`` where missing, ``n_channels`` long."""
    chans = [e for e in pixels if _local(e.tag) == "Channel"]
    names = [e.get("Name") or f"ch{i}" for i, e in enumerate(chans)]
    return (names + [f"ch{i}" for i in range(len(names), n_channels)])[:n_channels]


_MICROMETRES_PER_UNIT = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}


def ome_pixel_size_um(pixels: ET.Element) -> float | None:
    """``PhysicalSizeX`` in µm (OME's default unit), or None when absent or in another unit."""
    size, unit = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit", "µm")
    if size is None or unit not in _MICROMETRES_PER_UNIT:
        return None
    um = float(size) * _MICROMETRES_PER_UNIT[unit]
    return um if um > 0 else None


def ome_times_minutes(path: Path, pixels: ET.Element, n_frames: int) -> np.ndarray | None:
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
