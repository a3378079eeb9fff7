"""Which acquisition is this? A cheap identity of an input file, for caches and records.

Acquisitions are 10-500 GB, so the identity is the file's size and a fingerprint of its first
and last MiB, not a hash of all of it. The store's completion markers, the output folder's
owner check and the run record all name the input by it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from pyama_lib.core.errors import (
    AcquisitionNotFoundError,
    CorruptFileError,
    UnsupportedFormatError,
)
from pyama_lib.io.plain import iso_time

FINGERPRINT_CHUNK = 1 << 20  # 1 MiB


def _fingerprint(path: Path, size: int) -> str:
    """sha256 over the size and the first and last 1 MiB (the whole file when it is small).

    Acquisitions are 10-500 GB; hashing all of it would take minutes to hours per run on a
    network share, just to say "same file". The head holds the format header and the tail the
    ND2 chunk map / OME-XML and acquisition metadata (dates, loop sizes), so a different or a
    still-growing acquisition changes the fingerprint, while a copy or a move does not. What
    it cannot see is an in-place rewrite of pixel data in the middle with identical size,
    header and trailer, which microscopes do not do.
    """
    digest = hashlib.sha256()
    digest.update(size.to_bytes(8, "little"))
    with path.open("rb") as fh:
        if size <= 2 * FINGERPRINT_CHUNK:
            digest.update(fh.read())
        else:
            digest.update(fh.read(FINGERPRINT_CHUNK))
            fh.seek(size - FINGERPRINT_CHUNK)
            digest.update(fh.read(FINGERPRINT_CHUNK))
    return "sha256:" + digest.hexdigest()


def input_identity(path: str | Path) -> dict[str, Any]:
    """Identify an input acquisition cheaply.

    Parameters
    ----------
    path
        The acquisition file (ND2, OME-TIFF, ...) or folder (a TIFF sequence).

    Returns
    -------
    dict
        ``path`` (absolute), ``size`` (bytes), ``mtime`` (ISO 8601 with offset) and
        ``fingerprint`` (``"sha256:<hex>"`` of the size plus first and last MiB; for a folder,
        of every file's relative path, size and modification time, see
        :func:`_folder_fingerprint`).

    Raises
    ------
    AcquisitionNotFoundError
        The file does not exist.
    UnsupportedFormatError
        The path is neither a file nor a folder.
    """
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise AcquisitionNotFoundError(
            p, "file not found; check the path (and that the share is mounted)"
        )
    if p.is_dir():
        size, mtime, fingerprint = _folder_fingerprint(p)
        return {"path": str(p), "size": size, "mtime": iso_time(mtime), "fingerprint": fingerprint}
    if not p.is_file():
        raise UnsupportedFormatError(p, "is not a file; give the acquisition file itself")
    st = p.stat()
    return {
        "path": str(p),
        "size": int(st.st_size),
        "mtime": iso_time(st.st_mtime),
        "fingerprint": _fingerprint(p, int(st.st_size)),
    }


def _folder_fingerprint(folder: Path) -> tuple[int, float, str]:
    """Total size, latest modification time and a fingerprint of a folder acquisition's files.

    A sequence's images are often the same size (uncompressed frames), so a frame re-exported
    with other pixels keeps every size: the modification times go into the fingerprint too.
    A copy that does not keep times (``cp`` without ``-p``) is therefore a new input and is
    processed again, which costs time but never serves stale results. Reading every file's
    bytes instead would cost one open per image, 100 000 on a share for a large sequence.
    The files are the folder's own visible ones, and when it has none (a Micro-Manager
    dataset) those of its visible sub-folders: not deeper, so an output folder kept inside the
    input does not make every run a new input.
    """
    found = _visible_files(folder)
    if not found:
        for sub in sorted(p for p in _entries(folder) if p.is_dir()):
            found += _visible_files(sub)
    digest = hashlib.sha256()
    for path, st in sorted(found, key=lambda f: f[0]):
        relative = path.relative_to(folder).as_posix()
        digest.update(f"{relative}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    size = sum(st.st_size for _, st in found)
    mtime = max((st.st_mtime for _, st in found), default=0.0)
    return size, mtime, "sha256:" + digest.hexdigest()


def _entries(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise CorruptFileError(folder, f"cannot be listed ({exc.strerror or exc})") from None


def _visible_files(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """The folder's visible files with their status; a file gone meanwhile is left out, a
    broken symlink counts as itself."""
    found = []
    for path in _entries(folder):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CorruptFileError(path, f"cannot be read ({exc.strerror or exc})") from None
        if not stat.S_ISDIR(st.st_mode):
            found.append((path, st))
    return found


def identity_key(identity: dict[str, Any]) -> str:
    """Short stable hash of an identity for cache keys (16 hex digits).

    Built from ``size`` and ``fingerprint`` only: a moved or copied acquisition (new path,
    new mtime) keeps its key, so finished work is not redone, while different content changes it.
    """
    material = json.dumps(
        {"size": int(identity["size"]), "fingerprint": str(identity["fingerprint"])},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]
