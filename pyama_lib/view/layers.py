"""One processed FOV in napari, straight from its store: ``pyama view OUT --fov N``.

:func:`fov_layers` builds napari's layer tuples ``(data, keyword arguments, layer type)`` from
the store's OME-Zarr metadata (:mod:`pyama_lib.io.ngff`) and the FOV's Tracks table, with no
napari import: images and labels are dask arrays over the Zarr arrays, so a frame is read when
napari shows it and a 180-frame 2048² stack is never loaded whole. :func:`show` hands them to
napari (the ``[view]`` extra).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import zarr

from pyama_lib.core.errors import PyamaError, StoreError
from pyama_lib.io.store import FovStore, parse_array_name, stored_base_names
from pyama_lib.io.tracks import TRACK_COLUMNS, tracks_csv_path
from pyama_lib.view.curation_state import CurationState

if TYPE_CHECKING:  # napari and Qt only where a viewer is opened
    import napari

    from pyama_lib.view.curation import CurationWidget

INSTALL_HINT = "pip install 'pyama-flow[view]'"
# Fluorescence colours in channel order; phase contrast is grey.
_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue")

LayerData = tuple[Any, dict[str, Any], str]
_SCREENSHOT_SIZE = (1280, 800)  # window pixels of --screenshot
_CURATION_SIZE = (1600, 900)  # the same with the curation panel docked beside the image
SCREENSHOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ViewerMissingError(PyamaError):
    """napari (the optional ``[view]`` extra) is not installed."""


@dataclass(frozen=True)
class FovView:
    """What :func:`fov_layers` found: the layers, and the store they came from."""

    store: FovStore
    layers: list[LayerData]
    tracks_channel: int | None


def _find_store(out_dir: Path, fov: int) -> FovStore:
    bases = stored_base_names(out_dir)
    if not bases:
        raise StoreError(f"{out_dir}: no processed FOV stores here (fov_XXX/*.zarr); process first")
    stores = [FovStore(out_dir, base, fov) for base in bases]
    found = [s for s in stores if (s.path / "zarr.json").is_file()]
    if not found:
        have = sorted(p.name for p in out_dir.glob("fov_[0-9]*") if p.is_dir())
        raise StoreError(f"{out_dir}: no store for fov {fov}; the folder has {', '.join(have)}")
    return found[0]


def _contrast(array: zarr.Array, from_background: bool) -> list[float]:
    """Contrast limits from the middle frame, 0.5-99.5 % (napari would otherwise scan the
    stack for them); fluorescence starts at the median, the background, which then is black."""
    frame = np.asarray(array[array.shape[0] // 2], dtype=np.float64)
    finite = frame[np.isfinite(frame)]
    if finite.size == 0:
        return [0.0, 1.0]
    low, high = np.percentile(finite, [50.0 if from_background else 0.5, 99.5])
    return [float(low), float(high if high > low else low + 1.0)]


def fov_layers(out_dir: str | Path, fov: int = 0, channel: int | None = None) -> FovView:
    """napari layer tuples of one processed FOV: its images, labels and tracks.

    Parameters
    ----------
    out_dir
        The processed output folder.
    fov
        FOV index.
    channel
        Fluorescence channel whose Tracks table to show; the first one that has one when None.

    Returns
    -------
    FovView
        Layers in drawing order: phase contrast, fluorescence (raw hidden, corrected shown),
        the tracked labels, the tracks. Each carries the store's physical scale.
    """
    out_dir = Path(out_dir)
    store = _find_store(out_dir, fov)
    group = zarr.open_group(store.path, mode="r")
    images = (group.attrs.get("ome") or {}).get("multiscales") or []
    if not images:
        raise StoreError(f"{store.path}: no complete image yet; run the copy stage first")
    scale = images[0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    names = (group.attrs.get("pyama_acquisition") or {}).get("channel_names") or []
    layers = _image_layers(store, [image["name"] for image in images], names, scale)
    labels_group = group.get("labels")
    label_names = labels_group.attrs.get("ome", {}).get("labels", []) if labels_group else []
    layers += [
        (_lazy(store, name), {"name": name, "scale": scale, "opacity": 0.4}, "labels")
        for name in label_names
    ]
    tracks = _tracks_layer(store, channel, scale)
    if tracks is not None:
        layers.append(tracks[0])
    return FovView(store, layers, tracks[1] if tracks is not None else None)


def _lazy(store: FovStore, name: str) -> Any:
    import dask.array as da  # only this command needs dask's array module

    return da.from_zarr(store.open_array(name))


def _image_layers(
    store: FovStore, arrays: list[str], channel_names: list[str], scale: list[float]
) -> list[LayerData]:
    layers: list[LayerData] = []
    fl_channels: list[int] = []  # a channel's raw and corrected stacks share its colour
    for name in arrays:
        kind, c = parse_array_name(name) or ("", 0)
        kwargs: dict[str, Any] = {
            "name": f"{name} ({channel_names[c]})" if c < len(channel_names) else name,
            "scale": scale,
            "contrast_limits": _contrast(store.open_array(name), from_background=kind != "pc"),
            "visible": kind != "fl",  # the corrected stack is what the traces measured
            "colormap": "gray",
        }
        if kind != "pc":
            fl_channels += [] if c in fl_channels else [c]
            colour = _COLORMAPS[fl_channels.index(c) % len(_COLORMAPS)]
            kwargs |= {"colormap": colour, "blending": "additive"}
        layers.append((_lazy(store, name), kwargs, "image"))
    return layers


def _tracks_layer(
    store: FovStore, channel: int | None, scale: list[float]
) -> tuple[LayerData, int] | None:
    """The Tracks layer of ``channel``, else of the first channel whose table has points."""
    candidates = [channel] if channel is not None else sorted(_tracks_channels(store))
    for c in candidates:
        csv = tracks_csv_path(store.out_dir, store.base_name, store.fov, c)
        if not csv.is_file():
            if channel is not None:
                raise StoreError(f"{csv}: no tracks table for channel {c}; run extract first")
            continue
        # sorted as napari keeps a Tracks layer, so per-point features given later (the
        # curation panel's colours) line up with the layer's points
        table = pd.read_csv(csv).sort_values(["track_id", "t"], kind="stable")
        if table.empty:  # napari cannot draw a Tracks layer without points
            continue
        kwargs = {
            "name": f"tracks (ch {c})",
            "scale": scale,
            "features": table.drop(columns=list(TRACK_COLUMNS)),
            "tail_length": int(table["t"].max()) + 1,  # the whole path up to the shown frame
            "tail_width": 3,
        }
        return (table[list(TRACK_COLUMNS)].to_numpy(np.float64), kwargs, "tracks"), c
    return None


def _tracks_channels(store: FovStore) -> list[int]:
    """Channels of the FOV's Tracks tables (other files that look alike are not ours)."""
    name = re.compile(rf"{re.escape(store.base_name)}_fov_{store.fov:03d}_tracks_ch_(\d+)\.csv")
    found = (name.fullmatch(p.name) for p in store.path.parent.iterdir())
    return [int(m.group(1)) for m in found if m]


