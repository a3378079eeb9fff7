"""Output-folder run lock: one PyAMA Flow run per output folder at a time.

Two runs writing the same Zarr arrays and CSVs would interleave frames and leave results that
look complete but are not. ``OutputLock`` makes a second run on the same folder fail at once
with :class:`~pyama_lib.core.errors.RunLockedError`, while a lock left behind by a killed run
(SIGKILL, power loss) never blocks the folder for good.

How liveness is decided
-----------------------
The lock file ``<out>/.pyama.lock`` is created atomically (``O_CREAT | O_EXCL``) and holds JSON
``{pid, hostname, started, command, argv, heartbeat}``. The creating process also keeps an
exclusive ``flock`` on the open file for the whole run. The kernel drops that flock when the
process dies, however it dies, so on the same host "file exists but nobody holds the flock"
means exactly "the owner is dead": the lock is stale and is taken over. Some network file
systems only enforce flock between processes of one client machine, so for a lock written on
*another* host the owner's ``heartbeat`` (rewritten every ``heartbeat_s`` by a background
thread) decides instead: older than ``stale_after_s`` means stale.

The lock fd is opened without inheritance (Python's default), so subprocesses do not keep the
lock alive; a ``fork`` without exec does inherit it, which is why tasks run in spawned workers.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from pyama_lib.core.errors import OutputDirError, RunLockedError

__all__ = ["LOCK_NAME", "LockInfo", "OutputLock", "read_lock_info"]

LOCK_NAME = ".pyama.lock"
_log = logging.getLogger(__name__)

# A lock file younger than this with no readable content is probably being written right now
# (between O_EXCL create and the JSON write): wait for it rather than calling it stale.
_CREATE_GRACE_S = 5.0
_RETRY_SLEEP_S = 0.05
_MAX_ATTEMPTS = 200


@dataclass(frozen=True)
class LockInfo:
    """What a lock file says about the run that holds it."""

    pid: int | None
    hostname: str | None
    started: str | None
    command: str | None
    heartbeat: str | None

    def heartbeat_age_s(self, now: float | None = None) -> float | None:
        """Seconds since the owner's last heartbeat, or None when it cannot be parsed."""
        if not self.heartbeat:
            return None
        try:
            beat = datetime.fromisoformat(self.heartbeat).timestamp()
        except ValueError:
            return None
        return (time.time() if now is None else now) - beat


def _now_iso(timespec: str = "seconds") -> str:
    """Local time with UTC offset: readable in a message, unambiguous across hosts."""
    return datetime.now().astimezone().isoformat(timespec=timespec)


def _parse_info(raw: bytes) -> LockInfo | None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or "pid" not in data:
        return None
    pid = data.get("pid")
    return LockInfo(
        pid=pid if isinstance(pid, int) else None,
        hostname=data.get("hostname"),
        started=data.get("started"),
        command=data.get("command"),
        heartbeat=data.get("heartbeat"),
    )


def read_lock_info(out_dir: str | Path) -> LockInfo | None:
    """Read ``<out_dir>/.pyama.lock``; None when absent or unreadable (e.g. mid-write)."""
    try:
        raw = (Path(out_dir) / LOCK_NAME).read_bytes()
    except OSError:
        return None
    return _parse_info(raw)


