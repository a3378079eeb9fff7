"""Rules that pick cells to mark bad: too small or too large, too short, touching the border.

A rule is a :class:`MarkRule`, or its text as a person types it: ``"area<50"``,
``"area>2000"``, ``"frames<40"`` or ``"border"``. Measures are per cell, over all its rows in
the FOV's traces:

- ``area``: the median of the cell's area (pixels) over its frames, so one frame of a bad
  segmentation does not decide;
- ``frames``: the number of frames the cell has rows in (its trace length);
- ``border``: the cell touches the image border in at least one frame (part of it is outside
  the image, so its intensity there is short). The traces hold each cell's bounding-box centre,
  not the box, and not the image size, so this is read from the tracked labels recorded in
  ``processing_results.yaml`` (``seg_labeled``: our Zarr array, or PyAMA's ``.npy``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from pyama_lib.core.errors import ParamsError, ResultsFileError

MEASURES: tuple[str, ...] = ("area", "frames", "border")
_OPERATORS: dict[str, Callable[[pd.Series, float], pd.Series]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_COMPARISON = re.compile(r"^\s*(area|frames)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class MarkRule:
    """Cells to mark bad: ``measure`` compared with ``value`` by ``op``, or ``border``.

    Examples
    --------
    >>> MarkRule.parse("area < 50")
    MarkRule(measure='area', op='<', value=50.0)
    >>> str(MarkRule.parse("frames>=100")), str(MarkRule.parse("border"))
    ('frames>=100', 'border')
    """

    measure: str
    op: str = ""
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ParamsError(f"unknown rule measure {self.measure!r}; one of {MEASURES}")
        if (self.measure == "border") != (self.op == ""):
            raise ParamsError(f"rule {self.measure!r} {self.op!r}: {_FORMS}")
        if self.op and self.op not in _OPERATORS:
            raise ParamsError(f"unknown rule operator {self.op!r}; one of {list(_OPERATORS)}")

    @classmethod
    def parse(cls, text: str) -> MarkRule:
        """The rule written as ``area<50``, ``frames<40``, ``area>=2000`` or ``border``."""
        if text.strip() == "border":
            return cls("border")
        match = _COMPARISON.match(text)
        try:
            value = float(match[3]) if match else float("nan")
        except ValueError:
            value = float("nan")
        if not match or not np.isfinite(value):
            raise ParamsError(f"bad rule {text!r}: {_FORMS}")
        return cls(match[1], match[2], value)

    def __str__(self) -> str:
        return (
            self.measure if self.measure == "border" else f"{self.measure}{self.op}{self.value:g}"
        )


_FORMS = "write e.g. 'area<50', 'area>2000', 'frames<40' or 'border'"


def cell_measures(table: pd.DataFrame) -> pd.DataFrame:
    """Per cell of a trace table (rows of several channels may repeat a cell's frames): its
    ``frames``, ``first_frame``, ``last_frame`` and median ``area``, ``position_x``,
    ``position_y`` (NaN where the table lacks the column), indexed by cell.

    Examples
    --------
    >>> rows = pd.DataFrame({"cell": [1, 1, 1, 2], "frame": [0, 1, 2, 1],
    ...                      "area": [50.0, 60.0, 900.0, 10.0]})
    >>> measures = cell_measures(rows)
    >>> measures["frames"].to_dict(), measures["area"].to_dict()
    ({1: 3, 2: 1}, {1: 60.0, 2: 10.0})
    """
    rows = table.assign(
        **{c: np.nan for c in ("area", "position_x", "position_y") if c not in table.columns}
    )
    return rows.groupby("cell").agg(
        frames=("frame", "nunique"),
        first_frame=("frame", "min"),
        last_frame=("frame", "max"),
        area=("area", "median"),
        position_x=("position_x", "median"),
        position_y=("position_y", "median"),
    )


def select_cells(
    rules: Iterable[MarkRule], measures: pd.DataFrame, labels: Path | None, where: str
) -> set[int]:
    """The cells any of ``rules`` picks, of the cells in ``measures`` (:func:`cell_measures`).

    Parameters
    ----------
    labels
        The tracked labels (T, H, W) the ``border`` rule reads; None when there are none.
    where
        What the cells are of (e.g. ``"fov 3"``), for the messages.

    Raises
    ------
    ParamsError
        A rule needs what the traces or the results do not have.
    ResultsFileError
        The labels file cannot be read.

    Examples
    --------
    >>> measures = pd.DataFrame({"frames": [30, 90], "area": [40.0, 400.0]}, index=[1, 2])
    >>> sorted(select_cells([MarkRule.parse("area<50")], measures, None, "fov 0"))
    [1]
    """
    picked: set[int] = set()
    for rule in rules:
        if rule.measure == "border":
            if labels is None:
                raise ParamsError(
                    f"rule 'border': {where} has no tracked labels in processing_results.yaml "
                    "(seg_labeled), and the traces hold cell centres, not their outlines"
                )
            touching = border_cells(labels)
            picked |= {int(c) for c in measures.index if int(c) in touching}
            continue
        column = measures[rule.measure]
        if column.isna().all():
            raise ParamsError(f"rule {rule}: the traces of {where} have no {rule.measure!r} column")
        hit = _OPERATORS[rule.op](column, rule.value)
        picked |= {int(c) for c in measures.index[hit.to_numpy(dtype=bool)]}
    return picked


def border_cells(labels: Path) -> set[int]:
    """The label ids that touch the image border in any frame of a (T, H, W) label stack.

    Reads one frame at a time (a frame is one chunk of our Zarr arrays; PyAMA's ``.npy`` is
    memory-mapped), so memory stays at one frame.

    Raises
    ------
    ResultsFileError
        The labels are missing, unreadable or not a (T, H, W) stack.
    """
    try:
        stack = np.load(labels, mmap_mode="r") if labels.suffix == ".npy" else _zarr(labels)
    except (OSError, ValueError) as exc:
        raise ResultsFileError(
            labels, f"cannot read the tracked labels the border rule needs ({exc})"
        ) from exc
    if stack.ndim != 3:
        raise ResultsFileError(labels, f"tracked labels of shape {stack.shape}, not (T, H, W)")
    found: set[int] = set()
    for t in range(stack.shape[0]):
        frame = np.asarray(stack[t])
        edge = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
        found.update(int(i) for i in np.unique(edge))
    found.discard(0)  # background
    return found


def _zarr(path: Path) -> zarr.Array:
    if not (path / "zarr.json").is_file():
        raise OSError("no Zarr array there")
    return zarr.open_array(path, mode="r")
