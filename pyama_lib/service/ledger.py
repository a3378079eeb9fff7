"""The watcher's ledger: which acquisition versions ``pyama watch`` has announced.

A small JSON file, so a restarted watcher does not announce the same file again.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pyama_lib.core.errors import InboxPathError
from pyama_lib.io.atomic import atomic_write_text
from pyama_lib.io.plain import iso_time
from pyama_lib.service.inbox import FileVersion


class AnnouncedLedger:
    """The versions a watcher has announced, in a JSON file (``{path: {size, mtime_ns,
    announced}}``); a path announced again only when its size or time changed. Watchers that
    share the file merge their entries into it (:meth:`add`).

    Examples
    --------
    >>> import tempfile
    >>> ledger = AnnouncedLedger(Path(tempfile.mkdtemp()) / "watch.json")
    >>> version = FileVersion("/inbox/exp1.nd2", 10, 1)
    >>> ledger.add(version); ledger.has(version), len(AnnouncedLedger(ledger.path))
    (True, 1)
    >>> ledger.has(FileVersion("/inbox/exp1.nd2", 20, 2))  # replaced by a new file
    False
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._entries = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InboxPathError(
                self.path,
                f"the watcher's ledger cannot be read ({exc}); move it away to "
                "start afresh (every acquisition in the inbox is then announced again)",
            ) from None
        entries = data.get("announced", {}) if isinstance(data, dict) else None
        if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and {"size", "mtime_ns"} <= e.keys() for e in entries.values()
        ):
            raise InboxPathError(
                self.path,
                "is not a watcher's ledger; move it away to start afresh (every "
                "acquisition in the inbox is then announced again)",
            )
        return dict(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, version: FileVersion) -> bool:
        entry = self._entries.get(version.path)
        return entry is not None and (entry["size"], entry["mtime_ns"]) == (
            version.size,
            version.mtime_ns,
        )

    def add(self, version: FileVersion) -> None:
        """Record ``version`` as announced. Several watchers may share the file: under a lock,
        the file is read again and this entry merged into it, and entries of files that are
        gone are dropped, so the ledger holds what the inboxes hold."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            entries = {p: e for p, e in self._read().items() if os.path.lexists(p)}
            entries[version.path] = {
                "size": version.size,
                "mtime_ns": version.mtime_ns,
                "announced": iso_time(),
            }
            text = json.dumps({"announced": entries}, indent=1, sort_keys=True)
            atomic_write_text(self.path, text)
        self._entries = entries

    def unannounced(self, paths: Iterable[Path]) -> Iterator[Path]:
        """The ``paths`` whose current version was not announced."""
        for path in paths:
            try:
                if not self.has(FileVersion.of(path)):
                    yield path
            except (OSError, RuntimeError):  # gone since it was listed, or a symlink loop
                continue
