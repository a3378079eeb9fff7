"""The Zarr v3 store of intermediates: one group per FOV, one frame per chunk.

Layout (DESIGN.md "Zarr store")::

    <out>/fov_XXX/<base>_fov_XXX.zarr/{pc,fl,seg,seg_labeled,fl_corrected}_ch_<c>

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from pyama_lib.errors import StoreError
from pyama_lib.io.plain import plain

COMPLETE_ATTR = "pyama_complete"
OUTPUTS_ATTR = "pyama_outputs"  # group attribute: markers of files derived from this FOV
ARRAY_KINDS = ("pc", "fl", "seg", "seg_labeled", "fl_corrected")

# LZ4 with byte shuffle: fast enough that writing a 2048² frame costs less than computing it,
# and it still shrinks uint16 microscopy frames and boolean masks several-fold. Measured at
# 2048² (ms per frame to write and read back, MB on disk): float32 corrected frames, whose
# noise hardly compresses, 25.7 / 15.5 with it against 17.8 / 14.0 with lz4 level 1 and bit
# shuffle; label images 4.6 / 0.18 against 4.5 / 0.04 with zstd level 1.
_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
_FLOAT_COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
_LABELS_COMPRESSOR = ZstdCodec(level=1)
# Zarr's default compares every written frame with the fill value to skip empty chunks: 7-14 ms
# per 8 MB frame (30 ms per frame of the copy stage) for frames that are never empty.
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

    def _get(self, name: str) -> zarr.Array | None:
        if not (self.path / name / "zarr.json").is_file():
            return None
        try:
            arr = zarr.open_array(self.path / name, mode="r+", zarr_format=3)
        except Exception:  # unreadable metadata counts as absent; the writer replaces it
            return None
        return arr

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
                f"{self.path / name}: {state}; run the stage that produces {name!r} "
                "for this FOV first"
            )
        return arr

    def frames(self, name: str) -> Frames:
        """The complete array ``name`` as a lazily read sequence of frames."""
        return Frames(self.open_array(name))

    def array_names(self, complete_only: bool = True) -> list[str]:
        if not self.path.is_dir():
            return []
        names = sorted(p.name for p in self.path.iterdir() if (p / "zarr.json").is_file())
        return [n for n in names if not complete_only or self.completion(n) is not None]

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
        self._remove(name)  # zarr would keep stale chunks of a previous, larger array
        arr = self._group().create_array(
            name,
            shape=shape,
            chunks=(1, shape[1], shape[2]),
            dtype=np.dtype(dtype),
            compressors=_compressor(name, np.dtype(dtype)),
            fill_value=0,
            config=_WRITE_CONFIG,
            dimension_names=("frame", "y", "x"),
        )
        yield arr
        arr.attrs[COMPLETE_ATTR] = {
            "params": _normalise(params),
            "n_frames": int(shape[0]),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _remove(self, name: str) -> None:
        target = self.path / name
        if target.exists():
            shutil.rmtree(target)
