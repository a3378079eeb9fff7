"""OutputLock with real processes: a live holder refuses, a SIGKILLed holder is taken over."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import pyama_lib.io.lock as lock_module
from pyama_lib.core.errors import OutputDirError, PyamaError, RunLockedError
from pyama_lib.io.lock import LOCK_NAME, OutputLock, read_lock_info

REPO = Path(__file__).resolve().parents[1]

_HOLDER = """
import sys
from pyama_lib.io.lock import OutputLock
lock = OutputLock(sys.argv[1], command=["holder-run", "--test"])
lock.acquire()
print("ready", flush=True)
sys.stdin.read()  # hold until killed or stdin closes
lock.release()
"""


@contextlib.contextmanager
def _holding(out: Path, script: str = _HOLDER) -> Iterator[subprocess.Popen[str]]:
    """A separate Python process (running ``script``) holding the lock on ``out``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A separate Python process holding the lock on tmp_path/out."""
    out = tmp_path / "out"
    with _holding(out) as proc:
        yield proc, out


def _write_lock(out: Path, hostname: str, pid: int, heartbeat: datetime) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "pid": pid,
        "hostname": hostname,
        "started": heartbeat.isoformat(timespec="seconds"),
        "command": "pyama process x.nd2",
        "argv": ["pyama", "process", "x.nd2"],
        "heartbeat": heartbeat.isoformat(timespec="milliseconds"),
    }
    (out / LOCK_NAME).write_text(json.dumps(payload))


def test_live_subprocess_refuses_then_sigkill_is_taken_over(holder) -> None:
    proc, out = holder
    info = read_lock_info(out)
    assert info is not None
    assert info.pid == proc.pid
    assert info.hostname == socket.gethostname()
    assert info.command == "holder-run --test"

    lock = OutputLock(out)
    with pytest.raises(RunLockedError) as excinfo:
        lock.acquire()
    msg = str(excinfo.value)
    assert f"pid {proc.pid}" in msg
    assert str(out) in msg
    assert info.started in msg
    assert str(out / LOCK_NAME) in msg  # says which file to delete
    assert excinfo.value.pid == proc.pid
    assert not lock.held
    assert read_lock_info(out).pid == proc.pid  # the refused attempt did not disturb it

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert (out / LOCK_NAME).exists()  # SIGKILL left the file behind

    note = lock.acquire()
    try:
        assert note is not None
        assert f"pid {proc.pid}" in note
        assert lock.takeover_note == note
        assert read_lock_info(out).pid == os.getpid()
    finally:
        lock.release()
    assert not (out / LOCK_NAME).exists()


def test_holder_that_exits_normally_removes_its_lock(holder) -> None:
    proc, out = holder
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    assert not (out / LOCK_NAME).exists()
    with OutputLock(out) as lock:
        assert lock.takeover_note is None


def test_same_process_double_acquire_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = OutputLock(out)
    assert first.acquire() is None
    try:
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            OutputLock(out).acquire()
        with pytest.raises(RunLockedError):
            first.acquire()
        assert first.held
    finally:
        first.release()
    first.release()  # idempotent
    with OutputLock(out) as again:  # free again after release
        assert again.held
    assert not again.held


def test_missing_nested_dir_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with OutputLock(out):
        assert out.is_dir()
        info = read_lock_info(out)
        assert info is not None and info.pid == os.getpid()
        started = datetime.fromisoformat(info.started)
        assert abs(started.timestamp() - time.time()) < 60


def test_unwritable_dir_raises_output_dir_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores mode bits; a folder "inside" a regular file fails for everyone.
        (tmp_path / "afile").write_text("not a folder")
        out = tmp_path / "afile" / "out"
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    try:
        with pytest.raises(OutputDirError) as excinfo:
            OutputLock(out).acquire()
    finally:
        if out.is_dir():
            out.chmod(0o700)
    assert isinstance(excinfo.value, PyamaError)
    assert str(out) in str(excinfo.value)
    assert excinfo.value.folder == out


def test_out_dir_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("x")
    with pytest.raises(OutputDirError, match="not a folder"):
        OutputLock(out).acquire()


def test_other_host_fresh_heartbeat_refuses_stale_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    now = datetime.now().astimezone()
    _write_lock(out, "scope-pc-7", 4242, now - timedelta(seconds=10))
    with pytest.raises(RunLockedError) as excinfo:
        OutputLock(out, stale_after_s=600).acquire()
    assert "pid 4242 on host scope-pc-7" in str(excinfo.value)

    _write_lock(out, "scope-pc-7", 4242, now - timedelta(seconds=700))
    lock = OutputLock(out, stale_after_s=600)
    note = lock.acquire()
    try:
        assert note is not None and "pid 4242 on host scope-pc-7" in note
        assert "heartbeat" in note
    finally:
        lock.release()


def test_same_host_dead_owner_without_flock_is_stale(tmp_path: Path) -> None:
    # A lock file of this host that no process holds a flock on: its owner died.
    out = tmp_path / "out"
    _write_lock(out, socket.gethostname(), 999_999, datetime.now().astimezone())
    with OutputLock(out) as lock:
        assert lock.takeover_note is not None
        assert "pid 999999" in lock.takeover_note


def test_empty_lock_file_young_waits_old_is_stale(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_bytes(b"")
    old = time.time() - 60
    os.utime(out / LOCK_NAME, (old, old))
    with OutputLock(out) as lock:
        assert lock.takeover_note is not None and "unknown run" in lock.takeover_note


def test_heartbeat_is_refreshed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputLock(out, heartbeat_s=0.05):
        first = read_lock_info(out)
        time.sleep(0.4)
        second = read_lock_info(out)
        assert first is not None and second is not None
        assert datetime.fromisoformat(second.heartbeat) > datetime.fromisoformat(first.heartbeat)
        assert second.started == first.started
        assert second.heartbeat_age_s() < 5


def test_errors_survive_pickling(tmp_path: Path) -> None:
    # Tasks run in worker processes: their errors cross process boundaries pickled.
    err = RunLockedError(tmp_path, tmp_path / LOCK_NAME, 12, "h", "2025-01-01T00:00:00+00:00")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.pid == 12
    err2 = OutputDirError(tmp_path, "cannot create")
    assert str(pickle.loads(pickle.dumps(err2))) == str(err2)


_RACER = """
import sys
from pyama_lib.core.errors import RunLockedError
from pyama_lib.io.lock import OutputLock
lock = OutputLock(sys.argv[1])
try:
    lock.acquire()
