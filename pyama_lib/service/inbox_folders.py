"""Folders as inbox acquisitions: TIFF sequences and Micro-Manager datasets.

A *sequence folder* is a visible folder that directly holds plain TIFF images (``.tif`` /
``.tiff`` that are not OME-TIFFs, which are acquisitions of their own), or a Micro-Manager
dataset: a folder with no TIFFs of its own whose sub-folders (``Pos0``, ``Pos1``, …) hold
TIFFs and a ``metadata.txt``. Everything inside a sequence folder belongs to it, so nothing
below it is an acquisition of its own.

A folder's version is the total size of its visible files and the latest modification time
among them and the folders themselves (:func:`folder_state`): an added, grown or replaced image
changes the size or a time, a deleted or renamed one the folder's time. Copy tools' hidden
temporary files are not part of it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyama_lib.io.readers.mm_legacy import METADATA_FILE
from pyama_lib.io.readers.tiff_images import is_tiff_name

_OME_SUFFIXES = (".ome.tif", ".ome.tiff")


def is_plain_tiff(name: str) -> bool:
    """Whether ``name`` is a visible TIFF that is not an OME-TIFF: one image of a sequence.

    Examples
    --------
    >>> is_plain_tiff("t001xy1c1.tif"), is_plain_tiff("plate.ome.tif"), is_plain_tiff(".a.tif")
    (True, False, False)
    """
    return is_tiff_name(name) and not name.lower().endswith(_OME_SUFFIXES)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """The visible entries of ``folder``; none when it cannot be listed (gone, no access)."""
    try:
        with os.scandir(folder) as it:
            return [e for e in it if not e.name.startswith(".")]
    except OSError:
        return []


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    # A symlinked folder is never searched: what it leads to may lie outside the inbox.
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _holds(folder: Path, wanted: Callable[[str], bool]) -> bool:
    """Whether ``folder`` holds a visible file named as ``wanted`` says; stops at the first,
    so a folder of 100 000 images costs one read of its first directory block."""
    try:
        with os.scandir(folder) as it:
            return any(wanted(e.name) and e.is_file() for e in it)
    except OSError:
        return False


def is_position_folder(folder: Path) -> bool:
    """A Micro-Manager position folder: TIFF images and a ``metadata.txt``."""
    return (folder / METADATA_FILE).is_file() and _holds(folder, is_plain_tiff)


def is_sequence_folder(path: str | Path) -> bool:
    """Whether ``path`` is a sequence folder (see the module's docstring); a symlink, a hidden
    folder or a file is not."""
    path = Path(path)
    try:
        if path.name.startswith(".") or not stat.S_ISDIR(path.lstat().st_mode):
            return False
    except OSError:
        return False
    if _holds(path, is_plain_tiff):
        return True
    return any(_is_real_dir(e) and is_position_folder(Path(e.path)) for e in _entries(path))


def search(folder: Path, is_file_acquisition: Callable[[str], bool]) -> list[Path]:
    """Every acquisition under the inbox folder ``folder``: files named as
    ``is_file_acquisition`` says and sequence folders, each folder listed once. The inbox
    folder itself is never one."""
    return _search(folder, is_file_acquisition, top=True)[0]


def _search(
    folder: Path, is_file_acquisition: Callable[[str], bool], top: bool
) -> tuple[list[Path], bool]:
    """The acquisitions under ``folder``, and whether ``folder`` is a position folder (which
    makes the folder above it a Micro-Manager dataset)."""
    entries = _entries(folder)
    files = [e.name for e in entries if _is_file(e)]
    if not top and any(is_plain_tiff(n) for n in files):
        return [folder], METADATA_FILE in files
    found = [folder / n for n in files if is_file_acquisition(n)]
    positions = False
    for entry in sorted((e for e in entries if _is_real_dir(e)), key=lambda e: e.name):
        below, is_position = _search(Path(entry.path), is_file_acquisition, top=False)
        found += below
        positions = positions or is_position
    if positions and not top:
        return [folder], False
    return found, False


def _is_file(entry: os.DirEntry[str]) -> bool:
    # Symlinked files are listed as they are: the inbox's checks decide on them.
    try:
        return entry.is_file()
    except OSError:
        return False


def sequence_holding(path: Path, root: Path, known: dict[Path, bool] | None = None) -> Path | None:
    """The outermost sequence folder between ``root`` (excluded) and ``path`` (included), or
    None. ``known`` keeps answers between calls (one watcher round looks at many paths in the
    same folders)."""
    known = {} if known is None else known
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current not in known:
            known[current] = is_sequence_folder(current)
        if known[current]:
            return current
    return None


@dataclass
class FolderState:
    """What :func:`folder_state` found: ``size`` and ``mtime_ns`` of the version, and the
    symlinks inside (paths relative to the folder)."""

    size: int = 0
    mtime_ns: int = 0
    symlinks: list[str] = field(default_factory=list)


def folder_state(folder: Path) -> FolderState:
    """Size and latest modification time of ``folder``'s visible files (sub-folders
    included), its own and its sub-folders' times among them. Nothing is followed.

    Raises
    ------
    OSError
        ``folder`` cannot be read (gone, no access).
    """
    state = FolderState(mtime_ns=folder.stat().st_mtime_ns)
    _add(folder, folder, state)
    return state


def _add(top: Path, folder: Path, state: FolderState) -> None:
    with os.scandir(folder) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # deleted while listed: the folder's time says so
            continue
        state.mtime_ns = max(state.mtime_ns, st.st_mtime_ns)
        if stat.S_ISLNK(st.st_mode):
            state.symlinks.append(Path(entry.path).relative_to(top).as_posix())
        elif stat.S_ISDIR(st.st_mode):
            _add(top, Path(entry.path), state)
        else:
            state.size += st.st_size