def show(
    view: FovView,
    *,
    screenshot: Path | None = None,
    frame: int | None = None,
    curation: CurationState | None = None,
) -> Path | None:
    """Open the layers in napari; with ``screenshot``, render them to that PNG and close.

    With ``curation`` (:func:`~pyama_lib.view.curation_state.load_curation` of the same FOV),
    the curation panel is docked beside the layers (:mod:`pyama_lib.view.curation`).
    """
    if screenshot is not None and screenshot.suffix.lower() not in SCREENSHOT_SUFFIXES:
        raise PyamaError(
            f"{screenshot}: a screenshot is written as {', '.join(SCREENSHOT_SUFFIXES)}; "
            "name the file with one of them"
        )
    napari = _napari()
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        # Qt would abort the process, or napari fail deep inside OpenGL, without saying why.
        raise PyamaError(
            "no display to draw on ($DISPLAY is not set); napari needs one even for "
            "--screenshot: log in with `ssh -X`, or run under a virtual X server, e.g. "
            "`xvfb-run -a pyama view OUT --fov N --screenshot fov.png` (apt install xvfb)"
        )
    if screenshot is not None:  # no window to show: render without one
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    viewer, _ = open_viewer(view, frame=frame, curation=curation, show=screenshot is None)
    if screenshot is None:
        napari.run()
        return None
    viewer.window.resize(*(_SCREENSHOT_SIZE if curation is None else _CURATION_SIZE))
    viewer.reset_view()
    image = viewer.screenshot(canvas_only=False, flash=False)
    viewer.close()
    import imageio.v3 as iio  # napari depends on it

    iio.imwrite(screenshot, image)
    return screenshot


def open_viewer(
    view: FovView,
    *,
    frame: int | None = None,
    curation: CurationState | None = None,
    show: bool = True,
) -> tuple[napari.Viewer, CurationWidget | None]:
    """A napari viewer with the layers of ``view`` (and the curation panel of ``curation``),
    its window shown or not; the caller runs Qt's event loop (:func:`show` does)."""
    napari = _napari()
    viewer = napari.Viewer(title=f"PyAMA Flow: {view.store.path.name}", show=show)
    added = {kind: getattr(viewer, f"add_{kind}")(data, **kw) for data, kw, kind in view.layers}
    if frame is not None:
        viewer.dims.set_current_step(0, frame)
    if curation is None:
        return viewer, None
    from pyama_lib.view.curation import add_curation  # Qt, once napari is there

    return viewer, add_curation(viewer, curation, added.get("labels"), added.get("tracks"))


def _napari() -> Any:
    try:
        import napari
    except ImportError as exc:
        raise ViewerMissingError(
            f"pyama view needs napari, an optional extra: {INSTALL_HINT} ({exc})"
        ) from exc
    return napari
