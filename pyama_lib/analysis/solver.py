"""The solver behind :func:`~pyama_lib.analysis.fitting.fit_cells`: grid starts and batched LM.

Internals, not public API (names without an underscore are shared with
:mod:`~pyama_lib.analysis.fitting`, which holds the algorithm's description and its
orchestration, ``_fit_chunk``). Every function works on many rows at once: one row is one
start of one cell, ``cell[i]`` the cell of row ``i``.

- :func:`make_grid` / :func:`grid_starts`: the start-search grid of ``model.grid`` and, per
  cell, the best grid point with the linear parameters solved by least squares;
- :class:`Rows`: a chunk's data and the model in internal coordinates (log for rates);
- :func:`levenberg_marquardt`: bounded LM, Nielsen's damping, rows leaving as they stop;
  :func:`_box_step` keeps its steps in the box;
- :func:`best_rows`: each cell's lowest-cost row.

This module imports only :class:`~pyama_lib.analysis.model.Model` (for annotations) and
nothing from :mod:`~pyama_lib.analysis.fitting`: the imports go one way.

Examples
--------
>>> best_rows(np.array([3.0, 1.0, 2.0, 2.0]), np.array([0, 0, 1, 1])).tolist()
[1, 2]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pyama_lib.analysis.model import Model

_FTOL = 1e-8  # success: last relative SS_res change, scipy's default ftol
LAMBDA0, _LAMBDA_MAX = 1e-3, 1e12  # LM damping: initial, and the one at which a row gives up
_CAP_LOG, _CAP_SPAN = 0.7, 0.1  # step limits while ranking: log units, fraction of bounds


def best_rows(cost: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Index of each cell's lowest-cost row, in cell order (ties: the earlier row)."""
    order = np.lexsort((np.arange(cell.size), cost, cell))
    return order[np.r_[True, cell[order][1:] != cell[order][:-1]]]


@dataclass(frozen=True)
class Grid:
    """The start-search grid: parameter rows and their curves, shared by every chunk."""

    params: np.ndarray  # (n_grid, k), linear parameters 0
    b0: np.ndarray  # (n_grid, n_t): the curve with every linear parameter 0
    basis: np.ndarray  # (n_lin, n_grid, n_t): the curve's change per unit of each
    groups: tuple[np.ndarray, ...]  # grid rows sharing a value of the first parameter
    jumps: bool  # the curve jumps at t0: t0's values are one per sample interval
    times: np.ndarray  # the sample times, sorted


def make_grid(
    model: Model,
    t: np.ndarray,
    times: np.ndarray,
    start: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    between: bool = False,
) -> Grid | None:
    """The product of ``model.grid``'s values (within the bounds), curves at ``t``.

    ``times`` are the finite sample times (``t`` has 0 where a time is NaN). With
    ``between``, the first parameter takes the midpoints between its values instead (None
    for a curve that jumps at t0: its grid already has a t0 in every sampling interval).
    """
    names = model.param_names
    lin = [names.index(n) for n in model.linear]
    gridded = [n for n in model.grid if n not in model.linear]
    if not lin or not gridded:
        return None
    times = np.unique(times)
    jumps = "t0" in model.grid and _jumps_at_onset(model, start)
    axes = []
    for name in gridded:
        i = names.index(name)
        values = np.asarray(model.grid[name], dtype=np.float64)
        if name == "t0" and jumps:
            values = _interval_midpoints(times, lower[i], upper[i])
        values = np.unique(np.clip(values, lower[i], upper[i]))
        if between and not axes:
            if jumps or values.size < 2:
                return None
            values = 0.5 * (values[:-1] + values[1:])
        axes.append(values)
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(gridded))
    base = np.tile(start, (mesh.shape[0], 1))
    base[:, [names.index(n) for n in gridded]] = mesh
    if model.canonical is not None:  # other points only repeat curves of canonical ones
        base = base[np.all(model.canonical(base) == base, axis=1)]
    base[:, lin] = 0.0
    n_grid, n_lin = base.shape[0], len(lin)
    probes = np.tile(base, (n_lin + 1, 1))
    for a, i in enumerate(lin):
        probes[(a + 1) * n_grid : (a + 2) * n_grid, i] = 1.0
    curves = model.evaluate(t, probes).reshape(n_lin + 1, n_grid, t.size)
    first = base[:, names.index(gridded[0])]
    groups = tuple(np.flatnonzero(first == v) for v in np.unique(first))
    return Grid(base, curves[0], curves[1:] - curves[0][None], groups, jumps, times)


