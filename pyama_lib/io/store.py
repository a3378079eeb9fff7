"""The Zarr v3 store of intermediates: one group per FOV, one frame per chunk.

Layout (docs/outputs.md)::

    <out>/fov_XXX/<base>_fov_XXX.zarr/{pc,fl,seg,fl_corrected}_ch_<c>
    <out>/fov_XXX/<base>_fov_XXX.zarr/labels/seg_labeled_ch_<c>/0

The group is also an OME-Zarr (NGFF 0.5) image with the tracked labels as its label image
(:mod:`pyama_lib.io.ngff`), so napari opens it as it is.

An array counts as present only when its completion marker (the ``pyama_complete`` attribute,
holding the stage's parameters) is set, and the marker is written after the last frame. A stage
killed half-way therefore leaves an unmarked array that the next run rewrites from scratch.
Zarr's local store writes every file through a temporary name and a rename, so the marker itself
is never half-written. Paths are derived from the output folder each time, never stored, so a
moved output folder stays valid.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pyama_lib.core.errors import StoreError
from pyama_lib.io import ngff
from pyama_lib.io.plain import plain

COMPLETE_ATTR = "pyama_complete"
OUTPUTS_ATTR = "pyama_outputs"  # group attribute: markers of files derived from this FOV
ACQUISITION_ATTR = "pyama_acquisition"  # group attribute: channel names and physical scale
ARRAY_KINDS = ("pc", "fl", "seg", "seg_labeled", "fl_corrected")
_IMAGE_KINDS = ("pc", "fl", "fl_corrected")  # the intensity arrays NGFF lists, in this order

# LZ4 with byte shuffle: fast enough that writing a 2048² frame costs less than computing it,
# and it still shrinks uint16 microscopy frames and boolean masks several-fold. Measured at
# 2048² (ms per frame to write and read back, MB on disk): float32 corrected frames, whose
# noise hardly compresses, 25.7 / 15.5 with it against 17.8 / 14.0 with lz4 level 1 and bit
# shuffle; label images 4.6 / 0.18 against 4.5 / 0.04 with zstd level 1.
_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
_FLOAT_COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
_LABELS_COMPRESSOR = ZstdCodec(level=1)
# Zarr's default compares every written frame with the fill value to skip empty chunks: a full
# pass over each frame, for frames that are never empty.
_WRITE_CONFIG = {"write_empty_chunks": True}


def _compressor(name: str, dtype: np.dtype) -> BloscCodec | ZstdCodec:
    if name.startswith("seg_labeled"):
        return _LABELS_COMPRESSOR
    return _FLOAT_COMPRESSOR if dtype.kind == "f" else _COMPRESSOR


def array_name(kind: str, channel: int) -> str:
    """``array_name("fl_corrected", 1) == "fl_corrected_ch_1"``."""
    if kind not in ARRAY_KINDS:
        raise ValueError(f"unknown array kind {kind!r}; expected one of {ARRAY_KINDS}")
    return f"{kind}_ch_{channel}"


def _relative_path(name: str) -> str:
    """Where array ``name`` lives inside the FOV group: label images in NGFF's labels group."""
    if name.startswith("seg_labeled"):
        return f"{ngff.LABELS_GROUP}/{name}/{ngff.LEVEL}"
    return name


def parse_array_name(name: str) -> tuple[str, int] | None:
    """``parse_array_name("fl_corrected_ch_1") == ("fl_corrected", 1)``; None for others."""
    kind, sep, channel = name.rpartition("_ch_")
    return (kind, int(channel)) if sep and kind in ARRAY_KINDS and channel.isdigit() else None


def fov_dir(out_dir: str | Path, fov: int) -> Path:
    return Path(out_dir) / f"fov_{fov:03d}"


def fov_store_path(out_dir: str | Path, base_name: str, fov: int) -> Path:
    return fov_dir(out_dir, fov) / f"{base_name}_fov_{fov:03d}.zarr"


def stored_base_names(out_dir: str | Path) -> list[str]:
    """Base names of the acquisitions whose FOV stores are in ``out_dir`` (sorted, unique)."""
    names = {
        store.name.rsplit("_fov_", 1)[0]
        for store in Path(out_dir).glob("fov_[0-9]*/*_fov_[0-9]*.zarr")
        if store.is_dir()
    }
    return sorted(names)


def _normalise(params: Mapping[str, Any] | None) -> Any:
    # Compare parameters the way they come back from JSON (tuples become lists, keys strings).
    return json.loads(json.dumps(plain(dict(params or {}), "completion marker"), sort_keys=True))


