"""Fit an expression model to every cell's trace at once: vectorised bounded Levenberg-Marquardt.

PyAMA calls ``scipy.optimize.least_squares`` once per cell with a finite-difference Jacobian
(~10 cells/s). Here every cell of a chunk, from every start, is one row of the same arrays:
one model evaluation and one analytic Jacobian serve them all, the damped normal equations
``(J^T J + lambda diag(J^T J)) step = J^T r`` are solved for all rows by one batched
``np.linalg.solve`` on ``(n, k, k)``, and rows leave the arrays as they converge.

Per cell (docs/fidelity.md, fitting, otherwise):

1. Points where ``t`` or ``y`` is NaN are dropped (weight 0); with fewer points than
   parameters the cell is not fitted: ``success`` False, the model's defaults, R^2 0.
2. Starts: the defaults with the user's overrides (PyAMA's only start), and the best point
   of a grid search for each value of the grid's first parameter (t0): on every grid point
   the amplitude and offset (``model.linear``) are solved by linear least squares for all
   cells at once, a few matrix products. Of those t0 values a cell starts from the two
   thirds (rounded up) whose best curves fit it best; a flat or noisy trace (no grid curve
   explains 20 % of its variance), which has many shallow minima, from all of them and
   also from each midpoint between two of them. For a curve that jumps at t0
   (maturation_blocked) each interval between sample times gets a start, kept for every
   cell, and its fit keeps t0 inside it.
3. Levenberg-Marquardt, Nielsen's damping. Rates (lower bound > 0, bounds >= 100x apart)
   move as logarithms. A parameter on a bound its gradient pushes against is held; others
   a step would carry out are pinned on the bound and the rest re-solved. Each start runs to
   a loose tolerance with short steps (<= 0.7 in log rate, 0.1 of t0's range), so it settles
   in the basin nearest to it as scipy's trust region does; the best is refined, in the
   model's canonical form, to ``SS_res`` changes below 1e-12 SS_tot (for a fit below
   R^2 0.2, 1e-10 of its SS_res if that is more). Its ``restarts`` are tried too, as is
   t0 on a sample time where it stopped on or within 3 % of a sampling interval of one
   (the curve bends there, and steps across a bend fail). A ``thorough`` fit also starts
   again from t0 held on each sample time and from the model's ``alternatives``, then
   refines the best freely (:mod:`~pyama_lib.analysis.restarts`).
4. ``R^2 = 1 - SS_res/SS_tot`` clipped to [0, 1]; ``success`` as scipy's: the last step
   changed SS_res by less than 1e-8 of it.

What the data determine (and what not). Maturation is ``ktl km`` times a function symmetric
in its three rates ``delta``, ``beta``, ``beta + km`` (see :mod:`~pyama_lib.analysis.models`),
so only that product and the set of rates are determined, not which rate is which: results
are reported with ``delta <= beta <= beta + km``. Beyond that exact symmetry these trade off:

- ``ktl`` and ``km``: with slow maturation only ``ktl km`` matters (the onset rises as
  ``ktl km dt^2 / 2``), with fast maturation (``km`` above ~1/frame interval) ``km`` hardly
  matters and often sits on its bound;
- ``t0`` and ``km``: fluorescence appears about ``1/km`` after ``t0``, so a later onset with
  faster maturation fits nearly as well (separate local minima with noisy data);
- ``delta`` and ``beta`` (trivial model: exactly interchangeable, the larger is called
  delta): constrained only if the movie shows the peak and the decline after it.

The curve itself is what the data fix: t0 (to ~5 % on clean data), the offset and the
height over the movie (peak or plateau). maturation_blocked: the level at t0 and the decay
``beta``; t0 itself only to within a sampling interval.

Layout: this module holds the public API and the per-chunk orchestration (``_rank``: the
starts of a few hundred cells; ``_fit_chunk``: refine the winners of up to 1024 cells
together, try the restarts); the grid search and the batched solver are in
:mod:`~pyama_lib.analysis.solver`, which imports nothing from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
import pandas as pd

from pyama_lib.analysis.model import Model
from pyama_lib.analysis.models import get_model, resolve_start_and_bounds
from pyama_lib.analysis.restarts import further_starts
from pyama_lib.analysis.solver import (
    LAMBDA0,
    Grid,
    Rows,
    best_rows,
    grid_starts,
    levenberg_marquardt,
    make_grid,
)
from pyama_lib.core.errors import InputDataError

#: Cells fitted together; per array ~ chunk x starts x n_t x n_params x 8 bytes.
CHUNK_CELLS = 256
_POLISH_CELLS = 1024  # cells refined together (one row each)
_RANK = (30, 1e-6)  # every start: iterations, tolerance (of SS_tot)
_RTOL = 1e-12  # the winner's tolerance: smallest SS_res decrease worth another iteration
_FLAT_R2 = 0.2  # a cell fitted (or gridded) below this R^2 is flat: more starts, looser end
_FLAT_RTOL = 1e-10  # a flat cell's tolerance, of its SS_res
_MAX_ITER = 150  # the refinement's; restarts, which begin near a fit, get 2/3 of it

#: The start-search grid, and a call giving the grid in between (for flat cells).
Grids = tuple[Grid | None, Callable[[], Grid | None]]


@dataclass(frozen=True)
class FitResult:
    """The fit of one model to many cells; row ``i`` of every array is cell ``i``.

    Attributes
    ----------
    model : Model
        The model fitted.
    params : np.ndarray
        float64 ``(n_cells, n_params)``, columns in ``model.param_names`` order.
    success : np.ndarray
        bool ``(n_cells,)``: enough points and the solver converged.
    r_squared : np.ndarray
        float64 ``(n_cells,)`` in [0, 1] (0 for cells not fitted).
    n_points : np.ndarray
        int64 ``(n_cells,)``: points used (not NaN).

    Examples
    --------
    >>> fit = fit_cells(np.arange(8.0), np.full((2, 8), np.nan), "maturation")
    >>> fit.params.shape, fit.success.tolist(), fit.param("ktl").tolist()
    ((2, 6), [False, False], [1000.0, 1000.0])
    """

    model: Model
    params: np.ndarray
    success: np.ndarray
    r_squared: np.ndarray
    n_points: np.ndarray

    def param(self, name: str) -> np.ndarray:
        """One parameter's column, e.g. ``result.param("ktl")``."""
        return self.params[:, self.model.param_names.index(name)]