def _jumps_at_onset(model: Model, start: np.ndarray) -> bool:
    """Whether the curve jumps at ``t0`` (maturation_blocked jumps to ``G0``).

    Then SS_res is a step function of t0 wherever t0 crosses a sample time, which no
    gradient sees.
    """
    p = start[None, :].copy()
    p[0, [model.param_names.index(n) for n in model.linear]] = 1.0
    t0 = p[0, model.param_names.index("t0")]
    before, after = model.evaluate(np.array([t0, t0 + 1e-9]), p)[0]
    return bool(abs(after - before) > 1e-6)


def _interval_midpoints(times: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """t0 values: the middle of each interval between sample times within [lo, hi] (<= 12)."""
    edges = np.unique(np.concatenate([[lo, hi], times[(times > lo) & (times < hi)]]))
    mids = 0.5 * (edges[:-1] + edges[1:])
    return mids[np.linspace(0, mids.size - 1, min(mids.size, 12)).round().astype(int)]


def grid_starts(
    model: Model, grid: Grid, y0: np.ndarray, w: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(n_groups, n_cells, k)``: per group, each cell's grid point of lowest SS_res.

    Also that point's SS_res, ``(n_cells, n_groups)``.

    On grid point ``g`` the curve is ``b0 + sum_a c_a B_a`` in the linear parameters ``c``;
    each cell's ``c`` solves the weighted normal equations, built for all cells and grid
    points at once from matrix products over time.
    """
    lin = [model.param_names.index(n) for n in model.linear]
    b0, basis, n_lin = grid.b0, grid.basis, len(lin)
    wy = w * y0
    dense = bool(np.all(w == 1.0))

    def weighted(curves: np.ndarray) -> np.ndarray:
        """``w @ curves.T``: with no point missing, one sum over time serves every cell."""
        return curves.sum(axis=1)[None, :] if dense else w @ curves.T

    gram = np.empty((y0.shape[0], b0.shape[0], n_lin, n_lin), dtype=np.float64)
    for a in range(n_lin):
        for b in range(a, n_lin):
            gram[..., a, b] = gram[..., b, a] = weighted(basis[a] * basis[b])
    rhs = np.stack([wy @ basis[a].T - weighted(b0 * basis[a]) for a in range(n_lin)], axis=-1)
    yy = (wy * y0).sum(axis=1)[:, None] - 2.0 * wy @ b0.T + weighted(b0 * b0)
    # A tiny ridge keeps points whose curve is 0 everywhere (t0 after the data) solvable.
    ridge = 1e-12 * np.trace(gram, axis1=-2, axis2=-1) + 1e-300
    if n_lin == 2:  # amplitude and offset: Cramer's rule, far cheaper than LAPACK on 2x2
        a, b, d = gram[..., 0, 0] + ridge, gram[..., 0, 1], gram[..., 1, 1] + ridge
        with np.errstate(divide="ignore", invalid="ignore"):
            c0 = (d * rhs[..., 0] - b * rhs[..., 1]) / (a * d - b * b)
            c1 = (a * rhs[..., 1] - b * rhs[..., 0]) / (a * d - b * b)
        coef = np.nan_to_num(np.stack([c0, c1], axis=-1))
    else:
        coef = _solve(gram + ridge[..., None, None] * np.eye(n_lin), rhs)
    coef = np.clip(coef, lower[lin], upper[lin])
    sse = yy + (coef * ((coef[..., :, None] * gram).sum(-2) - 2.0 * rhs)).sum(-1)
    top = np.stack([g[np.argmin(sse[:, g], axis=1)] for g in grid.groups], axis=1)
    starts = grid.params[top]  # (n_cells, n_groups, k)
    starts[..., lin] = coef[np.arange(y0.shape[0])[:, None], top]
    best = np.take_along_axis(sse, top, axis=1)
    return np.clip(starts.transpose(1, 0, 2), lower, upper), best


def _solve(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched ``system @ x = rhs`` (rhs ``(n, k)``); rows that are singular give 0."""
    with np.errstate(all="ignore"):
        try:
            out = np.linalg.solve(system, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:  # an exactly singular row: least squares row by row
            pairs = zip(system, rhs, strict=True)
            out = np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in pairs])
    return np.where(np.isfinite(out), out, 0.0)


def _masked(system: np.ndarray, free: np.ndarray) -> np.ndarray:
    """``system`` restricted to the ``free`` variables (identity rows for the others)."""
    both = free[:, :, None] & free[:, None, :]
    return np.where(both, system, 0.0) + (~free)[:, :, None] * np.eye(free.shape[1])


def _box_step(
    system: np.ndarray, rhs: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Step solving ``system @ step = rhs`` within the box ``[lo, hi]`` around ``x``.

    Variables on a bound their step points out of stay put; variables a first solve would
    carry out are pinned on the bound they cross and the others solved again (clipping
    alone can turn a good step into a bad one).
    """
    lo, hi = np.broadcast_to(lo, x.shape), np.broadcast_to(hi, x.shape)
    free = ~(((x <= lo) & (rhs < 0)) | ((x >= hi) & (rhs > 0)))
    step = _solve(_masked(system, free), rhs * free)
    out = free & ((x + step < lo) | (x + step > hi))
    bent = np.flatnonzero(out.any(axis=1))
    if bent.size:
        inside = np.clip(x[bent] + step[bent], lo[bent], hi[bent])
        pinned = np.where(out[bent], inside - x[bent], 0.0)
        keep = free[bent] & ~out[bent]
        moved = rhs[bent] - (system[bent] @ pinned[..., None])[..., 0]
        step[bent] = np.where(keep, _solve(_masked(system[bent], keep), moved * keep), pinned)
    return np.clip(x + step, lo, hi) - x


class Rows:
    """A chunk's data and the model in internal coordinates ``x``.

    ``x = log p`` for rates (lower bound > 0, bounds >= 100x apart: steps are relative and
    never cross 0), ``p`` otherwise. Methods take each row's cell index, so the starts of a
    cell share its data.
    """

    def __init__(self, model, t, y0, w, lower, upper) -> None:  # noqa: ANN001
        self.model, self.t, self.y0, self.w = model, t, y0, w
        self.dense = bool(np.all(w == 1.0))  # no missing point: skip the weights
        self.lower, self.upper = lower, upper
        with np.errstate(divide="ignore", invalid="ignore"):
            self.logs = (lower > 0) & (upper / lower >= 100.0)
        self.lo = np.where(self.logs, np.log(np.where(self.logs, lower, 1.0)), lower)
        self.hi = np.where(self.logs, np.log(np.where(self.logs, upper, 1.0)), upper)
        linear = np.isin(model.param_names, model.linear)
        cap = np.where(self.logs, _CAP_LOG, _CAP_SPAN * (upper - lower))
        self.cap = np.where(linear, np.inf, cap)

    def box(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Writable per-row copies of the bounds in internal coordinates, ``(n, k)`` each."""
        return np.tile(self.lo, (n, 1)), np.tile(self.hi, (n, 1))

    def to_x(self, p: np.ndarray) -> np.ndarray:
        """Parameters ``(n, k)`` to internal coordinates, clipped into the bounds."""
        x = np.array(p, dtype=np.float64)
        x[:, self.logs] = np.log(np.maximum(x[:, self.logs], 1e-300))
        return np.clip(x, self.lo, self.hi)

    def to_p(self, x: np.ndarray) -> np.ndarray:
        """Internal coordinates ``(n, k)`` back to parameters (within the bounds).

        The clip undoes rounding: ``exp(log(1e-5))`` is an ulp below 1e-5.
        """
        p = x.copy()
        p[:, self.logs] = np.exp(x[:, self.logs])
        return np.clip(p, self.lower, self.upper)

    def canonical(self, x: np.ndarray) -> np.ndarray:
        """``model.canonical`` (same curve) where that lies within the bounds."""
        if self.model.canonical is None:
            return x
        p = self.to_p(x)
        q = self.model.canonical(p)
        # Rounding may put a rate the re-assignment sums an ulp past its bound: that is in.
        slack = 1e-12 * np.maximum(np.abs(self.lower), np.abs(self.upper))
        inside = (q >= self.lower - slack) & (q <= self.upper + slack)
        inside = inside.all(axis=1) & np.isfinite(q).all(axis=1)
        return self.to_x(np.where(inside[:, None], q, p))

    def residual(self, x: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted residuals ``w (y - f)`` and SS_res (inf where not finite)."""
        with np.errstate(all="ignore"):
            r = self.y0[cell] - self.model.evaluate(self.t, self.to_p(x))
            if not self.dense:
                r *= self.w[cell]
            cost = np.einsum("nt,nt->n", r, r)
        return r, np.where(np.isfinite(cost), cost, np.inf)

    def normal_equations(
        self, x: np.ndarray, r: np.ndarray, cell: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gauss-Newton ``J^T J`` and ``J^T r`` in internal coordinates."""
        p = self.to_p(x)
        with np.errstate(all="ignore"):
            jac = self.model.jacobian(self.t, p)
            if not self.dense:
                jac = jac * self.w[cell][..., None]  # a missing point contributes nothing
            jt = jac.transpose(0, 2, 1)
            hess, grad = jt @ jac, (jt @ r[..., None])[..., 0]
            scale = np.where(self.logs, p, 1.0)  # d/dlog p = p d/dp, on the small matrices
            hess *= scale[:, :, None] * scale[:, None, :]
            grad *= scale
        bad = ~(np.isfinite(hess).all(axis=(1, 2)) & np.isfinite(grad).all(axis=1))
        hess[bad], grad[bad] = 0.0, 0.0  # such a row takes no step and soon stops
        return hess, grad


def levenberg_marquardt(
    rows: Rows,
    cell: np.ndarray,
    x: np.ndarray,
    tol: np.ndarray,
    max_iter: int,
    lam: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    capped: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounded LM on every row at once: (x, SS_res, success, damping) per row.

    A row stops when a step gains at most ``tol`` (or the damped step promises no more),
    when damping explodes (no step helps), or after ``max_iter`` iterations. ``success``:
    a step gained at most ``tol``, or promised at most that under mild damping; otherwise
    (stopped by the damping or the iteration limit) only if the last step taken changed
    SS_res by less than 1e-8 of it (scipy's ``ftol``). Rows leave the working arrays as they
    stop, so late iterations, with only slow rows left, cost little.
    """
    n, k = x.shape
    x, lam = x.copy(), lam.copy()
    r, cost = rows.residual(x, cell)
    ok = np.zeros(n, dtype=np.bool_)
    at = np.flatnonzero(np.isfinite(cost))  # rows still iterating
    xa, ca, la = x[at], cost[at], lam[at]
    hess, grad = rows.normal_equations(xa, r[at], cell[at])  # residuals are needed only here
    nu, last = np.full(at.size, 2.0), np.full(at.size, np.inf)
    for _ in range(max_iter):
        if at.size == 0:
            break
        diag = np.diagonal(hess, axis1=1, axis2=2)
        damp = np.maximum(diag, 1e-12 * diag.max(axis=1, keepdims=True) + 1e-300)
        system = hess + (la[:, None] * damp)[:, :, None] * np.eye(k)
        step = _box_step(system, grad, xa, lo[at], hi[at])
        if capped:
            # Short steps keep a start near the basin it began in, as scipy's trust region
            # does from the defaults; long Gauss-Newton jumps along the t0/km trade-off
            # often land in a worse minimum.
            step /= np.maximum(np.max(np.abs(step) / rows.cap, axis=1, keepdims=True), 1.0)
        predicted = 2.0 * (step * grad).sum(1) - np.einsum("ni,nij,nj->n", step, hess, step)
        r_new, c_new = rows.residual(xa + step, cell[at])
        gain = ca - c_new
        accept = gain > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(predicted > 0, gain / predicted, -1.0)
        small = tol[at]
        # A step promising at most tol stops the row; that is convergence when the damping
        # is still mild (else the damping, not the data, made the promise small), and so is
        # a step gaining at most tol.
        promise = ~accept & (predicted >= 0) & (predicted <= small)
        converged = np.where(accept, gain <= small, promise & (la <= 1.0))
        # Nielsen's damping update: smooth decrease on good steps, doubling growth on bad.
        la = np.where(accept, la * np.maximum(1 / 3, 1 - (2 * rho - 1) ** 3), la * nu)
        nu = np.where(accept, 2.0, nu * 2.0)
        last = np.where(accept, gain / np.maximum(c_new, 1e-300), last)
        if accept.any():
            xa[accept] += step[accept]
            ca[accept] = c_new[accept]
            hess[accept], grad[accept] = rows.normal_equations(
                xa[accept], r_new[accept], cell[at[accept]]
            )
        # Stopped otherwise (a small promise under heavy damping, or damping past
        # _LAMBDA_MAX: no step helps any more), a row has converged only if its last step
        # changed SS_res by less than ftol; else, say, a kink in the curve stopped it.
        done = converged | promise | (la > _LAMBDA_MAX)
        if done.any():
            x[at[done]], cost[at[done]], lam[at[done]] = xa[done], ca[done], la[done]
            ok[at[done]] = converged[done] | (last[done] <= _FTOL)
            keep = ~done
            at, xa, ca, la, nu = at[keep], xa[keep], ca[keep], la[keep], nu[keep]
            hess, grad, last = hess[keep], grad[keep], last[keep]
    x[at], cost[at], lam[at] = xa, ca, la  # out of iterations: the best point so far
    ok[at] = last <= _FTOL
    return x, cost, ok, lam