except RunLockedError:
    print("locked", flush=True)
    sys.exit(0)
print("got", flush=True)
sys.stdin.read()
lock.release()
"""


def test_racing_processes_exactly_one_wins(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        answers = [p.stdout.readline().strip() for p in procs]
        assert sorted(answers) == ["got", "locked", "locked", "locked"]
        winner = procs[answers.index("got")]
        assert read_lock_info(out).pid == winner.pid
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=10)
    assert not (out / LOCK_NAME).exists()


# How Linux's NFS client implements flock(2): as a POSIX lock on the whole file, which refuses
# an exclusive lock on a descriptor not open for writing (EBADF).
def _nfs_flock(fd: int, operation: int) -> None:
    fcntl.lockf(fd, operation)


_NFS_HOLDER = (
    "import fcntl, types, pyama_lib.io.lock as m\n"
    "m.fcntl = types.SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, "
    "flock=fcntl.lockf)\n" + _HOLDER
)


def test_the_lock_works_where_flock_is_a_posix_lock_as_on_nfs(tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    nfs = types.SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, flock=_nfs_flock)
    with _holding(out, _NFS_HOLDER) as proc:
        monkeypatch.setattr(lock_module, "fcntl", nfs)
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            OutputLock(out).acquire()
        proc.kill()
        proc.wait(timeout=10)
        with OutputLock(out) as lock:  # the killed run's lock is taken over
            assert lock.takeover_note is not None and f"pid {proc.pid}" in lock.takeover_note
