"""Index an acquisition file once per process, not once per open: :func:`lease_index`.

Indexing a file costs in proportion to the whole file (``tifffile`` reads every IFD of every
series; ``nd2`` decodes the chunk map and builds the loop table of every position), while a FOV
stage opens the file to read one position. With one open per FOV stage, a run would pay for the
whole file once per FOV. Readers therefore keep what indexing built here, per process, and every
later open of the same unchanged file in that process (a thread, a pool or Dask worker, a
re-opened pickle) re-uses it.

Never stale: an entry is found only under the identity the file has *now* (``os.stat``: device,
inode, size, mtime and ctime in ns), so a file replaced, re-linked or rewritten in place is
indexed anew. The ctime cannot be set back by a program (unlike the mtime, which copies keep), so
even a rewrite that restores the mtime is a new file. A file changed (mtime or ctime) less than
:data:`SETTLE_SECONDS` ago is not cached at all: timestamps advance in ticks (ms on Linux, 2 s
on FAT), and a second change in the same tick would not show. A re-opened handle is checked with
``fstat`` against the identity too (the path may have been swapped in between).

File handles: an entry's file is open only while some acquisition holds a lease on it; the last
release closes it and keeps the index. So no handle outlives the acquisitions using it (a
deleted file's space is not held), and a handle is never shared across a fork.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

__all__ = [
    "CACHE_SIZE",
    "SETTLE_SECONDS",
    "IndexLease",
    "Indexed",
    "clear_index_cache",
    "lease_index",
]

# Indexes kept per process: the run's input, and one more for a service that checks files
# while a run reads another. Each holds no file handle while unused, only memory.
CACHE_SIZE = 2
# FAT's mtime has a 2 s resolution, the coarsest a lab's share is likely to have.
SETTLE_SECONDS = 2.0


class Indexed(Protocol):
    """What a reader caches: an opened, indexed file whose handle can be closed and re-opened."""

    @property
    def cacheable(self) -> bool:
        """False when the index depends on more than this one file (multi-file OME-TIFF)."""
        ...

    def fileno(self) -> int | None:
        """The descriptor of the open handle, or None where the library hides it."""
        ...

    def reopen(self) -> None:
        """Open the handle again after :meth:`close` (a no-op while it is open)."""
        ...

    def close(self) -> None:
        """Close the handle; the index stays usable for :meth:`reopen`."""
        ...


T = TypeVar("T", bound=Indexed)
_Identity = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns
_Key = tuple[Hashable, tuple[str, str], _Identity]  # reader and options, path, identity


class _Entry:
    """One indexed file and the leases on it; guarded by the cache's lock."""

    def __init__(self, key: _Key | None) -> None:
        self.key = key  # None: never in the cache (private to one lease)
        self.value: Indexed | None = None
        self.users = 0
        self.open = False
        self.failed = False
        self.ready = threading.Event()


class IndexLease(Generic[T]):
    """An acquisition's use of an indexed file: the file stays open until :meth:`release`."""

    def __init__(self, entry: _Entry) -> None:
        self._entry: _Entry | None = entry

    @property
    def value(self) -> T:
        if self._entry is None:
            raise ValueError("the lease was released")
        return self._entry.value  # type: ignore[return-value]

    @property
    def released(self) -> bool:
        return self._entry is None

    def release(self) -> None:
        """Give the file back; the last lease closes its handle. Releasing twice is harmless."""
        entry, self._entry = self._entry, None
        if entry is not None:
            with _lock:
                _drop_user(entry)
                _return_abandoned()

    def __del__(self) -> None:
        # An acquisition dropped without close(): its lease is given back at the next use of
        # the cache. Not here: a collection can run while this thread holds the cache's lock.
        if self._entry is not None:
            _abandoned.append(self._entry)


_lock = threading.Lock()
_entries: OrderedDict[_Key, _Entry] = OrderedDict()
_inherited: list[object] = []
_abandoned: list[_Entry] = []  # list.append is atomic: safe from __del__


