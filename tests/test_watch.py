"""``pyama watch``'s Watcher on a real folder (inotify and polling), with announcements
collected in a list instead of sent to a Prefect server."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deployments.watch import NETWORK_FILESYSTEMS, Watcher, default_ledger, filesystem_type
from pyama_lib.service.inbox import FileVersion
from pyama_lib.service.ledger import AnnouncedLedger

QUIET = 0.5  # s: the watchers' quiet period
POLL = 0.2  # s: the polling observer's interval
AFTER = QUIET + 0.1  # s: watched after an announcement, long enough for another one
SETTLE = 0.3  # s: a few more rounds, when all candidates became ready together
TIMELAPSE = "arcadia-example-timelapse.nd2"
OTHER = "dims_z5t3c2y32x32.nd2"  # another size


class Rig:
    """A watched folder, a ledger outside it, and what the watchers announced and logged."""

    def __init__(self, tmp_path: Path, nd2_dir: Path) -> None:
        self.folder = tmp_path / "inbox"
        self.folder.mkdir()
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.ledger_path = tmp_path / "state" / "watch.json"
        self.nd2_dir = nd2_dir
        self.announced: list[FileVersion] = []
        self.logs: list[str] = []
        self.watchers: list[Watcher] = []

    def watcher(self, announce: Callable[[FileVersion], None] | None = None, **options) -> Watcher:
        options = {"quiet_seconds": QUIET, "poll": False, "poll_seconds": POLL, **options}
        watcher = Watcher(
            [self.folder],
            AnnouncedLedger(self.ledger_path),
            announce or self.announced.append,
            log=self.logs.append,
            **options,
        )
        self.watchers.append(watcher)
        return watcher

    def stop(self, watcher: Watcher) -> None:
        self.watchers.remove(watcher)
        watcher.stop()

    def data(self, name: str = TIMELAPSE) -> bytes:
        return (self.nd2_dir / name).read_bytes()

    def drop(self, dest: Path, data: bytes) -> Path:
        """Copy-tool style: write a hidden temporary name, then rename it into place."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest

    def lines(self, *words: str) -> list[str]:
        return [line for line in self.logs if all(w in line for w in words)]


@pytest.fixture
def rig(tmp_path: Path, nd2_dir: Path):
    rig = Rig(tmp_path, nd2_dir)
    try:
        yield rig
    finally:
        for watcher in rig.watchers:
            watcher.stop()


