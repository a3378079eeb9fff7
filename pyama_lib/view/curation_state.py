"""What the curation panel of ``pyama view`` holds, without Qt: a FOV's cells, their traces as
arrays to plot, and a person's marks until they are saved.

:func:`load_curation` reads the FOV once (:func:`~pyama_lib.io.marks.read_fov_marks`: its
cells, and each channel's traces with their marks); :class:`CurationState` then changes marks
in memory and :meth:`CurationState.save` writes them with
:func:`~pyama_lib.io.marks.mark_cells`, so the files are the library's (PyAMA's
``<stem>_inspected.csv``, in every channel of the FOV).

A cell's mark is one mark for all channels, as :func:`~pyama_lib.io.marks.mark_cells` keeps
it. A cell shows as good when all its rows in every channel are good; one marked bad outside
the panel in some channel or frame only shows as bad. Saving passes only the cells the person
changed since opening or the last save, so marks nobody touched here (such a partial one, or
one saved meanwhile by ``pyama inspect``) stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pyama_lib.core.errors import ParamsError
from pyama_lib.io.mark_rules import MarkRule, select_cells
from pyama_lib.io.marks import MarkResult, mark_cells, read_fov_marks
from pyama_lib.io.results_yaml import ProcessingResults, load_results

DEFAULT_FEATURE = "intensity_total"
# Trace columns that say which row it is, not what was measured: not offered for plotting.
_NOT_FEATURES = ("fov", "cell", "frame", "time", "good")


@dataclass
class Series:
    """One feature of one channel as arrays: ``values[i, j]`` is cell ``i``'s value at frame
    ``frames[j]`` (NaN where the cell has no row), ``hours`` the frames' times in hours."""

    frames: np.ndarray
    hours: np.ndarray
    values: np.ndarray


@dataclass
class CurationState:
    """The cells of one FOV and their good/bad marks while a person curates them.

    ``cells`` are :func:`~pyama_lib.io.marks.fov_marks`' cells (frames, first and last
    frame, median area and position, per channel state), in cell id order; ``good`` and
    ``saved`` are per row of ``cells``: the marks now, and as last read or saved.
    """

    results: ProcessingResults
    fov: int
    cells: pd.DataFrame
    tables: dict[int, pd.DataFrame]
    labels: Path | None
    good: np.ndarray
    saved: np.ndarray
    warnings: list[str] = field(default_factory=list)
    _series: dict[tuple[int, str], Series] = field(default_factory=dict, init=False, repr=False)

    @property
    def ids(self) -> np.ndarray:
        """The cell ids (track ids, the labels in the image), ascending."""
        return self.cells.index.to_numpy(dtype=np.int64)

    @property
    def channels(self) -> list[int]:
        """The FOV's fluorescence channels that have traces."""
        return sorted(self.tables)

    @property
    def dirty(self) -> bool:
        """Whether some mark differs from the saved one."""
        return bool((self.good != self.saved).any())

    def row(self, cell: int) -> int:
        """The row of ``cell`` in :attr:`cells`.

        Raises
        ------
        ParamsError
            The FOV has no such cell.
        """
        at = int(np.searchsorted(self.ids, cell))
        if at >= len(self.ids) or self.ids[at] != cell:
            raise ParamsError(f"fov {self.fov} has no cell {cell}")
        return at

    def features(self, channel: int) -> list[str]:
        """The numeric trace columns of ``channel`` to plot: the default one first, the
        positions last."""
        table = self.tables[channel]
        numeric = [
            c
            for c in table.columns
            if c not in _NOT_FEATURES and pd.api.types.is_numeric_dtype(table[c])
        ]
        return sorted(numeric, key=lambda c: (c != DEFAULT_FEATURE, c.startswith("position_")))

    def series(self, channel: int, feature: str) -> Series:
        """``feature`` of ``channel`` per cell and frame (computed once, then kept)."""
        key = (channel, feature)
        if key not in self._series:
            self._series[key] = self._build_series(self.tables[channel], feature)
        return self._series[key]

    def _build_series(self, table: pd.DataFrame, feature: str) -> Series:
        frames, at = np.unique(table["frame"].to_numpy(dtype=np.int64), return_inverse=True)
        minutes = np.full(len(frames), np.nan)
        minutes[at] = table["time"].to_numpy(dtype=np.float64)
        values = np.full((len(self.ids), len(frames)), np.nan)
        rows = np.searchsorted(self.ids, table["cell"].to_numpy(dtype=np.int64))
        values[rows, at] = table[feature].to_numpy(dtype=np.float64)
        return Series(frames, minutes / 60.0, values)

    def frames_of(self, cell: int) -> np.ndarray:
        """The frames in which ``cell`` has a row (in any channel), ascending."""
        present = [
            t.loc[t["cell"] == cell, "frame"].to_numpy(np.int64) for t in self.tables.values()
        ]
        return np.unique(np.concatenate(present))

    def set_good(self, cells: list[int] | np.ndarray, good: bool) -> None:
        """Mark ``cells`` good (True) or bad (False), in memory."""
        self.good[[self.row(int(c)) for c in cells]] = good

    def set_all(self, good: bool) -> None:
        """Mark every cell good or bad, in memory."""
        self.good[:] = good

    def apply_rules(self, text: str) -> list[int]:
        """Mark bad, in memory, the cells the rules in ``text`` pick (``"area<50, border"``:
        :class:`~pyama_lib.io.mark_rules.MarkRule` texts separated by commas); returns them.

        Raises
        ------
        ParamsError
            A rule that does not parse, or that the FOV's traces cannot evaluate.
        """
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise ParamsError("no rule given: write e.g. 'area<50', 'frames<40' or 'border'")
        rules = [MarkRule.parse(p) for p in parts]
        picked = sorted(select_cells(rules, self.cells, self.labels, f"fov {self.fov}"))
        self.set_good(picked, False)
        return picked

    def discard(self) -> None:
        """Forget the unsaved marks: back to the saved ones."""
        self.good = self.saved.copy()

    def save(self) -> MarkResult:
        """Write the changed marks with :func:`~pyama_lib.io.marks.mark_cells` (every channel's
        ``_inspected.csv``); afterwards nothing is unsaved."""
        changed = self.good != self.saved
        result = mark_cells(
            self.results,
            self.fov,
            bad=self.ids[changed & ~self.good].tolist(),
            good=self.ids[changed & self.good].tolist(),
        )
        self.saved = self.good.copy()
        return result


def load_curation(results: str | Path | ProcessingResults, fov: int) -> CurationState:
    """The cells of ``fov`` with their saved marks, and their traces in every channel.

    Raises
    ------
    ParamsError
        The results have no traces of that FOV.
    ResultsFileError
        The results file or a traces CSV is missing or unreadable.
    """
    loaded = results if isinstance(results, ProcessingResults) else load_results(results)
    listed, marked = read_fov_marks(loaded, fov)
    tables = {c: m.table for c, m in marked.items()}
    cells = listed.cells.sort_index()
    states = cells[[f"ch_{c}" for c in tables]]
    # NaN where a channel lacks the cell: that channel has nothing to say about it
    good = np.array((states.eq("good") | states.isna()).all(axis=1), dtype=bool)
    return CurationState(
        results=loaded,
        fov=int(fov),
        cells=cells,
        tables=tables,
        labels=listed.labels,
        good=good,
        saved=good.copy(),
        warnings=listed.warnings,
    )
