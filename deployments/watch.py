"""``pyama watch``: announce each acquisition in a folder once it is complete.

The folder is watched with watchdog: inotify events on a local disk, or polling (a listing
every few seconds) where no events arrive, as on SMB/NFS shares; the share's file system type
is read from /proc/mounts, so polling is chosen by itself there (``--poll`` forces it). A
candidate is announced (:func:`deployments.events.announce`) when its version (size and
modification time) has not changed for the quiet period AND it opens cleanly
(:func:`pyama_lib.service.inbox.not_ready`). A change to a file inside a sequence folder (a
folder of TIFF images, a Micro-Manager dataset) makes the folder the candidate. The ledger
(:class:`pyama_lib.service.ledger.AnnouncedLedger`) remembers every announced version, so a
restarted watcher announces only what is new, including files that finished while it was down.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from pyama_lib.core.errors import InboxPathError
from pyama_lib.service.inbox import (
    FileVersion,
    acquisition_holding,
    find_acquisitions,
    not_ready,
    resolve_in_inbox,
)
from pyama_lib.service.ledger import AnnouncedLedger

#: File systems that deliver no inotify events for changes made by other machines.
NETWORK_FILESYSTEMS = frozenset(
    {
        *("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "davfs"),
        *("ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "beegfs"),
        "fuse.rclone",
    }
)


def _mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, from /proc/mounts; [] where that
    cannot be read (not Linux)."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    return [(f[1].replace("\\040", " "), f[2]) for f in map(str.split, lines) if len(f) >= 3]


def filesystem_type(path: str | Path) -> str | None:
    """The type (``ext4``, ``nfs4``, ``cifs``...) of the file system holding ``path``; None
    where /proc/mounts cannot be read."""
    target = Path(path).resolve()
    holding = [(m, kind) for m, kind in _mounts() if target.is_relative_to(m)]
    return max(holding, key=lambda mk: len(mk[0]))[1] if holding else None


def network_filesystems(path: str | Path) -> set[str]:
    """The network file system types at ``path`` and mounted anywhere below it (a share
    mounted inside a local folder delivers no change events either)."""
    target = Path(path).resolve()
    below = {kind for m, kind in _mounts() if Path(m).is_relative_to(target)}
    return ({filesystem_type(target)} | below) & NETWORK_FILESYSTEMS


def default_ledger(folders: Sequence[str | Path]) -> Path:
    """``$XDG_STATE_HOME/pyama-flow/watch-<hash of the folders>.json`` (default state home
    ``~/.local/state``): outside the inbox, which may be a read-only share."""
    key = "\n".join(sorted(str(Path(f).resolve()) for f in folders))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return home / "pyama-flow" / f"watch-{digest}.json"


class _Candidates(FileSystemEventHandler):
    """Collects the paths that watchdog reports as created, changed or moved; which
    acquisition each belongs to is decided later, once per round (:meth:`Watcher.check`)."""

    def __init__(self) -> None:
        self.paths: set[Path] = set()
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = os.fsdecode(raw)
            # Hidden names are copy tools' temporary files: the rename into place reports the
            # visible name.
            if path and not Path(path).name.startswith("."):
                with self.lock:
                    self.paths.add(Path(path))

    def take(self) -> set[Path]:
        with self.lock:
            taken, self.paths = self.paths, set()
        return taken


@dataclass
class _Seen:
    signature: tuple[int, int]  # size, mtime_ns
    since: float  # monotonic time the signature was first seen
    said: str = ""  # the last "not ready" reason logged
    failures: int = 0  # announcements that failed in a row (the server is down)
    retry_at: float = 0.0  # monotonic time before which no announcement is tried again
    look_at: float = 0.0  # monotonic time before which its version is not taken again


class Watcher:
    """Watch ``folders`` (recursively) and call ``announce(version)`` once per complete
    acquisition version; :meth:`check` does one round (the loop in :meth:`run`)."""

    def __init__(
        self,
        folders: Sequence[str | Path],
        ledger: AnnouncedLedger,
        announce: Callable[[FileVersion], None],
        quiet_seconds: float = 30.0,
        poll: bool | None = None,
        poll_seconds: float = 5.0,
        log: Callable[[str], None] = print,
        retry_seconds: float = 2.0,
    ) -> None:
        self.folders = [Path(f).resolve() for f in folders]
        self.ledger = ledger
        self.announce = announce
        self.quiet_seconds = quiet_seconds
        self.poll_seconds = poll_seconds
        self.log = log
        self.poll = poll
        self.retry_seconds = retry_seconds  # first wait after a failed announcement
        self._handler = _Candidates()
        self._seen: dict[Path, _Seen] = {}
        self._observer: BaseObserver | None = None

    def _how(self, folder: Path) -> tuple[bool, str]:
        """Whether ``folder`` needs polling, and the sentence that says how it is watched."""
        kinds = network_filesystems(folder)
        if self.poll or (self.poll is None and kinds):
            why = "--poll" if self.poll else f"no change events on {', '.join(sorted(kinds))}"
            return True, f"polling every {self.poll_seconds:g} s ({why})"
        return False, "change events (inotify)"

    def _observe(self, polling: bool) -> None:
        self._observer = PollingObserver(timeout=self.poll_seconds) if polling else Observer()
        for folder in self.folders:
            self._observer.schedule(self._handler, str(folder), recursive=True)
        self._observer.start()

    def start(self) -> None:
        """Start watching, and take every unannounced acquisition already there as a candidate."""
        hows = [self._how(f) for f in self.folders]
        for folder, (_, how) in zip(self.folders, hows, strict=True):
            self.log(f"watching {folder}: {how}")
        try:  # one observer for all folders: polling if any folder needs it
            self._observe(any(polling for polling, _ in hows))
        except OSError as exc:  # e.g. the inotify watch limit: polling still works
            self.log(f"change events unavailable ({exc}); polling every {self.poll_seconds:g} s")
            self._observe(True)
        existing = [p for f in self.folders for p in find_acquisitions(f)]
        for path in self.ledger.unannounced(existing):
            self._seen.setdefault(path, _Seen((-1, -1), time.monotonic()))
        self.log(f"{len(existing)} acquisition(s) present, {len(self._seen)} not yet announced")

    def _hidden(self, path: Path) -> bool:
        """Whether ``path`` lies in a hidden folder (a trash, a sync tool's versions) under the
        watched folder that holds it: :func:`find_acquisitions` skips those too."""
        for folder in self.folders:
            if path.is_relative_to(folder):
                return any(part.startswith(".") for part in path.relative_to(folder).parts)
        return False

    def _acquisition(self, path: Path, known: dict[Path, bool]) -> Path | None:
        """The acquisition ``path`` is or belongs to (the sequence folder holding it), None
        for anything else; ``known``: what this round found out about folders."""
        roots = [f for f in self.folders if path.is_relative_to(f)]
        if not roots or self._hidden(path):
            return None
        return acquisition_holding(path, max(roots, key=lambda r: len(r.parts)), known)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)

    def check(self) -> list[FileVersion]:
        """One round: update the candidates, announce those that are complete; returns them."""
        now = time.monotonic()
        known: dict[Path, bool] = {}  # folders this round: sequence folder or not
        for path in self._handler.take():
            if (acquisition := self._acquisition(path, known)) is not None:
                self._seen.setdefault(acquisition, _Seen((-1, -1), now))
        announced = []
        for path, seen in list(self._seen.items()):
            if now < seen.look_at:
                continue
            # A folder's images may have made a folder above it a sequence (a Micro-Manager
            # position folder's metadata.txt arrived): the candidate is then that folder.
            holding = self._acquisition(path, known) if path.exists() else None
            if holding != path:  # deleted, renamed away (a new name is a candidate itself)
                del self._seen[path]
                if holding is not None:
                    self._seen.setdefault(holding, _Seen((-1, -1), now))
                continue
            started = time.monotonic()
            try:
                resolve_in_inbox(path, self.folders)  # a symlink out of the folder is refused
                version = FileVersion.of(path)
            except InboxPathError as exc:
                self.log(f"not announced: {exc}")
                del self._seen[path]
                continue
            except OSError:  # gone in between
                del self._seen[path]
                continue
            # A folder of 100 000 images costs a stat per image: look again only after nine
            # times as long, so the watcher spends at most a tenth of its time on versions.
            seen.look_at = now + 9 * (time.monotonic() - started)
            signature = (version.size, version.mtime_ns)
            if signature != seen.signature:  # a new version: a fresh start
                self._seen[path] = _Seen(signature, now, look_at=seen.look_at)
                continue
            if self.ledger.has(version):  # e.g. touched back to an announced state
                del self._seen[path]
                continue
            try:
                reason = not_ready(path, self.quiet_seconds, unchanged_for=now - seen.since)
            except InboxPathError as exc:  # another file than checked, symlinks in a folder
                self.log(f"not announced: {exc}")
                del self._seen[path]
                continue
            if reason is not None:
                if not seen.said and not reason.startswith("still being written"):
                    self.log(f"waiting for {path}: {reason}")  # once per version of the file
                    seen.said = reason
                if now - seen.since >= self.quiet_seconds:
                    seen.since = now  # quiet but not openable: look again after another period
                continue
            if now < seen.retry_at:
                continue
            try:
                self.announce(version)
            except Exception as exc:  # the server is down: keep it, try again later
                # 2, 4, 8 ... 60 s apart: a server down overnight costs each waiting file a
                # try a minute
                seen.retry_at = time.monotonic() + min(60.0, self.retry_seconds * 2**seen.failures)
                seen.failures += 1
                if not seen.said.startswith("could not announce"):  # once, not every second
                    seen.said = f"could not announce {path} ({type(exc).__name__}: {exc})"
                    self.log(f"{seen.said}; will retry")
                continue
            self.ledger.add(version)
            del self._seen[path]
            announced.append(version)
            self.log(f"announced {version.describe()}")
        return announced

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """:meth:`start`, then :meth:`check` every ``interval`` s until ``stop`` is set."""
        self.start()
        try:
            while not stop.is_set():
                self.check()
                stop.wait(interval)
        finally:
            self.stop()
