"""Each FOV stage opens the acquisition anew: the file's index is built once per process and
re-used (``pyama_lib.io.readers.index_cache``), so opening one FOV of a file of many FOVs costs
what it does in a file of few, and a file changed on disk is never served from the cache.

The work is counted (TiffFile objects made, IFDs parsed), not timed.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections import Counter
from pathlib import Path

import nd2
import numpy as np
import pytest
import tifffile

from pyama_lib.core.errors import InboxPathError
from pyama_lib.io import open_acquisition
from pyama_lib.io.readers import index_cache
from pyama_lib.io.readers.index_cache import CACHE_SIZE
from pyama_lib.io.readers.ome_tiff_writer import write_ome_tiff

pytestmark = pytest.mark.usefixtures("fresh_index_cache")


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts ``files`` (tifffile.TiffFile made) and ``ifds`` (TIFF pages/frames parsed)."""
    counts: Counter[str] = Counter()
    for cls, what in [
        (tifffile.TiffFile, "files"),
        (tifffile.TiffPage, "ifds"),
        (tifffile.TiffFrame, "ifds"),
    ]:

        def counting(self, *args, _init=cls.__init__, _what=what, **kwargs) -> None:
            counts[_what] += 1
            _init(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    return counts


def _value(fov: int, channel: int, t: int, base: int = 0) -> int:
    return base + 100 * fov + 10 * channel + t


def _write(path: Path, n_fovs: int, base: int = 0, n_frames: int = 2) -> Path:
    """An OME-TIFF of tiny 2-channel frames, each filled with :func:`_value`."""
    fovs = (
        (
            np.stack([np.full((4, 4), _value(f, c, t, base), np.uint16) for c in range(2)])
            for t in range(n_frames)
        )
        for f in range(n_fovs)
    )
    return write_ome_tiff(path, fovs, ["pc", "fl"], np.arange(n_frames, dtype=float))


def _held(path: Path) -> bool:
    target = str(path.resolve())
    return any(os.path.realpath(fd) == target for fd in Path("/proc/self/fd").iterdir())


def test_opening_a_fov_costs_the_same_in_60_fovs_as_in_3(tmp_path: Path, work: Counter) -> None:
    cost = {}
    for n_fovs in (3, 60):
        path = _write(tmp_path / f"fovs{n_fovs}.ome.tif", n_fovs)
        with open_acquisition(path) as acq:  # planning the run indexes the file
            assert acq.n_fovs == n_fovs
        work.clear()
        for fov in (0, n_fovs // 2, n_fovs - 1):  # then each FOV's stage opens it
            with open_acquisition(path) as acq:
                assert acq.frame(fov, 1, 1)[0, 0] == _value(fov, 1, 1)
                assert list(acq.frame_times(fov)) == [0.0, 1.0]
        cost[n_fovs] = dict(work)
    # No TiffFile made again, no IFD parsed again: not other FOVs', not even the FOV's own.
    assert cost[3] == cost[60] == {}


def test_a_file_replaced_on_disk_is_indexed_anew(tmp_path: Path, work: Counter) -> None:
    path = _write(tmp_path / "acq.ome.tif", 3)
    before = path.stat()
    with open_acquisition(path) as acq:
        assert acq.frame(2, 0, 1)[0, 0] == _value(2, 0, 1)
    _write(path, 5, base=1000)  # another file under the same name, dated as the first
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    work.clear()
    with open_acquisition(path) as acq:
        assert acq.n_fovs == 5
        assert acq.frame(4, 1, 0)[0, 0] == _value(4, 1, 0, base=1000)
        assert acq.frame(2, 0, 1)[0, 0] == _value(2, 0, 1, base=1000)
    assert work["files"] == 1


def test_a_file_rewritten_in_place_with_its_mtime_set_back_is_indexed_anew(
    tmp_path: Path, work: Counter
) -> None:
    """Same inode, same size, same mtime: only the ctime tells, and it is enough."""
    path = _write(tmp_path / "acq.ome.tif", 3)
    with open_acquisition(path) as acq:
        assert acq.frame(1, 0, 0)[0, 0] == _value(1, 0, 0)
    with tifffile.TiffFile(path) as tif:
        offset = tif.series[1].pages[0].dataoffsets[0]
    before = path.stat()
    time.sleep(0.05)  # past the file system's timestamp tick
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.full((4, 4), 7, np.uint16).tobytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    work.clear()
    with open_acquisition(path) as acq:
        assert acq.frame(1, 0, 0)[0, 0] == 7
    assert work["files"] == 1


def test_a_file_changed_just_now_is_indexed_at_every_open(
    tmp_path: Path, work: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_cache, "SETTLE_SECONDS", 3600.0)  # every file is "just changed"
    path = _write(tmp_path / "acq.ome.tif", 2)
    for _ in range(2):
        with open_acquisition(path) as acq:
            acq.frame(1, 1, 1)
    assert work["files"] == 2


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_the_file_stays_open_while_any_open_uses_it_and_no_longer(tmp_path: Path) -> None:
    path = _write(tmp_path / "acq.ome.tif", 3)
    first, second = open_acquisition(path), open_acquisition(path)
    first.close()
    assert second.frame(2, 1, 1)[0, 0] == _value(2, 1, 1)  # closing one leaves the other
    assert _held(path)
    second.close()
    assert not _held(path)
    with pytest.raises(ValueError, match="closed"):
        second.frame(0, 0, 0)
    open_acquisition(path).frame(0, 0, 0)  # dropped without close()...
    with open_acquisition(path) as acq:
        acq.frame(0, 0, 0)
    assert not _held(path)  # ...its handle is given back too


def test_threads_opening_at_once_share_one_index(tmp_path: Path, work: Counter) -> None:
    path = _write(tmp_path / "acq.ome.tif", 8)
    start, wrong = threading.Barrier(4), []

    def stage(worker: int) -> None:
        start.wait()
        for fov in range(worker, 8, 4):
            with open_acquisition(path) as acq:
                for c in range(2):
                    for t in range(2):
                        if acq.frame(fov, c, t)[0, 0] != _value(fov, c, t):
                            wrong.append((fov, c, t))

    threads = [threading.Thread(target=stage, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong
    assert work["files"] == 1


def test_pin_pickle_and_eviction_with_a_cached_index(tmp_path: Path, work: Counter) -> None:
    path = _write(tmp_path / "acq.ome.tif", 3)
    st = path.stat()
    with open_acquisition(path) as acq:
        clone = pickle.loads(pickle.dumps(acq))  # opens in this process again: the same index
        assert clone.frame(2, 1, 0)[0, 0] == _value(2, 1, 0)
        clone.close()
    with open_acquisition(path, pinned=(st.st_dev, st.st_ino)) as acq:
        acq.frame(0, 0, 0)
    with pytest.raises(InboxPathError):
        open_acquisition(path, pinned=(st.st_dev, st.st_ino + 1))
    assert work["files"] == 1
    others = [_write(tmp_path / f"other{i}.ome.tif", 1) for i in range(CACHE_SIZE)]
    for other in others:
        open_acquisition(other).close()
    work.clear()
    open_acquisition(path).close()  # pushed out of the cache by the others: indexed again
    assert work["files"] == 1


def test_nd2_is_decoded_once_per_process(nd2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = Counter[str]()
    init = nd2.ND2File.__init__

    def counting(self, *args, **kwargs) -> None:
        made["nd2"] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(nd2.ND2File, "__init__", counting)
    path = nd2_dir / "arcadia-example-timelapse.nd2"
    frames = []
    for times in ("nominal", "measured", "nominal"):
        with open_acquisition(path, times=times) as acq:
            frames.append(acq.frame(0, 0, 52))
            assert acq.frame_times(0)[-1] > 0
    assert made["nd2"] == 1
    np.testing.assert_array_equal(frames[0], frames[2])
