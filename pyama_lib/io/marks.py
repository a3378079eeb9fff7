"""A person's good/bad marks on cells: PyAMA's ``<stem>_inspected.csv`` beside a traces CSV.

PyAMA's Visualization page saves a FOV's traces again as ``<stem>_inspected.csv``, with ``good``
set per cell, and its merge reads that file instead of the traces. The marks belong to cells,
not to one extraction: after the FOV is extracted again (new parameters, a new version) an
inspected file from before would bring back old values and perhaps cells that no longer exist.
So :func:`read_marked_traces`

- reads an inspected file that is current (not older than the traces, the same cells and
  frames) as PyAMA does: its rows and values;
- otherwise applies its marks by cell id to the current traces and says what did not fit: a
  file older than the traces, cells it marks that the traces no longer have, cells of the
  traces it does not mark (they stay good, as extracted).

:func:`mark_cells` writes marks without a screen (by cell id, or by a
:class:`~pyama_lib.io.mark_rules.MarkRule`), and :func:`fov_marks` lists a FOV's cells to decide
on. Their choices:

- **The file is what PyAMA's page writes.** PyAMA reads the CSV with ``pandas.read_csv``, sets
  ``good`` on all rows of each cell and writes it with ``to_csv(index=False)``: the traces CSV's
  columns, order and rows, but floats in pandas' shortest form (``12.5``, not the traces'
  ``12.500000``; both read back as the same number). :func:`mark_cells` does the same with the
  current traces CSV's rows, so a stale inspected file never brings back old values, and writes
  atomically.
- **A cell's mark holds in every channel.** The cells of a FOV are the tracked labels, one set
  for all fluorescence channels, and a cell that is debris or a doublet is that in every
  channel. PyAMA keeps one inspected file per traces CSV, so ``channel=None`` (the default)
  writes the same marks into the inspected file of each channel of the FOV; given a channel,
  only that channel's file.
- **The inspected CSVs are the only place marks are kept.** The traces Parquet dataset and the
  tracks tables keep the extraction's ``good`` (true), as PyAMA has no Parquet: a second copy
  of the marks would go stale as soon as someone saved marks in PyAMA's own page. The merge
  reads the marks from the inspected CSVs, so its analysis CSVs and its tidy
  ``merged.parquet`` leave the bad cells out; in Python, :func:`read_marked_traces` gives a
  FOV's traces with the marks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pyama_lib.core.errors import ParamsError, ResultsFileError
from pyama_lib.io.atomic import atomic_target
from pyama_lib.io.mark_rules import MarkRule, cell_measures, select_cells
from pyama_lib.io.results_yaml import ProcessingResults, load_results, results_file_path
from pyama_lib.io.traces import read_traces_csv

INSPECTED_SUFFIX = "_inspected"
ALL = "all"
"""``bad=ALL`` or ``good=ALL`` in :func:`mark_cells`: every cell of the FOV."""
_SHOWN = 10  # cell ids listed in a warning; the rest are counted

CellIds = Iterable[int] | str
"""Cell ids, or :data:`ALL`."""


def inspected_csv_path(csv_path: str | Path) -> Path:
    """The sibling ``<stem>_inspected.csv`` where PyAMA saves a person's good/bad marks.

    Examples
    --------
    >>> inspected_csv_path("/o/fov_000/exp_fov_000_traces_ch_1.csv").name
    'exp_fov_000_traces_ch_1_inspected.csv'
    """
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}{INSPECTED_SUFFIX}{csv_path.suffix}")


@dataclass
class MarkedTraces:
    """A FOV's traces with a person's marks: ``table`` (read as
    :func:`~pyama_lib.io.traces.read_traces_csv` reads it), the file its rows came from, and
    what a reader of the results should be told."""

    table: pd.DataFrame
    source: Path
    warnings: list[str] = field(default_factory=list)


def read_marked_traces(path: str | Path) -> MarkedTraces:
    """The traces CSV at ``path`` with the marks of its ``_inspected.csv``, if there is one.

    Raises
    ------
    ResultsFileError
        When a file is missing, unreadable or not a traces CSV.
    """
    path = Path(path)
    inspected = inspected_csv_path(path)
    if not inspected.is_file():
        return MarkedTraces(read_traces_csv(path), path)
    if not path.is_file():  # only the person's copy is left: it is all there is
        return MarkedTraces(read_traces_csv(inspected), inspected)
    traces, marked = read_traces_csv(path), read_traces_csv(inspected)
    older = inspected.stat().st_mtime_ns < path.stat().st_mtime_ns
    if not older and _same_rows(traces, marked):
        return MarkedTraces(marked, inspected)
    why = (
        "is older than the traces it marks (extracted again since)"
        if older
        else "has other cells or frames than the traces"
    )
    warnings = [f"{inspected}: {why}; its marks were applied to the current traces by cell id"]
    marks = marked.groupby("cell")["good"].all()  # a cell with a bad row is a bad cell
    table = traces.copy()
    known = table["cell"].isin(marks.index).to_numpy()
    table.loc[known, "good"] = table.loc[known, "cell"].map(marks).to_numpy(dtype=bool)
    gone = sorted(set(marks.index) - set(table["cell"]))
    if gone:
        warnings.append(
            f"{inspected}: marks {_cells(gone)} that the current traces do not have; "
            "those marks are not used"
        )
    unmarked = sorted(set(table["cell"]) - set(marks.index))
    if unmarked:
        warnings.append(f"{inspected}: does not mark {_cells(unmarked)}; they count as good")
    return MarkedTraces(table, path, warnings)


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    keys = ["cell", "frame"]
    left = a[keys].sort_values(keys).to_numpy(dtype=np.int64)
    right = b[keys].sort_values(keys).to_numpy(dtype=np.int64)
    return left.shape == right.shape and bool(np.array_equal(left, right))


def _cells(ids: list[int]) -> str:
    return f"{len(ids)} cell(s) ({_ids(ids)})"


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:_SHOWN])
    return shown + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


# -- writing marks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelMarks:
    """What :func:`mark_cells` wrote for one fluorescence channel: the inspected CSV, the cells
    it turned bad or good (those already so are not listed), and the count after."""

    channel: int
    path: Path
    newly_bad: list[int]
    newly_good: list[int]
    n_cells: int
    n_bad: int


@dataclass
class MarkResult:
    """What :func:`mark_cells` did to a FOV, and what stale marks it found on the way."""

    fov: int
    channels: list[ChannelMarks]
    warnings: list[str] = field(default_factory=list)


@dataclass
class FovMarks:
    """The cells of a FOV with their marks, to decide on (:func:`fov_marks`).

    ``cells`` is indexed by cell: ``frames``, ``first_frame``, ``last_frame`` and the medians
    of ``area``, ``position_x``, ``position_y`` over the cell's rows, then one column
    ``ch_<c>`` per channel: ``"good"``, ``"bad"``, ``"mixed"`` (some frames bad, marked outside
    PyAMA) or NaN where that channel's traces lack the cell. ``traces`` are the traces CSVs,
    ``labels`` the tracked labels (what the ``border`` rule reads), if recorded.
    """

    fov: int
    cells: pd.DataFrame
    traces: dict[int, Path]
    warnings: list[str] = field(default_factory=list)
    labels: Path | None = None


def fov_marks(
    results: str | Path | ProcessingResults, fov: int, channel: int | None = None
) -> FovMarks:
    """The cells of ``fov`` with their current marks, in ``channel`` or (None) every channel.

    Raises
    ------
    ParamsError
        The results have no traces of that FOV or channel.
    ResultsFileError
        The results file or a traces CSV is missing or unreadable.
    """
    return read_fov_marks(results, fov, channel)[0]


def read_fov_marks(
    results: str | Path | ProcessingResults, fov: int, channel: int | None = None
) -> tuple[FovMarks, dict[int, MarkedTraces]]:
    """:func:`fov_marks`, and the marked traces of each channel it read them from."""
    loaded = results if isinstance(results, ProcessingResults) else load_results(results)
    traces = _traces_of(loaded, int(fov), channel)
    marked = {c: read_marked_traces(path) for c, path in traces.items()}
    cells = cell_measures(pd.concat([m.table for m in marked.values()], ignore_index=True))
    for c, m in marked.items():
        state = m.table.groupby("cell")["good"].agg(["all", "any"])
        words = np.where(state["all"], "good", np.where(state["any"], "mixed", "bad"))
        cells[f"ch_{c}"] = pd.Series(words, index=state.index)
    entry = loaded.results_paths[int(fov)]
    listed = FovMarks(
        fov=int(fov),
        cells=cells,
        traces=traces,
        warnings=[w for m in marked.values() for w in m.warnings],
        labels=entry.seg_labeled[1] if entry.seg_labeled else None,
    )
    return listed, marked


def mark_cells(
    results: str | Path | ProcessingResults,
    fov: int,
    channel: int | None = None,
    *,
    bad: CellIds = (),
    good: CellIds = (),
    rules: Iterable[MarkRule | str] = (),
) -> MarkResult:
    """Mark cells of ``fov`` bad or good and save the marks as PyAMA's ``_inspected.csv``.

    Starts from the current marks (an inspected file's, applied by cell id when it is stale,
    else the traces' ``good``), then applies, later ones winning: ``ALL`` (every cell bad, or
    good), the cells any of ``rules`` picks (bad), the ids in ``bad``, the ids in ``good``. So
    ``bad=ALL, good=[4, 7]`` keeps only cells 4 and 7, and ``rules=["area<50"], good=[12]``
    spares cell 12. A cell's mark covers all its rows. Marks are absolute, so the same call
    again changes nothing. With nothing to apply it saves the current marks (a stale file's,
    now on the current traces).

    Parameters
    ----------
    results
        A processing output folder, its ``processing_results.yaml``, or the loaded results.
    fov
        The FOV whose cells to mark.
    channel
        The fluorescence channel whose inspected CSV to write; None for every channel of the
        FOV (a cell is the same cell in all of them).
    bad, good
        Cell ids (the traces' ``cell``, the track id), or :data:`ALL`.
    rules
        :class:`~pyama_lib.io.mark_rules.MarkRule` or their text (``"area<50"``,
        ``"frames<40"``, ``"border"``); the cells they pick are marked bad.

    Raises
    ------
    ParamsError
        An unknown FOV, channel or cell id (named, with the ones there are), a cell both bad
        and good, a bad rule or one the results cannot evaluate.
    ResultsFileError
        A file is missing, unreadable or cannot be written.
    """
    listed, marked_of = read_fov_marks(results, fov, channel)
    where = f"fov {int(fov)}"
    everything = {int(c) for c in listed.cells.index}
    parsed = [r if isinstance(r, MarkRule) else MarkRule.parse(r) for r in rules]
    all_bad, all_good = _is_all(bad), _is_all(good)
    if all_bad and all_good:
        raise ParamsError("all cells cannot be both bad and good; give ids to one of them")
    target = dict.fromkeys(everything, all_good) if all_bad or all_good else {}
    target.update(dict.fromkeys(select_cells(parsed, listed.cells, listed.labels, where), False))
    bad_ids = set() if all_bad else _known(bad, everything, where)
    good_ids = set() if all_good else _known(good, everything, where)
    both = sorted(bad_ids & good_ids)
    if both:
        raise ParamsError(f"{where}: {_cells(both)} given as both bad and good")
    target.update(dict.fromkeys(bad_ids, False))
    target.update(dict.fromkeys(good_ids, True))

    warnings = list(listed.warnings)
    done = []
    for c, path in listed.traces.items():
        marked = marked_of[c]
        table = marked.table
        cell = table["cell"].to_numpy(dtype=np.int64)
        before = pd.Series(table["good"].to_numpy(dtype=bool)).groupby(cell).agg(["all", "any"])
        after = table["good"].to_numpy(dtype=bool).copy()
        for value in (False, True):
            after[np.isin(cell, [k for k, v in target.items() if v is value])] = value
        absent = sorted(set(target) - set(before.index))
        if absent:
            warnings.append(f"{where} channel {c}: the traces have no {_cells(absent)}")
        present = {k: v for k, v in target.items() if k in before.index}
        inspected = inspected_csv_path(path)
        _write_inspected(path if path.is_file() else marked.source, table, after, inspected)
        n_bad = pd.Series(after).groupby(cell).any().eq(False).sum()
        done.append(
            ChannelMarks(
                channel=c,
                path=inspected,
                newly_bad=sorted(k for k, v in present.items() if not v and before.at[k, "any"]),
                newly_good=sorted(k for k, v in present.items() if v and not before.at[k, "all"]),
                n_cells=len(before),
                n_bad=int(n_bad),
            )
        )
    return MarkResult(int(fov), done, warnings)


def _traces_of(results: ProcessingResults, fov: int, channel: int | None) -> dict[int, Path]:
    entry = results.results_paths.get(fov)
    have = dict(entry.traces_csv) if entry else {}
    if not have:
        fovs = sorted(f for f, e in results.results_paths.items() if e.traces_csv)
        raise ParamsError(
            f"fov {fov} has no traces in {results_file_path(results.output_dir)}; "
            f"FOVs with traces: {', '.join(map(str, fovs)) or 'none (run extraction first)'}"
        )
    if channel is None:
        return have
    if int(channel) not in have:
        raise ParamsError(
            f"fov {fov} has no traces of channel {channel}; its fluorescence channels: "
            f"{', '.join(map(str, sorted(have)))}"
        )
    return {int(channel): have[int(channel)]}


def _is_all(ids: CellIds) -> bool:
    return isinstance(ids, str) and ids == ALL


def _known(ids: CellIds, cells: set[int], where: str) -> set[int]:
    if isinstance(ids, str):  # "5,7" would otherwise be taken character by character
        raise ParamsError(f"cell ids {ids!r}: give a list of integers or {ALL!r}")
    wanted = {int(i) for i in ids}
    unknown = sorted(wanted - cells)
    if unknown:
        raise ParamsError(f"{where} has no cell(s) {_ids(unknown)}; it has {_cells(sorted(cells))}")
    return wanted


def _write_inspected(rows: Path, table: pd.DataFrame, good: np.ndarray, target: Path) -> None:
    """Write ``rows`` (a CSV) with ``good`` (of ``table``'s rows) to ``target``, as PyAMA's
    Visualization page writes: the frame ``pandas.read_csv`` made of it, ``to_csv(index=False)``.
    """
    raw = pd.read_csv(rows)
    raw["good"] = _aligned(raw, table, good)
    try:
        with atomic_target(target) as tmp:
            raw.to_csv(tmp, index=False, lineterminator="\n")
    except OSError as exc:
        raise ResultsFileError(
            target, f"cannot write the marks ({exc}); check the folder is writable"
        ) from exc


def _aligned(raw: pd.DataFrame, table: pd.DataFrame, good: np.ndarray) -> np.ndarray:
    """``good`` (per row of ``table``) in ``raw``'s row order. Both hold the same (cell, frame)
    rows, but a current inspected file (``table``) may list them in another order."""
    keys = [pd.to_numeric(raw[k]).to_numpy(dtype=np.int64) for k in ("frame", "cell")]
    mine = [table[k].to_numpy(dtype=np.int64) for k in ("frame", "cell")]
    if all(np.array_equal(a, b) for a, b in zip(keys, mine, strict=True)):
        return good
    out = np.empty(len(raw), dtype=bool)
    out[np.lexsort(keys)] = good[np.lexsort(mine)]
    return out
