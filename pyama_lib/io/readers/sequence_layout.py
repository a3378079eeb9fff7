"""List a TIFF sequence once and lay its files out as positions × frames × channels:
:func:`list_sequence`.

Everything that can be wrong with the names is found here, before anything is read or written:
no scheme reads them, files of two acquisitions in one folder, the same image twice (``t1`` and
``t001``), missing frames or images, a gap in the time indices. The errors name the files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from pyama_lib.core.errors import CorruptFileError, UnsupportedFormatError
from pyama_lib.io.readers.acquisition import assumed_times_note
from pyama_lib.io.readers.mm_legacy import MicroManagerMetadata, read_metadata
from pyama_lib.io.readers.sequence_names import (
    AXES,
    Naming,
    choose_naming,
    natural_key,
    pattern_naming,
)
from pyama_lib.io.readers.tiff_images import is_tiff_name, read_header

# A key of one image: the position's folder and its indices as written (strings).
_Key = tuple[str, str, str, str, str]  # folder, P, T, C, Z
_SHOWN = 5  # files or gaps named in one message


@dataclass
class SequenceLayout:
    """A listed sequence: the metadata attributes of an acquisition and where each image is."""

    folder: Path
    naming: Naming
    files: list[list[Path]]  # [fov][t * n_channels + c]
    labels: dict[str, list[str]]  # per axis, the values as written, in index order
    times: list[np.ndarray]
    n_fovs: int
    n_frames: int
    n_channels: int
    height: int
    width: int
    dtype: np.dtype
    channel_names: list[str]
    pixel_size_um: float | None = None
    times_note: str | None = None
    subfolders: bool = False
    skipped_z: int = 0
    prefix: str = ""
    notes: list[str] = field(default_factory=list)

    def file(self, fov: int, channel: int, t: int) -> Path:
        return self.files[fov][t * self.n_channels + channel]

    def all_files(self) -> list[Path]:
        return [f for fov in self.files for f in fov]

    def describe(self) -> list[str]:
        """How the names were understood, for ``pyama info``: one line per fact."""
        n = sum(len(f) for f in self.files)
        where = "its sub-folders" if self.subfolders else "the folder"
        lines = [f"naming:   {self.naming.name}", f"files:    {n} images in {where}"]
        if self.prefix:
            lines[-1] += f", names start {self.prefix!r}"
        first, last = self.files[0][0].name, self.files[-1][-1].name
        for axis, what in (("P", "positions"), ("T", "frames"), ("C", "channels")):
            values = self.labels[axis]
            shown = ", ".join(values) if len(values) <= 4 else f"{values[0]} … {values[-1]}"
            lines.append(f"{what + ':':<9} {len(values)} ({shown})")
        lines.append(f"first:    {first}")
        lines.append(f"last:     {last}")
        if self.skipped_z:
            lines.append(f"z:        {self.skipped_z} images at other Z planes are not read")
        return lines + self.notes


def list_sequence(folder: Path, pattern: str | None, interval_min: float | None) -> SequenceLayout:
    """Lay out the TIFF sequence in ``folder`` (see the module's docstring for the errors)."""
    names, subfolders = _image_names(folder)
    folders = list(names)
    naming = _naming(folder, [n for ns in names.values() for n in ns], pattern)
    keyed, prefixes = _parse_all(folder, names, naming)
    if len(prefixes) > 1:
        shown = ", ".join(repr(p) for p in sorted(prefixes)[:_SHOWN])
        raise UnsupportedFormatError(
            folder,
            f"holds the images of {len(prefixes)} acquisitions (names start {shown}); put "
            "each in a folder of its own",
        )
    meta = read_metadata(Path(folders[0]))
    labels = {ax: _ordered(folder, ax, {k[i + 1] for k in keyed}) for i, ax in enumerate(AXES)}
    if meta and meta.channel_names:  # named channels (1.4) in acquisition order, not A-Z
        known = {n: i for i, n in enumerate(meta.channel_names)}
        labels["C"].sort(key=lambda c: known.get(c, len(known)))
    positions = sorted(
        {(k[0], k[1]) for k in keyed}, key=lambda p: (folders.index(p[0]), natural_key(p[1]))
    )
    _check_positions(folder, positions, subfolders)
    z0 = labels["Z"][0]
    files = [
        [_image(folder, keyed, (f, p, t, c, z0)) for t in labels["T"] for c in labels["C"]]
        for f, p in positions
    ]
    page = _first_page(files[0][0])
    height, width = page[0]
    layout = SequenceLayout(
        folder=folder,
        naming=naming,
        files=files,
        labels={**labels, "P": [_position_label(f, p, subfolders) for f, p in positions]},
        times=[],
        n_fovs=len(positions),
        n_frames=len(labels["T"]),
        n_channels=len(labels["C"]),
        height=height,
        width=width,
        dtype=page[1],
        channel_names=[],
        subfolders=subfolders,
        skipped_z=sum(1 for k in keyed if k[4] != z0),
        prefix=next(iter(prefixes), ""),
    )
    read_header(files[-1][-1], (height, width), layout.dtype)
    layout.channel_names = _channel_names(labels["C"], meta)
    _set_times(layout, [read_metadata(Path(f)) for f, _ in positions], interval_min)
    return layout


def _image_names(folder: Path) -> tuple[dict[str, list[str]], bool]:
    """The TIFF names of each folder that holds the images: the folder itself when it holds
    TIFFs, else its sub-folders that do (Micro-Manager's ``Pos0``, ``Pos1``, …) in natural
    order. Each folder is listed once."""
    entries = _scandir(folder)
    own = sorted(e.name for e in entries if e.is_file() and is_tiff_name(e.name))
    if own:
        return {str(folder): own}, False
    subs = {}
    for entry in sorted(entries, key=lambda e: natural_key(e.name)):
        if entry.is_dir() and not entry.name.startswith("."):
            names = sorted(e.name for e in _scandir(Path(entry.path)) if e.is_file())
            if tiffs := [n for n in names if is_tiff_name(n)]:
                subs[entry.path] = tiffs
    if not subs:
        raise UnsupportedFormatError(
            folder, "holds no TIFF images (.tif/.tiff), directly or in its sub-folders"
        )
    return subs, True


def _naming(folder: Path, names: list[str], pattern: str | None) -> Naming:
    if pattern is not None:
        return pattern_naming(pattern)
    naming = choose_naming(names)
    if naming is None:
        raise UnsupportedFormatError(
            folder,
            f"the image names (e.g. {names[0]!r}) carry no time index PyAMA Flow recognises "
            "(NIS-Elements '…t001xy1c1.tif', Micro-Manager 'img_channel000_position000_"
            "time000000000_z000.tif'); describe them with --pattern, e.g. "
            "--pattern 'exp_{p}_{t}_{c}.tif'",
        )
    return naming


def _parse_all(
    folder: Path, names: dict[str, list[str]], naming: Naming
) -> tuple[dict[_Key, Path], set[str]]:
    keyed: dict[_Key, Path] = {}
    canonical: dict[tuple[str, ...], Path] = {}
    unmatched: list[str] = []
    prefixes: set[str] = set()
    for f, file_names in names.items():
        for name in file_names:
            parsed = naming.parse(name)
            if parsed is None or "T" not in parsed.indices:
                unmatched.append(name)
                continue
            prefixes.add(parsed.prefix)
            key = (f, *(parsed.indices.get(ax, "0") for ax in AXES))
            same = (f, parsed.prefix, *(_canonical(v) for v in key[1:]))
            if same in canonical:
                raise UnsupportedFormatError(
                    folder,
                    f"{canonical[same].name} and {name} are the same image (indices "
                    f"{dict(zip(AXES, key[1:], strict=True))}); remove one of them",
                )
            keyed[key] = canonical[same] = Path(f) / name
    if unmatched:
        raise UnsupportedFormatError(
            folder,
            f"{len(unmatched)} TIFF file(s) do not match the naming {naming.name!r}: "
            f"{', '.join(unmatched[:_SHOWN])}; move them out of the folder or give a "
            "--pattern that reads them",
        )
    return keyed, prefixes


def _ordered(folder: Path, axis: str, values: set[str]) -> list[str]:
    """The values of one axis in index order: numbers by value, names naturally (A2 before
    A10). Frames must be consecutive numbers: a gap is missing frames."""
    if not all(v.isdigit() for v in values):
        if axis == "T":
            raise UnsupportedFormatError(folder, f"time indices must be numbers, got {values}")
        return sorted(values, key=natural_key)
    ordered = sorted(values, key=int)
    if axis == "T":
        numbers = [int(v) for v in ordered]
        gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        if gaps:
            raise UnsupportedFormatError(
                folder,
                f"frames {', '.join(map(str, gaps[:_SHOWN]))}{' …' if len(gaps) > _SHOWN else ''}"
                f" are missing ({len(gaps)} of {numbers[-1] - numbers[0] + 1} time indices "
                f"from {numbers[0]} to {numbers[-1]} have no file)",
            )
    return ordered


def _image(folder: Path, keyed: dict[_Key, Path], key: _Key) -> Path:
    found = keyed.get(key)
    if found is not None:
        return found
    missing = dict(zip(("folder", *AXES), key, strict=True))
    where = f" in {Path(key[0]).name}" if Path(key[0]) != folder else ""
    raise UnsupportedFormatError(
        folder,
        f"no image for position {missing['P']}, time {missing['T']}, channel {missing['C']}"
        f"{where}: the sequence is incomplete (still being copied, or a file was lost)",
    )


def _check_positions(folder: Path, positions: list[tuple[str, str]], subfolders: bool) -> None:
    if subfolders and len({f for f, _ in positions}) != len(positions):
        raise UnsupportedFormatError(
            folder, "a position folder holds images of several positions; keep one per folder"
        )


def _position_label(f: str, p: str, subfolders: bool) -> str:
    return Path(f).name if subfolders else p


def _first_page(path: Path) -> tuple[tuple[int, int], np.dtype]:
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            shape, dtype = page.shape, page.dtype
    except Exception as exc:
        raise CorruptFileError(path, f"cannot be read as a TIFF image ({exc})") from exc
    if len(shape) != 2 or dtype is None:
        raise UnsupportedFormatError(
            path, f"holds a {shape} image; a sequence needs one 2-D grey image per file"
        )
    return (int(shape[0]), int(shape[1])), np.dtype(dtype)


def _channel_names(values: list[str], meta: MicroManagerMetadata | None) -> list[str]:
    names = meta.channel_names if meta else []
    out = []
    for v in values:
        if v.isdigit() and names and int(v) < len(names):
            out.append(names[int(v)])
        else:
            out.append(f"c{v}" if v.isdigit() else v)
    return out


def _set_times(
    layout: SequenceLayout, metas: list[MicroManagerMetadata | None], interval_min: float | None
) -> None:
    """Each position's times from Micro-Manager's per-image elapsed times (its first channel's
    image of each frame), else its nominal interval, else ``interval_min`` or 1 min, said."""
    step = 1.0 if interval_min is None else float(interval_min)
    nominal = np.arange(layout.n_frames, dtype=np.float64)
    for fov, meta in enumerate(metas):
        stamps = [
            meta.elapsed_ms.get(layout.file(fov, 0, t).name) if meta else None
            for t in range(layout.n_frames)
        ]
        if all(s is not None for s in stamps):
            layout.times.append(np.asarray(stamps, dtype=np.float64) / 60_000.0)
        elif meta is not None and meta.interval_ms is not None:
            layout.times.append(nominal * meta.interval_ms / 60_000.0)
        else:
            layout.times.append(nominal * step)
            lacking = "the images record no times"
            layout.times_note = assumed_times_note(layout.folder, lacking, interval_min)


def _canonical(value: str) -> str:
    return str(int(value)) if value.isdigit() else value.lower()


def _scandir(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as exc:
        raise CorruptFileError(folder, f"cannot be listed ({exc})") from exc
