"""``pyama inspect``: a FOV's cells listed, and marked good or bad, without a screen.

The marks are saved as PyAMA's ``<stem>_inspected.csv`` beside each traces CSV
(:func:`pyama_lib.io.marks.mark_cells`), which ``pyama merge`` then uses. Needs neither Prefect
nor napari; heavy imports happen inside the command, so ``pyama --help`` stays instant.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyama_lib.core.errors import ParamsError

if TYPE_CHECKING:  # pandas is imported by the command, not by ``pyama --help``
    import pandas as pd

Subparsers = Any  # argparse's _SubParsersAction is private
_SHOWN = 20  # cell ids printed per change; a rule may mark hundreds


def register_inspect(sub: Subparsers) -> None:
    p = sub.add_parser(
        "inspect",
        help="list a FOV's cells, mark cells bad or good (PyAMA's _inspected.csv)",
        description="List the cells of a processed FOV with their marks, or mark cells bad or "
        "good by id or by rule. The marks are saved as <stem>_inspected.csv beside the FOV's "
        "traces CSVs, as PyAMA's Visualization page saves them; pyama merge leaves the bad "
        "cells out. Explicit ids win over rules, and --good over --bad all.",
    )
    p.add_argument("results", type=Path, help="output folder (or its processing_results.yaml)")
    p.add_argument("--fov", type=int, required=True, help="the FOV whose cells to list or mark")
    p.add_argument(
        "--channel",
        type=int,
        help="fluorescence channel to mark (default: every channel of the FOV, as a cell is "
        "the same cell in all of them)",
    )
    p.add_argument("--bad", action="append", metavar="IDS", help="cells to mark bad: 5,7,12 or all")
    p.add_argument("--good", action="append", metavar="IDS", help="cells to mark good: 4 or all")
    p.add_argument(
        "--rule",
        action="append",
        metavar="RULE",
        help="mark bad the cells a rule picks: 'area<50' or 'area>2000' (median area, px), "
        "'frames<40' (trace length), 'border' (touches the image border); repeat for more",
    )
    p.add_argument(
        "--list",
        action="store_true",
        help="list the FOV's cells with their marks (the default when nothing is marked)",
    )
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from pyama_lib.io.marks import fov_marks, mark_cells

    bad, good = cell_ids(args.bad, "--bad"), cell_ids(args.good, "--good")
    marking = bool(bad or good or args.rule)
    if marking:
        result = mark_cells(
            args.results, args.fov, args.channel, bad=bad, good=good, rules=args.rule or ()
        )
        _warn(result.warnings)
        for done in result.channels:
            print(
                f"fov {result.fov} channel {done.channel}: {_marked(done.newly_bad, 'bad')}, "
                f"{_marked(done.newly_good, 'good')}; {done.n_bad} of {done.n_cells} cells bad"
            )
            print(f"wrote: {done.path}")
    if args.list or not marking:
        listed = fov_marks(args.results, args.fov, args.channel)
        if not marking:  # after marking, the warnings were said and the marks are current
            _warn(listed.warnings)
        print("\n".join(cell_lines(listed.fov, listed.cells)))
    return 0


def cell_ids(values: list[str] | None, option: str) -> list[int] | str:
    """The ids of repeated ``--bad``/``--good`` options (``"5,7,12"``), or ``"all"``.

    Examples
    --------
    >>> cell_ids(["5,7", " 12 "], "--bad"), cell_ids(["all"], "--good"), cell_ids(None, "--bad")
    ([5, 7, 12], 'all', [])
    """
    from pyama_lib.io.marks import ALL

    ids: list[int] = []
    for text in values or []:
        for part in filter(None, (p.strip() for p in text.split(","))):
            if part == ALL:
                return ALL
            try:
                ids.append(int(part))
            except ValueError:
                raise ParamsError(
                    f"{option} {text!r}: give cell ids as integers (e.g. 5,7,12) or 'all'"
                ) from None
    return ids


def _marked(ids: list[int], state: str) -> str:
    if not ids:
        return f"none newly {state}"
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return f"{len(ids)} cell(s) newly {state} ({', '.join(map(str, ids[:_SHOWN]))}{more})"


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"pyama inspect: warning: {warning}", file=sys.stderr)


def cell_lines(fov: int, cells: pd.DataFrame) -> list[str]:
    """The listing of :func:`~pyama_lib.io.marks.fov_marks`' cells: a head line, one line per
    cell, and how to mark them.

    Examples
    --------
    >>> import pandas as pd
    >>> cells = pd.DataFrame(
    ...     {"frames": [32], "first_frame": [0], "last_frame": [31], "area": [700.0],
    ...      "position_x": [5.0], "position_y": [float("nan")], "ch_1": ["bad"]},
    ...     index=pd.Index([2], name="cell"),
    ... )
    >>> for line in cell_lines(0, cells)[:3]:
    ...     print(line)
    fov 0: 1 cell(s); channel 1: 1 bad
           cell     frames first-last       area          x          y       ch 1
              2         32       0-31      700.0        5.0          -        bad
    """
    states = [c for c in cells.columns if c.startswith("ch_")]
    counts = [
        f"channel {c[3:]}: "
        + ", ".join(f"{n} {state}" for state, n in cells[c].value_counts().sort_index().items())
        for c in states
    ]
    lines = [f"fov {fov}: {len(cells)} cell(s); " + "; ".join(counts)]
    head = ["cell", "frames", "first-last", "area", "x", "y"] + [f"ch {c[3:]}" for c in states]
    lines.append("".join(f"{h:>11}" for h in head))
    for cell, row in cells.iterrows():
        values = [
            str(cell),
            str(row["frames"]),
            f"{row['first_frame']}-{row['last_frame']}",
            *(_number(row[k]) for k in ("area", "position_x", "position_y")),
            *(row[c] if isinstance(row[c], str) else "-" for c in states),
        ]
        lines.append("".join(f"{v:>11}" for v in values))
    lines.append("mark cells with --bad IDS, --good IDS or --rule RULE (see --help)")
    return lines


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"