class Frames(Sequence[np.ndarray]):
    """A complete (T, H, W) array seen as a sequence of frames, each read from disk on access.

    Lets the array functions stream a stack (``len``, ``frames[t]``, iteration) without
    loading it, and without knowing about Zarr.
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, t: int) -> np.ndarray:  # type: ignore[override]
        if not -len(self) <= t < len(self):
            raise IndexError(t)
        return self.array[t]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


class FovStore:
    """The Zarr group of one FOV.

    Parameters
    ----------
    out_dir
        The run's output folder.
    base_name
        The acquisition's base name (file name without extension).
    fov
        FOV index.
    """

    def __init__(self, out_dir: str | Path, base_name: str, fov: int) -> None:
        self.out_dir = Path(out_dir)
        self.base_name = base_name
        self.fov = fov
        self.path = fov_store_path(out_dir, base_name, fov)

    def __repr__(self) -> str:
        return f"FovStore({str(self.path)!r})"

    def _group(self) -> zarr.Group:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return zarr.open_group(self.path, mode="a", zarr_format=3)

    def array_path(self, name: str) -> Path:
        """The folder of array ``name`` on disk."""
        return self.path / _relative_path(name)

    def _get(self, name: str) -> zarr.Array | None:
        path = self.array_path(name)
        if not (path / "zarr.json").is_file():
            return None
        try:
            arr = zarr.open_array(path, mode="r+", zarr_format=3)
        except Exception:  # unreadable metadata counts as absent; the writer replaces it
            return None
        # Arrays of the layout before OME-Zarr (dimension "frame") count as absent: NGFF
        # readers would reject them, so their stage runs once more.
        return arr if tuple(arr.metadata.dimension_names or ()) == ngff.AXES else None

    def completion(self, name: str) -> dict[str, Any] | None:
        """The completion marker of ``name`` or None when absent or half-written."""
        arr = self._get(name)
        if arr is None:
            return None
        marker = arr.attrs.get(COMPLETE_ATTR)
        return marker if isinstance(marker, dict) else None

    def is_complete(self, name: str, params: Mapping[str, Any] | None = None) -> bool:
        """True when ``name`` was fully written, with ``params`` when they are given."""
        marker = self.completion(name)
        if marker is None:
            return False
        return params is None or marker.get("params") == _normalise(params)

    def fingerprint(self, name: str) -> str | None:
        """A short hash of ``name``'s completion marker: changes whenever it is rewritten."""
        marker = self.completion(name)
        if marker is None:
            return None
        text = json.dumps(marker, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- markers of outputs that live outside the group (traces CSV, Parquet partition) ------
    def output_marker(self, key: str) -> dict[str, Any] | None:
        if not (self.path / "zarr.json").is_file():
            return None
        try:
            markers = zarr.open_group(self.path, mode="r").attrs.get(OUTPUTS_ATTR, {})
        except Exception:  # unreadable group metadata: treat every output as absent
            return None
        return markers.get(key)

    def is_output_complete(self, key: str, params: Mapping[str, Any]) -> bool:
        marker = self.output_marker(key)
        return marker is not None and marker.get("params") == _normalise(params)

    def unmark_output(self, key: str) -> None:
        """Forget output ``key``'s marker: call it before rewriting the output's files, so that a
        run killed halfway leaves no marker standing over files of two parameter sets."""
        if self.output_marker(key) is None:
            return
        group = self._group()
        markers = dict(group.attrs.get(OUTPUTS_ATTR, {}))
        markers.pop(key, None)
        group.attrs[OUTPUTS_ATTR] = markers

    def mark_output(self, key: str, params: Mapping[str, Any], **facts: Any) -> None:
        """Record that output ``key`` was fully written with ``params`` (plus small facts)."""
        group = self._group()
        markers = dict(group.attrs.get(OUTPUTS_ATTR, {}))
        markers[key] = {"params": _normalise(params), **facts}
        group.attrs[OUTPUTS_ATTR] = markers

    def open_array(self, name: str) -> zarr.Array:
        """Open a complete array for reading; a clear error when its stage has not run."""
        arr = self._get(name)
        if arr is None or not isinstance(arr.attrs.get(COMPLETE_ATTR), dict):
            state = "is half-written" if arr is not None else "does not exist"
            raise StoreError(
                f"{self.array_path(name)}: {state}; run the stage that produces {name!r} "
                "for this FOV first"
            )
        return arr

    def frames(self, name: str) -> Frames:
        """The complete array ``name`` as a lazily read sequence of frames."""
        return Frames(self.open_array(name))

    def array_names(self, complete_only: bool = True) -> list[str]:
        if not self.path.is_dir():
            return []
        labels = self.path / ngff.LABELS_GROUP
        candidates = [*self.path.iterdir(), *(labels.iterdir() if labels.is_dir() else ())]
        names = sorted(
            p.name
            for p in candidates
            if parse_array_name(p.name) and (self.array_path(p.name) / "zarr.json").is_file()
        )
        return [n for n in names if not complete_only or self.completion(n) is not None]

    # -- OME-Zarr metadata ----------------------------------------------------------------
    def describe_acquisition(
        self,
        channel_names: Sequence[str],
        pixel_size_um: float | None,
        times_min: Sequence[float],
    ) -> None:
        """Record what NGFF metadata needs from the acquisition: names and physical scale."""
        steps = np.diff(np.asarray(times_min, dtype=np.float64))
        interval = float(np.median(steps)) if steps.size and np.median(steps) > 0 else None
        facts = {
            "channel_names": list(channel_names),
            "pixel_size_um": pixel_size_um,
            "frame_interval_min": interval,
        }
        group = self._group()
        if group.attrs.get(ACQUISITION_ATTR) != facts:
            group.attrs[ACQUISITION_ATTR] = facts

    def _scale(self, facts: Mapping[str, Any]) -> ngff.Scale:
        return ngff.Scale(facts.get("frame_interval_min"), facts.get("pixel_size_um"))

    def _current(self, name: str, seen: dict[str, bool]) -> bool:
        """Complete, and computed from the inputs the store holds now (and they from theirs):
        a label image tracked from an earlier segmentation is not."""
        if name not in seen:
            marker = self.completion(name)
            inputs = ((marker or {}).get("params") or {}).get("inputs") or {}
            seen[name] = marker is not None and all(
                self.fingerprint(i) == fp and self._current(i, seen) for i, fp in inputs.items()
            )
        return seen[name]

    def _listed(self) -> set[str]:
        """The arrays the group's NGFF metadata lists now (images and label images)."""
        if not (self.path / "zarr.json").is_file():
            return set()
        group = zarr.open_group(self.path, mode="r")
        images = (group.attrs.get("ome") or {}).get("multiscales") or []
        labels = group.get(ngff.LABELS_GROUP)
        label_names = (labels.attrs.get("ome") or {}).get("labels", []) if labels else []
        return {image["name"] for image in images} | set(label_names)

    def write_ngff_metadata(self, exclude: Collection[str] = ()) -> None:
        """List the current intensity and label arrays (not ``exclude``) in the group's NGFF
        metadata. A writer calls it before it replaces a listed array and once the array is
        complete; a stage that wrote no array calls it too (``run_stage``), so a run killed
        between a marker and its listing is repaired."""
        group = self._group()
        facts = group.attrs.get(ACQUISITION_ATTR) or {}
        names = list(facts.get("channel_names") or [])
        scale = self._scale(facts)
        seen: dict[str, bool] = {}
        parsed = {
            n: parse_array_name(n)
            for n in self.array_names()
            if n not in exclude and self._current(n, seen)
        }
        images = sorted(
            (n for n, (kind, _) in parsed.items() if kind in _IMAGE_KINDS),
            key=lambda n: (_IMAGE_KINDS.index(parsed[n][0]), parsed[n][1]),
        )
        labelled = [(n, _channel_label(*parsed[n], names)) for n in images]
        image = ngff.image_attrs(labelled, scale)
        if image is not None:
            group.attrs["ome"] = image
        elif "ome" in group.attrs:
            del group.attrs["ome"]
        label_names = [n for n, (kind, _) in parsed.items() if kind == "seg_labeled"]
        if label_names or (self.path / ngff.LABELS_GROUP).is_dir():
            labels = group.require_group(ngff.LABELS_GROUP)
            labels.attrs["ome"] = ngff.labels_attrs(label_names)
            for name in label_names:  # its own scale: the acquisition's facts may have changed
                label = ngff.label_image_attrs(name, scale)
                if labels[name].attrs.get("ome") != label:
                    labels[name].attrs["ome"] = label

    @contextmanager
    def writer(
        self,
        name: str,
        shape: tuple[int, int, int],
        dtype: np.dtype | str | type,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[zarr.Array]:
        """Create (or replace) ``name`` and yield it for frame-by-frame writing.

        The completion marker is set only when the ``with`` block exits normally; an exception
        (or a killed process) leaves the array unmarked, hence absent for :meth:`is_complete`.
        """
        if len(shape) != 3:
            raise StoreError(f"{self.path / name}: expected a (T, H, W) shape, got {shape}")
        if name in self._listed():  # NGFF readers must not open it while it is rewritten
            self.write_ngff_metadata(exclude={name})
        self._remove(name)  # zarr would keep stale chunks of a previous, larger array
        parent = self._group()
        relative = _relative_path(name)
        if relative != name:  # a label image: its own group in labels/, described once listed
            parent = parent.require_group(ngff.LABELS_GROUP).require_group(name)
        arr = parent.create_array(
            relative.rsplit("/", 1)[-1],
            shape=shape,
            chunks=(1, shape[1], shape[2]),
            dtype=np.dtype(dtype),
            compressors=_compressor(name, np.dtype(dtype)),
            fill_value=0,
            config=_WRITE_CONFIG,
            dimension_names=ngff.AXES,
        )
        yield arr
        arr.attrs[COMPLETE_ATTR] = {
            "params": _normalise(params),
            "n_frames": int(shape[0]),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.write_ngff_metadata()

    def _remove(self, name: str) -> None:
        # A label image goes with its NGFF group; ``self.path / name`` is also where the layout
        # before OME-Zarr kept the labels.
        targets = [self.path / name]
        if _relative_path(name) != name:
            targets.append(self.array_path(name).parent)
        for target in targets:
            if target.exists():
                shutil.rmtree(target)


def _channel_label(kind: str, channel: int, names: Sequence[str]) -> str:
    """How a person knows the channel: the acquisition's name, and what was done to it."""
    name = names[channel] if channel < len(names) else f"ch{channel}"
    return {
        "pc": f"{name} (phase contrast)",
        "fl": name,
        "fl_corrected": f"{name}, background-corrected",
    }[kind]
