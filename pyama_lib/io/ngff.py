"""OME-Zarr (NGFF 0.5) metadata of a FOV store, so napari and other OME-Zarr readers open it.

The store keeps one (t, y, x) array per channel and kind, the layout the stages and their
completion markers are built on. NGFF describes them as they are:

- the FOV group is an image whose ``multiscales`` list names each intensity array (phase
  contrast first: readers that show one image per group show that one), one level each;
- the tracked labels live at ``labels/<name>/0``, an ``image-label`` of that image;
- ``omero`` names the first image's channel, as the acquisition calls it.

Only complete arrays are listed, so a reader never opens a half-written stack.

Examples
--------
>>> scale = Scale(frame_interval_min=5.0, pixel_size_um=0.65)
>>> ms = multiscale("pc_ch_0", "pc_ch_0", scale)
>>> [axis["name"] for axis in ms["axes"]], ms["datasets"][0]["coordinateTransformations"]
(['t', 'y', 'x'], [{'type': 'scale', 'scale': [5.0, 0.65, 0.65]}])
>>> image_attrs([], scale) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NGFF_VERSION = "0.5"
# Every array's dimension_names: NGFF 0.5 requires them to equal the axis names.
AXES = ("t", "y", "x")
LABELS_GROUP = "labels"
LEVEL = "0"  # the one (full-resolution) level of a label image


@dataclass(frozen=True)
class Scale:
    """Physical size of one step along t, y and x; None where the acquisition does not say."""

    frame_interval_min: float | None = None
    pixel_size_um: float | None = None

    def axes(self) -> list[dict[str, str]]:
        t: dict[str, str] = {"name": "t", "type": "time"}
        if self.frame_interval_min is not None:
            t["unit"] = "minute"
        space = [{"name": n, "type": "space"} for n in ("y", "x")]
        if self.pixel_size_um is not None:
            for axis in space:
                axis["unit"] = "micrometer"
        return [t, *space]

    def factors(self) -> list[float]:
        px = self.pixel_size_um or 1.0
        return [self.frame_interval_min or 1.0, px, px]


def multiscale(name: str, path: str, scale: Scale) -> dict[str, Any]:
    """One single-level ``multiscales`` entry for the array at ``path`` (relative)."""
    return {
        "name": name,
        "axes": scale.axes(),
        "datasets": [
            {
                "path": path,
                "coordinateTransformations": [{"type": "scale", "scale": scale.factors()}],
            }
        ],
    }


def image_attrs(images: Sequence[tuple[str, str]], scale: Scale) -> dict[str, Any] | None:
    """The FOV group's ``ome`` attribute for ``(array name, channel label)`` pairs, or None
    when there is no image yet."""
    if not images:
        return None
    return {
        "version": NGFF_VERSION,
        "multiscales": [multiscale(name, name, scale) for name, _ in images],
        "omero": {"channels": [{"label": images[0][1], "color": "FFFFFF", "active": True}]},
    }


def labels_attrs(names: Sequence[str]) -> dict[str, Any]:
    """The ``labels`` group's ``ome`` attribute: the label images it holds."""
    return {"version": NGFF_VERSION, "labels": list(names)}


def label_image_attrs(name: str, scale: Scale) -> dict[str, Any]:
    """A label image's ``ome`` attribute; its source is the FOV image two levels up."""
    return {
        "version": NGFF_VERSION,
        "image-label": {"source": {"image": "../../"}},
        "multiscales": [multiscale(name, LEVEL, scale)],
    }