def fit_cells(
    t_hours: np.ndarray,
    y: np.ndarray,
    model: str | Model = "maturation",
    params: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    *,
    chunk_cells: int = CHUNK_CELLS,
    max_iter: int = _MAX_ITER,
    thorough: bool = False,
) -> FitResult:
    """Fit ``model`` to every row of ``y`` (one cell per row, NaN for missing points).

    Parameters
    ----------
    t_hours : np.ndarray
        ``(n_t,)`` time of each column, hours.
    y : np.ndarray
        ``(n_cells, n_t)`` intensities; a 1-D array is one cell.
    model : str or Model
        A registered model name or a :class:`~pyama_lib.analysis.model.Model`.
    params, bounds : Mapping, optional
        Initial values and ``(min, max)`` bounds overriding the model's (not ``t0`` or
        ``offset``), checked by :func:`~pyama_lib.analysis.models.resolve_start_and_bounds`.
    chunk_cells : int
        Cells whose starts are ranked together (bounds memory; a few hundred is fastest).
        The winners of up to 1024 cells are then refined together.
    max_iter : int
        Iteration limit of the final refinement (the restarts get two thirds of it).
    thorough : bool
        Also start each cell's fit again from t0 held on every sample time within its
        bounds (up to 12) and from the model's ``alternatives`` (maturation: the other side
        of the t0-km trade-off), then refine the best: several times the time, and never a
        lower R^2 than the default (its starts are a superset). On the benchmark's
        maturation traces no cell then ends below PyAMA's R^2; by default a few do
        (docs/benchmarks.md).

    Returns
    -------
    FitResult

    Raises
    ------
    ParamsError
        Unknown model, or a bad initial value or bound.
    InputDataError
        When ``t_hours`` and ``y`` do not fit together.

    Examples
    --------
    >>> from pyama_lib.analysis.models import get_model
    >>> t = np.linspace(0.0, 30.0, 181)
    >>> truth = np.array([[0.5, 3000.0, 1.0, 0.1, 0.01, 20.0]])
    >>> fit = fit_cells(t, get_model("maturation").evaluate(t, truth))
    >>> bool(fit.success[0]), round(float(fit.r_squared[0]), 6), round(float(fit.param("t0")[0]), 3)
    (True, 1.0, 0.5)
    """
    model = get_model(model)
    start, lower, upper = resolve_start_and_bounds(model, params, bounds)
    t = np.asarray(t_hours, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64)
    y = y[None, :] if y.ndim == 1 else y
    if y.ndim != 2 or y.shape[1] != t.size:
        raise InputDataError(f"y must be (n_cells, {t.size}) to match t_hours, got {y.shape}")
    _raise_malloc_threshold()
    n_cells, chunk = y.shape[0], max(1, int(chunk_cells))
    out = np.tile(model.default_vector(), (n_cells, 1))
    success = np.zeros(n_cells, dtype=np.bool_)
    r2 = np.zeros(n_cells, dtype=np.float64)
    valid = np.isfinite(y) & np.isfinite(t)[None, :]
    n_points = valid.sum(axis=1).astype(np.int64)
    fitted = np.flatnonzero(n_points >= model.n_params)
    t_safe = np.where(np.isfinite(t), t, 0.0)  # masked out anyway; keeps NaN out of exp()
    times = t[np.isfinite(t)]
    grid = make_grid(model, t_safe, times, start, lower, upper) if fitted.size else None
    # The grid in between serves only flat cells: built when the first one turns up.
    between = cache(partial(make_grid, model, t_safe, times, start, lower, upper, between=True))
    grids = (grid, between)
    for first in range(0, fitted.size, _POLISH_CELLS):
        rows = fitted[first : first + _POLISH_CELLS]
        w = valid[rows].astype(np.float64)
        y0 = np.where(valid[rows], y[rows], 0.0)
        p, cost, ok = _fit_chunk(
            model, grids, t_safe, y0, w, start, lower, upper, max_iter, chunk, thorough
        )
        ss_tot = _ss_tot(y0, w)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2[rows] = np.where(ss_tot > 0, np.clip(1.0 - cost / ss_tot, 0.0, 1.0), 0.0)
        out[rows], success[rows] = p, ok & np.isfinite(cost)
    return FitResult(model, out, success, r2, n_points)