def _try_flock(fd: int) -> bool | None:
    """Non-blocking exclusive flock: True taken, False held elsewhere, None unsupported here."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        # EBADF: NFS emulates flock with POSIX locks, which refuse a descriptor not open for
        # writing (flock(2), NOTES); the lock file is opened read-write, so this is a share
        # mounted read-only or a file of another user: no lock to be had here.
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
            return None
        raise
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class OutputLock:
    """Exclusive run lock on an output folder, usable as a context manager.

    Parameters
    ----------
    out_dir
        Output folder; created (with parents) when missing.
    stale_after_s
        A lock written on another host whose heartbeat is older than this is stale.
    heartbeat_s
        How often the holder rewrites its heartbeat.
    command
        Recorded in the lock file for the message another run shows; default ``sys.argv``.

    Attributes
    ----------
    takeover_note
        After :meth:`acquire`, a sentence describing a stale lock that was removed, else None.
    """

    def __init__(
        self,
        out_dir: str | Path,
        stale_after_s: float = 600.0,
        heartbeat_s: float = 30.0,
        command: list[str] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.lock_path = self.out_dir / LOCK_NAME
        self.stale_after_s = float(stale_after_s)
        self.heartbeat_s = float(heartbeat_s)
        self.argv = list(sys.argv if command is None else command)
        self.takeover_note: str | None = None
        self._fd: int | None = None
        self._payload: dict[str, object] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def acquire(self) -> str | None:
        """Take the lock or raise.

        Returns
        -------
        str or None
            A note when a stale lock (dead owner) was removed, else None.

        Raises
        ------
        RunLockedError
            A live run holds the folder (including this very process).
        OutputDirError
            The folder cannot be created or written to.
        """
        if self._fd is not None:
            raise self._locked_error(self._info_from_payload())
        self._ensure_dir()
        self.takeover_note = None
        for _ in range(_MAX_ATTEMPTS):
            if self._try_create():
                self._start_heartbeat()
                if self.takeover_note:
                    _log.warning(self.takeover_note)
                return self.takeover_note
            self._inspect_existing()  # raises when live; removes when stale; else retry
        raise self._locked_error(read_lock_info(self.out_dir))

    def release(self) -> None:
        """Stop the heartbeat, delete the lock file (if still ours) and drop the flock."""
        if self._fd is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        fd, self._fd = self._fd, None
        try:
            # Someone may have deleted our file by hand and started another run: leave theirs.
            if os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.lock_path)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last fd releases the flock

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- internals ----------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise OutputDirError(
                self.out_dir, "exists but is not a folder; choose another output folder"
            )
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputDirError(
                self.out_dir,
                f"cannot create the output folder ({exc.strerror or exc}); "
                "check the path and your permissions or choose another output folder",
            ) from exc

    def _try_create(self) -> bool:
        """Create the lock file atomically; False when it already exists."""
        try:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise OutputDirError(
                self.out_dir,
                f"output folder is not writable ({exc.strerror or exc}); "
                "check permissions or choose another output folder",
            ) from exc
        # flock before writing the JSON: a reader that sees content knows the flock was held.
        flocked = _try_flock(fd)
        if flocked is False:
            # Another process is inspecting our brand-new, still empty file; it lets go at once
            # (empty and young means "being written"), so wait for it instead of running unlocked.
            fcntl.flock(fd, fcntl.LOCK_EX)
        elif flocked is None:
            _log.warning("%s: file locks unsupported here; relying on heartbeat", self.lock_path)
        self._fd = fd
        now = _now_iso("milliseconds")
        self._payload = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "started": _now_iso(),
            "command": " ".join(self.argv),
            "argv": self.argv,
            "heartbeat": now,
        }
        self._write_payload()
        return True

    def _write_payload(self) -> None:
        """Rewrite the lock file in place (same inode, so our flock stays on the visible file)."""
        if self._fd is None:
            return
        data = json.dumps(self._payload, indent=1).encode("utf-8")
        with self._write_lock:
            # Heartbeats keep a fixed-width timestamp, so the content never shrinks and a
            # reader never sees a truncated document between pwrite and ftruncate.
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._heartbeat_loop, name=f"pyama-lock-heartbeat:{self.out_dir}", daemon=True
        )
        self._thread.start()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._payload["heartbeat"] = _now_iso("milliseconds")
            try:
                self._write_payload()
            except OSError as exc:  # e.g. network share gone; the run itself will notice
                _log.warning("%s: could not refresh lock heartbeat: %s", self.lock_path, exc)

    def _info_from_payload(self) -> LockInfo:
        return _parse_info(json.dumps(self._payload).encode()) or LockInfo(
            os.getpid(), socket.gethostname(), None, None, None
        )

    def _locked_error(self, info: LockInfo | None) -> RunLockedError:
        if info is None:
            return RunLockedError(self.out_dir, self.lock_path, None, None, None)
        return RunLockedError(self.out_dir, self.lock_path, info.pid, info.hostname, info.started)

    def _inspect_existing(self) -> None:
        """Decide about an existing lock file: raise if live, remove if stale, return to retry."""
        try:
            # Read-write: an exclusive lock on NFS needs a descriptor open for writing.
            fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return  # released meanwhile: retry the create
        except OSError as exc:
            raise OutputDirError(
                self.out_dir, f"cannot read the run lock {self.lock_path} ({exc.strerror or exc})"
            ) from exc
        mid_creation = False
        try:
            flocked = _try_flock(fd)
            if flocked is False:
                raise self._locked_error(read_lock_info(self.out_dir))
            st = os.fstat(fd)
            try:
                if os.stat(self.lock_path).st_ino != st.st_ino:
                    return  # replaced between our open and flock: look again
            except FileNotFoundError:
                return
            info = _parse_info(os.pread(fd, 1 << 16, 0))
            reason = self._stale_reason(info, flocked, time.time() - st.st_mtime)
            if reason is None:
                if info is None:  # being written right now
                    mid_creation = True
                    return
                raise self._locked_error(info)
            # We hold the flock on this inode (or flocks are unsupported), so no other
            # process can be taking it over concurrently; a creator cannot create while it exists.
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise OutputDirError(
                    self.out_dir,
                    f"cannot remove stale run lock {self.lock_path} ({exc.strerror or exc})",
                ) from exc
            who = f"pid {info.pid} on host {info.hostname}" if info else "an unknown run"
            self.takeover_note = (
                f"{self.out_dir}: removed a stale run lock from {who} ({reason}); "
                "its outputs may be half-written and will be redone where unfinished"
            )
        finally:
            os.close(fd)  # drops our flock before any wait, so a creator is never held up
            if mid_creation:
                time.sleep(_RETRY_SLEEP_S)

    def _stale_reason(self, info: LockInfo | None, flocked: bool | None, age: float) -> str | None:
        """Why the lock is stale, or None when it must be treated as live (or mid-creation)."""
        if info is None:
            if age < _CREATE_GRACE_S:
                return None
            return "lock file empty or unreadable"
        same_host = info.hostname == socket.gethostname()
        if same_host and flocked:
            return "its process no longer holds the lock"
        if same_host and info.pid is not None and not _pid_alive(info.pid):
            return "its process is gone"
        if not same_host:
            beat = info.heartbeat_age_s()
            if beat is None and age > self.stale_after_s:
                return f"no heartbeat and lock file older than {self.stale_after_s:.0f} s"
            if beat is not None and beat > self.stale_after_s:
                return f"last heartbeat {beat:.0f} s ago"
        return None
