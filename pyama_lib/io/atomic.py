"""Atomic file replacement: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


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