def fit_table(result: FitResult) -> pd.DataFrame:
    """PyAMA's ``_fitted.csv`` table: cell_id, model_type, success, r_squared, parameters.

    ``cell_id`` is the cell's 0-based position (its column in the analysis CSV).

    Examples
    --------
    >>> t = np.linspace(0.0, 10.0, 4)
    >>> table = fit_table(fit_cells(t, np.full((1, 4), np.nan), "trivial"))
    >>> table.columns.tolist()
    ['cell_id', 'model_type', 'success', 'r_squared', 't0', 'ktl', 'delta', 'beta', 'offset']
    >>> table[["success", "r_squared", "ktl"]].to_dict("records")
    [{'success': False, 'r_squared': 0.0, 'ktl': 20.0}]
    """
    n = result.params.shape[0]
    columns: dict[str, object] = {
        "cell_id": np.arange(n, dtype=np.int64),
        "model_type": [result.model.name] * n,
        "success": result.success.astype(np.bool_),
        "r_squared": result.r_squared.astype(np.float64),
    }
    for i, name in enumerate(result.model.param_names):
        columns[name] = result.params[:, i].astype(np.float64)
    return pd.DataFrame(columns)


def fit_chunk_table(
    t: np.ndarray,
    y: np.ndarray,
    first_id: int,
    model: str,
    params: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    thorough: bool = False,
) -> pd.DataFrame:
    """:func:`fit_table` of the cells ``y`` of one chunk, whose first is column ``first_id``
    of its analysis CSV (a module-level function, so a worker process can run it)."""
    table = fit_table(fit_cells(t, y, model, params, bounds, thorough=thorough))
    table["cell_id"] += first_id
    return table


