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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pyama_lib.io.traces import read_traces_csv

INSPECTED_SUFFIX = "_inspected"
_SHOWN = 10  # cell ids listed in a warning; the rest are counted


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
    shown = ", ".join(str(int(i)) for i in ids[:_SHOWN])
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return f"{len(ids)} cell(s) ({shown}{more})"