def lease_index(path: Path, reader_key: Hashable, build: Callable[[], T]) -> IndexLease[T]:
    """A lease on the index of ``path``: from this process's cache, or ``build()`` it.

    Parameters
    ----------
    path
        The acquisition file.
    reader_key
        What else the index depends on: the reader and its options (hashable).
    build
        Opens and indexes the file, raising the reader's errors; it returns with the file open.
        Concurrent leases of the same file wait for one build. Failures are never cached.

    Returns
    -------
    IndexLease
        Release it (the acquisition's close) to close the file when no one else reads it.
    """
    for _ in range(3):  # a file swapped between stat and re-open: look it up again
        try:
            st = os.stat(path)
        except OSError:
            break  # build() reports what is wrong with the path
        if time.time() - max(st.st_mtime, st.st_ctime) < SETTLE_SECONDS:
            break  # changed just now: another change in the same clock tick would not show
        # The path as given too: the index's messages (a times note) name the file so.
        key: _Key = (reader_key, (str(path), os.path.abspath(path)), _identity(st))
        with _lock:
            _return_abandoned()
            entry = _entries.get(key)
            builder = entry is None
            if entry is None:
                entry = _entries[key] = _Entry(key)
                _forget([k for k in _entries if k[:2] == key[:2] and k != key])  # older versions
                _evict(keep=key)
            _entries.move_to_end(key)
            entry.users += 1
        if builder:
            return _build_into(entry, path, build)
        entry.ready.wait()
        with _lock:
            if entry.failed:
                entry.users -= 1
                break  # build() again, raising this caller's own error
            if entry.open or _reopened(entry, path):
                return IndexLease(entry)
            _drop_user(entry)
    return _private(build)


def clear_index_cache() -> None:
    """Forget every cached index (files in use stay open until their last lease is released)."""
    with _lock:
        _forget(list(_entries))


def _identity(st: os.stat_result) -> _Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _current_identity(value: Indexed, path: Path) -> _Identity | None:
    fd = value.fileno()
    try:
        return _identity(os.fstat(fd) if fd is not None else os.stat(path))
    except OSError:
        return None


def _indexed_identity(entry: _Entry) -> _Identity | None:
    return entry.key[2] if entry.key is not None else None


def _private(build: Callable[[], T]) -> IndexLease[T]:
    entry = _Entry(None)
    entry.value, entry.users, entry.open = build(), 1, True
    entry.ready.set()
    return IndexLease(entry)


def _build_into(entry: _Entry, path: Path, build: Callable[[], T]) -> IndexLease[T]:
    """Build the entry's index (this thread registered it); other leases wait on ``ready``."""
    try:
        value = build()
    except BaseException:
        with _lock:
            entry.failed = True
            entry.users -= 1
            _forget([entry.key])
        entry.ready.set()
        raise
    with _lock:
        entry.value, entry.open = value, True
        # Changed while it was indexed (the key holds the identity from before): serve this
        # index to the leases already waiting, but never to a later open.
        if not value.cacheable or _current_identity(value, path) != _indexed_identity(entry):
            _forget([entry.key])
    entry.ready.set()
    return IndexLease(entry)


def _reopened(entry: _Entry, path: Path) -> bool:
    """Re-open a cached entry's file (cache lock held); False, and forgotten, when the file
    opened is not the one indexed."""
    value = entry.value
    assert value is not None
    try:
        value.reopen()
    except Exception:  # gone or unreadable now: a fresh build() says what is wrong
        _forget([entry.key])
        return False
    entry.open = True
    if _current_identity(value, path) == _indexed_identity(entry):
        return True
    _forget([entry.key])
    return False


def _return_abandoned() -> None:
    """Give back the leases of acquisitions dropped without close() (cache lock held)."""
    while _abandoned:
        _drop_user(_abandoned.pop())


def _drop_user(entry: _Entry) -> None:
    """One lease fewer (cache lock held); the last one closes the file."""
    entry.users -= 1
    if entry.users == 0 and entry.open and entry.value is not None:
        entry.open = False
        entry.value.close()


def _forget(keys: list[_Key | None]) -> None:
    """Drop entries from the cache (lock held); one in use closes at its last release."""
    for key in keys:
        _entries.pop(key, None)


def _evict(keep: _Key) -> None:
    """Drop the least recently used entries beyond :data:`CACHE_SIZE` (lock held)."""
    idle = [k for k, e in _entries.items() if k != keep and e.ready.is_set()]
    for key in idle[: max(0, len(_entries) - CACHE_SIZE)]:
        del _entries[key]


def _forget_in_child() -> None:
    # A forked child inherits the entries as they were, maybe mid-read in another thread: it
    # must neither use them (a shared file offset) nor close them (a lock held by a thread that
    # does not exist in the child). They are set aside, untouched.
    global _lock
    _lock = threading.Lock()
    _inherited.append((dict(_entries), list(_abandoned)))
    _entries.clear()
    _abandoned.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
