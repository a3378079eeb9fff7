"""The watcher's ledger: which acquisition versions ``pyama watch`` has announced.

A small JSON file, so a restarted watcher does not announce the same file again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pyama_lib.core.errors import InboxPathError
from pyama_lib.io.atomic import atomic_write_text
from pyama_lib.io.plain import iso_time
from pyama_lib.service.inbox import FileVersion


class AnnouncedLedger:
    """The versions a watcher has announced, in a JSON file (``{path: {size, mtime_ns,
    announced}}``); a path announced again only when its size or time changed.

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
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
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
            self._entries = dict(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, version: FileVersion) -> bool:
        entry = self._entries.get(version.path)
        return entry is not None and (entry["size"], entry["mtime_ns"]) == (
            version.size,
            version.mtime_ns,
        )

    def add(self, version: FileVersion) -> None:
        self._entries[version.path] = {
            "size": version.size,
            "mtime_ns": version.mtime_ns,
            "announced": iso_time(),
        }
        text = json.dumps({"announced": self._entries}, indent=1, sort_keys=True)
        atomic_write_text(self.path, text)

    def unannounced(self, paths: Iterable[Path]) -> Iterator[Path]:
        """The ``paths`` whose current version was not announced."""
        for path in paths:
            try:
                if not self.has(FileVersion.of(path)):
                    yield path
            except (OSError, RuntimeError):  # gone since it was listed, or a symlink loop
                continue
