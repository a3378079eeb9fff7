"""Atomic file replacement: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


@contextlib.contextmanager
def atomic_target(final: Path) -> Iterator[Path]:
    """Yield a hidden temp path beside ``final``; on success fsync it and move it into place.

    The temp name starts with "." and ends in ".tmp", so neither pyarrow's dataset discovery nor
    PyAMA's ``*traces*.csv`` glob ever picks up a leftover from a killed run. On an exception
    the temp file is removed and ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_leftover_temps(folder: str | Path, older_than: float) -> list[Path]:
    """Remove the temp files of :func:`atomic_target` under ``folder`` that were last written
    before ``older_than`` (a :func:`time.time`); return what was removed.

    Call it holding the folder's run lock: a temp file older than this run can only be a
    leftover of a run that was killed while writing it. Zarr stores are not walked (they hold
    no such files, and a large one holds many thousand chunk files).

    Examples
    --------
    >>> import tempfile, time
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / f".a.csv.{uuid.uuid4().hex}.tmp").write_text("half")
    4
    >>> [p.name.endswith(".tmp") for p in remove_leftover_temps(folder, time.time() + 1)]
    [True]
    """
    removed = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.endswith(".zarr")]
        for name in files:
            path = Path(root) / name
            if not _TEMP_NAME.match(name):
                continue
            try:
                if path.stat().st_mtime < older_than:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
    return removed