def rounds(
    watcher: Watcher, seconds: float, until: Callable[[], bool] = lambda: False, pause=0.05
) -> bool:
    """Call ``watcher.check()`` every ``pause`` s for ``seconds`` or until ``until()``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        watcher.check()
        if until():
            return True
        time.sleep(pause)
    return until()


# -- (a) a file written in pieces ------------------------------------------------------------


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
def test_a_growing_file_is_announced_once_after_it_stopped(rig: Rig, poll: bool) -> None:
    (rig.folder / "2026-12-01").mkdir()
    watcher = rig.watcher(poll=poll)
    watcher.start()
    how = "polling every 0.2 s (--poll)" if poll else "change events (inotify)"
    assert rig.logs[0] == f"watching {rig.folder.resolve()}: {how}"
    assert rig.logs[1] == "0 acquisition(s) present, 0 not yet announced"

    target = rig.folder / "2026-12-01" / "exp1.nd2"
    data = rig.data()
    n = 8
    pieces = [data[i * len(data) // n : (i + 1) * len(data) // n] for i in range(n)]
    with open(target, "wb") as fh:  # about 1.3 s of writing, in pauses shorter than QUIET
        for piece in pieces:
            fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
            last_write = time.monotonic()
            rounds(watcher, 0.16)
            assert rig.announced == [], "announced while it was still growing"

    assert rounds(watcher, 10, lambda: bool(rig.announced)), rig.logs
    waited = time.monotonic() - last_write
    assert waited >= QUIET, f"announced {waited:.2f} s after the last write"
    rounds(watcher, AFTER)  # and not again
    assert rig.announced == [FileVersion.of(target)]
    assert rig.announced[0].size == len(data)
    assert AnnouncedLedger(rig.ledger_path).has(rig.announced[0])
    assert len(rig.lines("announced", str(target.resolve()))) == 1


def test_a_complete_file_still_being_touched_is_not_announced(rig: Rig) -> None:
    watcher = rig.watcher()
    watcher.start()
    target = rig.drop(rig.folder / "exp1.nd2", rig.data())  # opens already
    for step in range(1, 5):  # its time keeps changing for 0.6 s
        os.utime(target, ns=(time.time_ns(), time.time_ns() + step * 1_000_000))
        rounds(watcher, 0.15)
        assert rig.announced == []
    assert rounds(watcher, 10, lambda: bool(rig.announced)), rig.logs
    assert rig.announced == [FileVersion.of(target)]


# -- (b) an acquisition that never completes -------------------------------------------------


def test_a_truncated_acquisition_is_never_announced_and_logged_once(rig: Rig) -> None:
    data = rig.data()
    target = rig.drop(rig.folder / "exp1.nd2", data[: int(len(data) * 0.6)])
    watcher = rig.watcher()
    watcher.start()
    rounds(watcher, 3.5 * QUIET)  # quiet for three periods and more, and never opens
    assert rig.announced == []
    assert not AnnouncedLedger(rig.ledger_path).has(FileVersion.of(target))
    assert rig.lines("still being written (unchanged") == []  # the normal case: not logged

    target.write_bytes(data)  # the copy finally completes
    assert rounds(watcher, 10, lambda: bool(rig.announced)), rig.logs
    assert rig.announced == [FileVersion.of(target)]

    waiting = rig.lines("waiting for", str(target), "does not open yet")
    assert len(waiting) == 1, "\n".join(waiting)


# -- (c) a restarted watcher -----------------------------------------------------------------


def test_a_restarted_watcher_announces_only_what_is_new(rig: Rig) -> None:
    first = rig.watcher()
    first.start()
    kept = rig.drop(rig.folder / "kept.nd2", rig.data())
    replaced = rig.drop(rig.folder / "replaced.nd2", rig.data())
    touched = rig.drop(rig.folder / "touched.nd2", rig.data())
    assert rounds(first, 10, lambda: len(rig.announced) == 3), rig.logs
    rig.stop(first)
    before = {Path(v.path).name: v for v in rig.announced}
    rig.announced.clear()

    # While it is down: one file added, one replaced by another size, one given a new time.
    added = rig.drop(rig.folder / "day2" / "added.nd2", rig.data())
    rig.drop(replaced, rig.data(OTHER))
    mtime_ns = touched.stat().st_mtime_ns + 5_000_000_000
    os.utime(touched, ns=(mtime_ns, mtime_ns))

    second = rig.watcher()  # a new ledger object on the same file
    second.start()
    assert "4 acquisition(s) present, 3 not yet announced" in rig.logs
    assert rounds(second, 10, lambda: len(rig.announced) == 3), rig.logs
    rounds(second, SETTLE)
    assert sorted(rig.announced, key=lambda v: v.path) == sorted(
        [FileVersion.of(added), FileVersion.of(replaced), FileVersion.of(touched)],
        key=lambda v: v.path,
    )
    assert FileVersion.of(kept) == before["kept.nd2"]
    assert FileVersion.of(replaced) != before["replaced.nd2"]
    assert FileVersion.of(touched) != before["touched.nd2"]
    assert len(AnnouncedLedger(rig.ledger_path)) == 4


# -- (d) symlinks ----------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before start", "while watching"])
def test_a_symlink_out_of_the_folder_is_not_announced(rig: Rig, when: str) -> None:
    target = rig.drop(rig.outside / "x.nd2", rig.data())
    link = rig.folder / "link.nd2"
    watcher = rig.watcher()
    if when == "before start":
        link.symlink_to(target)
        watcher.start()
    else:
        watcher.start()
        link.symlink_to(target)
    assert rounds(watcher, 10, lambda: bool(rig.lines("not announced", str(link)))), rig.logs
    rounds(watcher, AFTER)
    assert rig.announced == []
    assert rig.lines("not announced", str(link), f"resolves to {target.resolve()}")
    assert len(AnnouncedLedger(rig.ledger_path)) == 0


def test_a_symlink_inside_the_folder_is_announced_once_by_its_real_path(rig: Rig) -> None:
    real = rig.drop(rig.folder / "raw" / "exp1.nd2", rig.data())
    watcher = rig.watcher()
    watcher.start()
    (rig.folder / "today.nd2").symlink_to(real)
    assert rounds(watcher, 10, lambda: bool(rig.announced)), rig.logs
    rounds(watcher, SETTLE)
    assert rig.announced == [FileVersion.of(real)]
    assert rig.announced[0].path == str(real.resolve())


def test_a_symlink_loop_does_not_stop_the_watcher(rig: Rig) -> None:
    loop = rig.folder / "loop.nd2"
    loop.symlink_to(loop)
    watcher = rig.watcher()
    watcher.start()
    good = rig.drop(rig.folder / "good.nd2", rig.data())
    assert rounds(watcher, 10, lambda: bool(rig.announced)), rig.logs
    assert rig.announced == [FileVersion.of(good)]


def test_acquisitions_in_hidden_folders_are_not_announced(rig: Rig) -> None:
    # As find_acquisitions skips them at start: a desktop's trash, a sync tool's versions.
    (rig.folder / ".Trash-1000" / "files").mkdir(parents=True)  # before: no watchdog race
    (rig.folder / ".stversions").mkdir()
    watcher = rig.watcher()
    watcher.start()
    rig.drop(rig.folder / ".Trash-1000" / "files" / "old.nd2", rig.data())
    rig.drop(rig.folder / ".stversions" / "exp1.nd2", rig.data())
    good = rig.drop(rig.folder / "exp1.nd2", rig.data())
    assert rounds(watcher, 10, lambda: bool(rig.announced)), rig.logs
    rounds(watcher, SETTLE)
    assert rig.announced == [FileVersion.of(good)]


# -- (e) announcing fails --------------------------------------------------------------------


def test_a_failed_announcement_is_retried_and_recorded_only_once_delivered(rig: Rig) -> None:
    attempts: list[FileVersion] = []
    server_down = True

    def announce(version: FileVersion) -> None:
        attempts.append(version)
        if server_down:
            raise ConnectionError("the Prefect server is down")
        rig.announced.append(version)

    watcher = rig.watcher(announce=announce, retry_seconds=0.1)  # 0.1, 0.2, 0.4 ... s apart
    watcher.start()
    target = rig.drop(rig.folder / "exp1.nd2", rig.data())
    version = FileVersion.of(target)
    assert rounds(watcher, 10, lambda: len(attempts) >= 3), rig.logs
    assert rig.announced == []
    assert not watcher.ledger.has(version)
    assert not AnnouncedLedger(rig.ledger_path).has(version)
    assert rig.lines("could not announce", str(target), "ConnectionError", "will retry")

    server_down = False
    assert rounds(watcher, 10, lambda: bool(rig.announced)), rig.logs
    delivered = len(attempts)
    rounds(watcher, AFTER)
    assert len(attempts) == delivered, "announced again after it was delivered"
    assert rig.announced == [version]
    assert set(attempts) == {version}
    assert AnnouncedLedger(rig.ledger_path).has(version)


# -- (f) file systems and the ledger's place -------------------------------------------------


def test_filesystem_type(tmp_path: Path) -> None:
    assert filesystem_type("/proc") == "proc"
    assert filesystem_type("/proc/self") == "proc"
    kind = filesystem_type(tmp_path)
    assert kind is not None
    assert kind not in NETWORK_FILESYSTEMS
    assert filesystem_type(tmp_path / "not" / "there") == kind  # the mount that would hold it


def test_network_filesystems() -> None:
    assert {"nfs", "nfs4", "cifs", "smb3"} <= NETWORK_FILESYSTEMS
    assert not {"ext4", "xfs", "btrfs", "tmpfs", "overlay", "proc"} & NETWORK_FILESYSTEMS


def test_a_local_folder_is_watched_by_events_unless_polling_is_forced(rig: Rig) -> None:
    rig.watcher(poll=None).start()
    assert rig.logs[0].endswith(": change events (inotify)")
    rig.watcher(poll=True, poll_seconds=0.3).start()
    assert rig.logs[2].endswith(": polling every 0.3 s (--poll)")


def test_default_ledger_honours_xdg_state_home(tmp_path: Path, monkeypatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    one = default_ledger([tmp_path / "inbox-a"])
    assert one.parent == state / "pyama-flow"
    assert one.name.startswith("watch-") and one.suffix == ".json"
    assert default_ledger([tmp_path / "inbox-a"]) == one  # stable
    assert default_ledger([tmp_path / "inbox-b"]) != one
    both = default_ledger([tmp_path / "inbox-a", tmp_path / "inbox-b"])
    assert both == default_ledger([tmp_path / "inbox-b", tmp_path / "inbox-a"])  # any order
    assert both not in {one, default_ledger([tmp_path / "inbox-b"])}

    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fallback = default_ledger([tmp_path / "inbox-a"])
    assert fallback == tmp_path / "home" / ".local" / "state" / "pyama-flow" / one.name


def test_a_network_share_mounted_below_the_folder_needs_polling(monkeypatch, tmp_path):
    from deployments import watch

    share = tmp_path / "scope-1"
    mounts = [("/", "ext4"), (str(share), "cifs")]
    monkeypatch.setattr(watch, "_mounts", lambda: mounts)
    assert watch.network_filesystems(tmp_path) == {"cifs"}
    assert watch.network_filesystems(share) == {"cifs"}
    assert watch.network_filesystems(tmp_path.parent / "other") == set()
