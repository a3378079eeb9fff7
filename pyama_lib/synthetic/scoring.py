"""How accurate are traces? Compare them with the ground truth ``pyama synth`` writes.

Matching, per FOV and frame: each trace point is matched to the nearest true cell centre within
``max_distance`` px (true cells are far apart compared with that, so nearest is unambiguous).
A trace *detects* the true cell it matches in most of its points (at least ``min_share`` of
them); a true cell is *found* when a trace detects it.

- recall: found true cells / true cells; precision: detecting traces / traces.
- purity: of the points of detecting traces, the share that match the trace's own cell
  (a trace that jumps to a neighbour loses purity); coverage: of the true cells' points, the
  share covered by a trace that detects that cell.
- id switches: times a trace's matched cell changes from one matched point to the next.
- intensity error: (measured - true) / true over the points of detecting traces that match
  their own cell, where the true intensity is at least ``min_true_share`` of that cell's peak
  (the ratio means nothing before expression starts); median and p90 of its magnitude, the
  signed median, and the signed median within ``border`` px of the image edge.
- misses by kind: unmatched true cells that arrive late (absent in frame 0), leave early
  (absent in the last frame), are small (median area under ``small_area`` px²) or faint. A
  kind the truth's cell table marks in a boolean column of that name (``pyama synth --hard``
  writes all four) is taken from there; late, leaving and small are derived otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from pyama_lib.core.errors import InputDataError, PathError

_KEY = ["fov", "cell"]
_POINT = ["fov", "cell", "frame", "position_x", "position_y", "intensity_total"]


@dataclass(frozen=True)
class Score:
    """The numbers of :func:`score_traces` (see the module docstring)."""

    n_true_cells: int
    n_traces: int
    recall: float
    precision: float
    purity: float
    coverage: float
    id_switches: int
    intensity_error: dict[str, float]
    misses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_traces(
    traces: pd.DataFrame,
    truth: pd.DataFrame,
    image_shape: tuple[int, int],
    *,
    truth_cells: pd.DataFrame | None = None,
    max_distance: float = 5.0,
    min_share: float = 0.5,
    min_true_share: float = 0.1,
    border: float = 40.0,
    small_area: float = np.pi * 12**2,
    marks: tuple[str, ...] = ("late", "leaving", "small", "faint"),
    feature: str = "intensity_total",
) -> Score:
    """Score one fluorescence channel's ``traces`` against the ``truth`` of the same channel.

    Parameters
    ----------
    traces : DataFrame
        fov, cell, frame, position_x, position_y, intensity_total (PyAMA Flow's traces; only
        the rows to score, e.g. the ``good`` ones).
    truth : DataFrame
        The same columns for the true cells (``<base>_truth_traces.csv`` of one channel), plus
        ``area``.
    image_shape : (int, int)
        Height and width of the frames, for the border zone.
    truth_cells : DataFrame, optional
        The truth's cell table (``<base>_truth_cells.csv``): its ``marks`` columns that exist
        say which cells are of that kind of miss.
    max_distance, min_share, min_true_share, border, small_area : float
        See the module docstring.
    feature : str
        The traces' column compared with the true ``intensity_total`` (e.g.
        ``intensity_local``).

    Returns
    -------
    Score

    Examples
    --------
    >>> truth = pd.DataFrame({"fov": 0, "cell": 1, "frame": [0, 1, 2, 3],
    ...     "position_x": 50.0, "position_y": 50.0, "intensity_total": 100.0, "area": 700.0})
    >>> found = truth.assign(cell=7, position_x=51.0, intensity_total=[100.0, 102, 98, 103])
    >>> score = score_traces(found, truth, (100, 100))
    >>> score.recall, score.precision, score.intensity_error["median_abs"]
    (1.0, 1.0, 0.02)
    """
    _check(traces, "traces", [*_POINT[:-1], feature])
    _check(truth, "truth", [*_POINT, "area"])
    if feature != "intensity_total":
        traces = traces.drop(columns="intensity_total", errors="ignore")
        traces = traces.rename(columns={feature: "intensity_total"})
    points = traces[_POINT].astype({"fov": np.int64, "cell": np.int64}).reset_index(drop=True)
    truth = truth.astype({"fov": np.int64, "cell": np.int64})
    points["true_cell"] = _nearest_true_cell(points, truth, max_distance)
    own = _own_cells(points, min_share)
    points = points.join(own, on=_KEY)
    points["own"] = points["true_cell"].eq(points["detects"]) & points["detects"].ge(0)

    detecting = own[own["detects"] >= 0]
    true_keys = truth[_KEY].drop_duplicates()
    found = detecting.reset_index()[["fov", "detects"]].drop_duplicates()
    found = set(zip(found["fov"], found["detects"], strict=True))
    n_true, n_traces = len(true_keys), len(own)

    in_detecting = points["detects"] >= 0
    covered = points[points["own"]].drop_duplicates(["fov", "detects", "frame"])
    return Score(
        n_true_cells=n_true,
        n_traces=n_traces,
        recall=_ratio(len(found), n_true),
        precision=_ratio(len(detecting), n_traces),
        purity=_ratio(int(points["own"].sum()), int(in_detecting.sum())),
        coverage=_ratio(len(covered), len(truth)),
        id_switches=_id_switches(points),
        intensity_error=_intensity_error(points, truth, image_shape, min_true_share, border),
        misses=_misses(truth, truth_cells, marks, found, small_area),
    )


def _check(table: pd.DataFrame, name: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputDataError(f"the {name} table lacks the column(s) {', '.join(missing)}")


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else float("nan")


def _nearest_true_cell(points: pd.DataFrame, truth: pd.DataFrame, radius: float) -> np.ndarray:
    """The true cell nearest each point in its FOV and frame, -1 when none is within radius."""
    matched = np.full(len(points), -1, dtype=np.int64)
    true_groups = dict(list(truth.groupby(["fov", "frame"], sort=False)))
    for key, rows in points.groupby(["fov", "frame"], sort=False).indices.items():
        cells = true_groups.get(key)
        if cells is None:
            continue
        tree = cKDTree(cells[["position_x", "position_y"]].to_numpy(np.float64))
        where = points.loc[rows, ["position_x", "position_y"]].to_numpy(np.float64)
        finite = np.isfinite(where).all(axis=1)  # a point without a position matches nothing
        rows, where = rows[finite], where[finite]
        distance, index = tree.query(where, distance_upper_bound=radius)
        hit = np.isfinite(distance)
        matched[rows[hit]] = cells["cell"].to_numpy(np.int64)[index[hit]]
    return matched


def _own_cells(points: pd.DataFrame, min_share: float) -> pd.DataFrame:
    """Per trace: the true cell it detects (-1: none) and its number of points."""
    counts = points[points["true_cell"] >= 0].groupby([*_KEY, "true_cell"]).size()
    best = counts.sort_values(ascending=False).reset_index(name="n")
    best = best.drop_duplicates(_KEY).set_index(_KEY)
    sizes = points.groupby(_KEY).size().rename("points").to_frame()
    own = sizes.join(best)
    share = own["n"].fillna(0) / own["points"]
    own["detects"] = np.where(share >= min_share, own["true_cell"].fillna(-1), -1).astype(np.int64)
    return own[["detects"]]


def _id_switches(points: pd.DataFrame) -> int:
    matched = points[points["true_cell"] >= 0].sort_values([*_KEY, "frame"])
    same_trace = matched[_KEY].eq(matched[_KEY].shift()).all(axis=1)
    changed = matched["true_cell"].ne(matched["true_cell"].shift())
    return int((same_trace & changed).sum())


def _intensity_error(
    points: pd.DataFrame,
    truth: pd.DataFrame,
    image_shape: tuple[int, int],
    min_true_share: float,
    border: float,
) -> dict[str, float]:
    true = truth[["fov", "cell", "frame", "position_x", "position_y", "intensity_total"]]
    peak = true.groupby(_KEY)["intensity_total"].transform("max")
    true = true[(true["intensity_total"] > 0) & (true["intensity_total"] >= min_true_share * peak)]
    own = points.loc[points["own"], ["fov", "detects", "frame", "intensity_total"]]
    pairs = own.rename(columns={"detects": "cell"}).merge(
        true, on=["fov", "cell", "frame"], suffixes=("", "_true")
    )
    error = (pairs["intensity_total"] - pairs["intensity_total_true"]) / pairs[
        "intensity_total_true"
    ]
    # a measurement that is NaN (intensity_local without a background ring) is no point
    measured = np.isfinite(error)
    pairs, error = pairs[measured], error[measured]
    height, width = image_shape
    x, y = pairs["position_x"], pairs["position_y"]
    near = (x < border) | (y < border) | (x > width - 1 - border) | (y > height - 1 - border)
    return {
        "n_points": len(error),
        "median_abs": _stat(error.abs(), 0.5),
        "p90_abs": _stat(error.abs(), 0.9),
        "signed_median": _stat(error, 0.5),
        "n_border_points": int(near.sum()),
        "border_signed_median": _stat(error[near], 0.5),
    }


def _stat(values: pd.Series, q: float) -> float:
    return round(float(values.quantile(q)), 6) if len(values) else float("nan")


def _misses(
    truth: pd.DataFrame,
    truth_cells: pd.DataFrame | None,
    marks: tuple[str, ...],
    found: set[tuple[Any, int]],
    small_area: float,
) -> dict[str, int]:
    per_cell = truth.groupby(_KEY).agg(
        first=("frame", "min"), last=("frame", "max"), area=("area", "median")
    )
    first, last = truth["frame"].min(), truth["frame"].max()
    kinds = pd.DataFrame(
        {
            "late": per_cell["first"] > first,
            "leaving": per_cell["last"] < last,
            "small": per_cell["area"] < small_area,
        }
    )
    if truth_cells is not None:
        cells = truth_cells.astype({"fov": np.int64, "cell": np.int64})
        cells = cells.drop_duplicates(_KEY).set_index(_KEY)
        for mark in (m for m in marks if m in cells.columns):
            kinds[mark] = cells[mark].astype(bool).reindex(kinds.index, fill_value=False)
    missed = ~pd.Series([key in found for key in kinds.index], index=kinds.index)
    counts = {"all": int(missed.sum())}
    counts.update({kind: int((missed & kinds[kind]).sum()) for kind in kinds.columns})
    return counts


def score_output(
    out_dir: str | Path,
    truth_dir: str | Path,
    channel: int = 1,
    feature: str = "intensity_total",
) -> Score:
    """Score the good traces of ``channel`` in a processed output folder against the truth
    ``pyama synth`` wrote into ``truth_dir`` (beside the acquisition it scored), over the FOVs
    the output has traces of."""
    from pyama_lib.io import open_acquisition
    from pyama_lib.io.traces import list_traces_partitions, read_traces_parquet

    truth_dir = Path(truth_dir)
    truth_csv = _only(truth_dir, "*_truth_traces.csv", "the truth of `pyama synth`")
    acquisition = _only(truth_dir, "*.ome.tif", "the synthetic acquisition")
    with open_acquisition(acquisition) as acq:
        shape = (acq.height, acq.width)
    dataset = Path(out_dir) / "traces.parquet"
    traces = read_traces_parquet(dataset, channels=[channel])  # names a missing dataset
    truth = pd.read_csv(truth_csv)
    # the FOVs the output extracted (a FOV without cells too): others are not misses
    fovs = {fov for fov, c, _ in list_traces_partitions(dataset) if c == channel}
    truth = truth[(truth["channel"] == channel) & truth["fov"].isin(fovs)]
    if truth.empty:
        raise PathError(
            truth_csv, f"no truth for fluorescence channel {channel} in the output's FOVs"
        )
    cells_csv = truth_csv.with_name(truth_csv.name.replace("_truth_traces", "_truth_cells"))
    cells = pd.read_csv(cells_csv) if cells_csv.is_file() else None
    good = traces[traces["good"]]
    return score_traces(good, truth, shape, truth_cells=cells, feature=feature)


def _only(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if len(found) != 1:
        problem = "not found" if not found else f"{len(found)} files match {pattern}"
        raise PathError(folder, f"{what} ({pattern}): {problem}")
    return found[0]