_MALLOC_TUNED = False


def _raise_malloc_threshold() -> None:
    """Let the allocator reuse a chunk's ~1 MB temporaries instead of mapping them anew.

    glibc serves blocks above its mmap threshold (128 KiB at start) with fresh pages and unmaps them
    on free, so every temporary of every iteration page-faults, which costs more CPU than the fit
    itself. glibc raises the threshold to the largest mapped block freed, so one 16 MiB block freed
    once per process fixes it (elsewhere this does nothing).
    """
    global _MALLOC_TUNED
    if not _MALLOC_TUNED:
        block = np.empty(2 * 1024 * 1024, dtype=np.float64)
        del block
        _MALLOC_TUNED = True


def _ss_tot(y0: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each row's weighted total sum of squares about its weighted mean."""
    mean = (w * y0).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)
    return (w * (y0 - mean[:, None]) ** 2).sum(axis=1)


def _is_flat(ss_res: np.ndarray, ss_tot: np.ndarray) -> np.ndarray:
    """A fit (or the grid's best curve) explaining less than ``_FLAT_R2`` of a cell's variance:
    a flat or noisy trace."""
    return ss_res > (1.0 - _FLAT_R2) * ss_tot


def _rank(
    model: Model,
    grids: Grids,
    rows: Rows,
    cells: np.ndarray,
    tol: np.ndarray,
    start: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Each of ``cells``' best start after a short, capped LM: (x, damping, lo, hi, SS_res).

    The starts: the defaults and the best point of the cell's best groups of the grid; for
    a cell the grid explains poorly (a flat or noisy trace, whose SS_res has many shallow
    minima), of every group, and of every group of the grid in between.
    """
    grid, between = grids
    starts, cell = [start[None, :].repeat(cells.size, axis=0)], [cells]
    if grid is not None:
        y0, w = rows.y0[cells], rows.w[cells]
        found, sse = grid_starts(model, grid, y0, w, rows.lower, rows.upper)
        flat = _is_flat(sse.min(axis=1), tol[cells])
        # A cell the grid explains starts only from its best groups: in the others even
        # the best curve fits worse from the outset. A flat cell starts from all of them,
        # and so does every cell where t0 is confined to a sampling interval per start
        # (a curve that jumps at t0: there the data's SS_res is a step function of t0).
        place = np.argsort(np.argsort(sse, axis=1), axis=1)  # each group's rank per cell
        best = -(-2 * sse.shape[1] // 3)  # two thirds of the groups, rounded up
        keep = ((place < best) | flat[:, None] | grid.jumps).T
        starts.append(found[keep])
        cell.append(np.broadcast_to(cells, keep.shape)[keep])
        flat_idx = np.flatnonzero(flat)  # the flat cells also start in between
        if flat_idx.size and (mid := between()) is not None:
            found, _ = grid_starts(model, mid, y0[flat_idx], w[flat_idx], rows.lower, rows.upper)
            starts.append(found.reshape(-1, start.size))
            cell.append(np.tile(cells[flat_idx], found.shape[0]))
    cell = np.concatenate(cell)
    x = rows.to_x(np.concatenate(starts))
    lo, hi = rows.box(x.shape[0])
    if grid is not None and grid.jumps:  # t0 stays in the sampling interval it starts in
        i, times = model.param_names.index("t0"), grid.times
        j = np.searchsorted(times, x[:, i], side="right") - 1
        lo[:, i] = np.where(j >= 0, np.maximum(lo[:, i], times[np.clip(j, 0, None)]), lo[:, i])
        above = times[np.minimum(j + 1, times.size - 1)] - 1e-9  # t0 on it would switch it off
        hi[:, i] = np.where(j + 1 < times.size, np.minimum(hi[:, i], above), hi[:, i])
    lam = np.full(cell.size, LAMBDA0)
    x, cost, _, lam = levenberg_marquardt(
        rows, cell, x, _RANK[1] * tol[cell], _RANK[0], lam, lo, hi
    )
    best = best_rows(cost, cell)
    return x[best], lam[best], lo[best], hi[best], cost[best]


def _fit_chunk(
    model: Model,
    grids: Grids,
    t: np.ndarray,
    y0: np.ndarray,
    w: np.ndarray,
    start: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    max_iter: int,
    rank_cells: int,
    thorough: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(params, SS_res, success) of a chunk's cells: rank the starts, refine the best.

    The starts are ranked ``rank_cells`` cells at a time (their rows are several per cell);
    the refinement then runs on all cells together, so its last iterations, with only a
    few slow cells left, are paid once per chunk rather than once per ranking group.
    """
    n = y0.shape[0]
    tol = np.maximum(_ss_tot(y0, w), 1e-300)
    rows = Rows(model, t, y0, w, lower, upper)
    groups = [np.arange(a, min(a + rank_cells, n)) for a in range(0, n, rank_cells)]
    ranked = [_rank(model, grids, rows, cells, tol, start) for cells in groups]
    x, lam, lo, hi, cost = (np.concatenate(part) for part in zip(*ranked, strict=True))
    # A fit of a flat trace is a fit of its noise: its shallow valleys take the most
    # iterations, and gains below 1e-10 of its SS_res (scipy stops at 1e-8) change nothing.
    flat = _is_flat(cost, tol)
    ftol = np.where(flat, np.maximum(_RTOL * tol, _FLAT_RTOL * cost), _RTOL * tol)
    x, cell = rows.canonical(x), np.arange(n)
    x, cost, ok, _ = levenberg_marquardt(rows, cell, x, ftol, max_iter, lam, lo, hi, capped=False)
    # Further starts where Gauss-Newton stalls or a better basin may lie near (restarts).
    times = np.unique(t[w.any(axis=0)])
    jumps = grids[0] is not None and grids[0].jumps
    x2, owner2, held2 = further_starts(rows, x, times, thorough, jumps)
    if owner2.size:
        lo2, hi2 = rows.box(owner2.size)
        lo2, hi2 = np.where(held2, x2, lo2), np.where(held2, x2, hi2)
        lam2 = np.full(owner2.size, LAMBDA0)
        limit = max(1, 2 * max_iter // 3)
        x2, cost2, ok2, _ = levenberg_marquardt(
            rows, owner2, x2, ftol[owner2], limit, lam2, lo2, hi2, capped=False
        )
        cell = np.concatenate([np.arange(n), owner2])
        best = best_rows(np.r_[cost, cost2], cell)
        x, cost, ok = np.r_[x, x2][best], np.r_[cost, cost2][best], np.r_[ok, ok2][best]
    # Thorough: every cell's best once more, freely and from fresh damping. A start with t0
    # held ended held; the others gain a little too (refining only the held winners left
    # cells short of PyAMA on the benchmark, and was no faster).
    if thorough and not jumps:
        lo, hi = rows.box(n)
        lam = np.full(n, LAMBDA0)
        x3, cost3, ok3, _ = levenberg_marquardt(
            rows, np.arange(n), rows.canonical(x), ftol, max_iter, lam, lo, hi, capped=False
        )
        # Only a real gain counts: the canonical form's SS_res may differ in the last digits.
        gain = cost3 < cost
        x[gain], cost[gain], ok[gain] = x3[gain], cost3[gain], ok3[gain]
    return rows.to_p(rows.canonical(x)), cost, ok
