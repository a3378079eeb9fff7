"""A folder of 2-D TIFFs, one per image, as one acquisition: :class:`TiffSequenceAcquisition`.

The file names carry the indices (:mod:`~pyama_lib.io.readers.sequence_names`). The folder is
listed once per process and the listing kept while the folder is unchanged
(:mod:`~pyama_lib.io.readers.index_cache`), so a stage opening the acquisition for one FOV does
not list a folder of 100 000 files again. Each frame is its own file, read when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pyama_lib.io.readers.acquisition import Acquisition
from pyama_lib.io.readers.index_cache import lease_index
from pyama_lib.io.readers.mm_legacy import METADATA_FILE
from pyama_lib.io.readers.sequence_layout import SequenceLayout, list_sequence
from pyama_lib.io.readers.tiff_images import read_header, read_image


class TiffSequenceAcquisition(Acquisition):
    """A TIFF sequence: positions are FOVs, the lowest Z index is read.

    Parameters
    ----------
    path
        The folder (or a Micro-Manager dataset folder holding one sub-folder per position).
    pattern
        How the names carry the indices when no built-in scheme reads them, e.g.
        ``"run_{p}_frame{t}_{c}.tif"`` (see
        :func:`~pyama_lib.io.readers.sequence_names.pattern_naming`).
    interval_min
        Minutes between frames when the files record no times (only Micro-Manager's
        ``metadata.txt`` does); without it, PyAMA's 1 min, and said.
    pinned
        ``(st_dev, st_ino)`` the folder must have (see :class:`Acquisition`).
    """

    format_name = "TIFF sequence"

    def __init__(
        self,
        path: str | Path,
        pattern: str | None = None,
        interval_min: float | None = None,
        pinned: Sequence[int] | None = None,
    ) -> None:
        super().__init__(path, pattern=pattern, interval_min=interval_min, pinned=pinned)

    def _open(self) -> None:
        pattern, interval_min = self._options["pattern"], self._options["interval_min"]
        # The folder's own times change when a file is added, removed or renamed, not when one
        # is rewritten in place: the Micro-Manager metadata (frame times, channel names) is
        # part of the key itself.
        self._lease = lease_index(
            self.path,
            (type(self).__name__, pattern, interval_min, _stamp(self.path / METADATA_FILE)),
            lambda: _SequenceIndex(list_sequence(self.path, pattern, interval_min)),
        )
        self.layout: SequenceLayout = self._lease.value.layout
        self._adopt(self.layout)

    def _read_frame(self, fov: int, channel: int, t: int) -> np.ndarray:
        return read_image(self.layout.file(fov, channel, t), self.shape, self.dtype)

    def _close(self) -> None:
        self._lease.release()

    def frame_times(self, fov: int) -> np.ndarray:
        self.check_fov(fov)
        return self.layout.times[fov].copy()

    def describe(self) -> list[str]:
        return self.layout.describe()

    def check_files(self) -> None:
        """Read every image's header: each must be one 2-D image of the first one's shape
        and dtype. Costs one header read per file, so a run does it once, while planning
        (and a process once per listing: the command's checks and its flow share it)."""
        index = self._lease.value
        if index.checked:
            return
        for path in self.layout.all_files():
            read_header(path, self.shape, self.dtype)
        index.checked = True


class _SequenceIndex:
    """A listed sequence as the index cache keeps it: no file stays open between frames."""

    def __init__(self, layout: SequenceLayout) -> None:
        self.layout = layout
        # Sub-folders (one per position) change without the listed folder changing.
        self.cacheable = not layout.subfolders
        self.checked = False  # check_files passed for this listing

    def fileno(self) -> int | None:
        return None

    def reopen(self) -> None:
        """Nothing to re-open: each frame opens its own file."""

    def close(self) -> None:
        """Nothing to close: each frame closes its own file."""


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    """A file's identity now (inode, size, times), None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
