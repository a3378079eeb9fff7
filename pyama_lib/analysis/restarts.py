"""Further starts from a chunk's refined fits, for :func:`~pyama_lib.analysis.fitting.fit_cells`.

Internals, not public API. A refined fit can stop where Gauss-Newton stalls, or in a basin
next to a better one; :func:`further_starts` gives the points to try from there, as rows of
internal coordinates with the cell each belongs to and the parameters it holds. Always:

- where t0 stopped on or within 3 % of a sampling interval of a sample time, t0 on that
  sample time, held, so that the other parameters can finish (the curve's bend at t0 passes
  a data point there: steps across it keep failing, and a t0 creeping towards it zigzags);
- the model's ``restarts`` (near the fit: a symmetric pair pulled apart, and the like).

With ``thorough`` also, unless the curve jumps at t0:

- t0 held on each sample time within its bounds (at most 12, evenly chosen), the others
  from the fit: SS_res along t0 has a local minimum between most pairs of sample times
  (the bend at t0 crosses one), and a start in each finds the lowest;
- the model's ``alternatives`` (maturation: the other side of the t0–km trade-off).

Examples
--------
>>> _profile_times(np.arange(0.0, 3.0, 0.5), 0.0, 1.0).tolist()
[0.0, 0.5, 1.0]
"""

from __future__ import annotations

import numpy as np

from pyama_lib.analysis.solver import Rows

_SNAP = 0.03  # t0 this close to a sample time (of the median interval) also tries it
_PROFILE_MAX = 12  # sample times t0 is held on, at most (thorough)


def further_starts(
    rows: Rows, x: np.ndarray, times: np.ndarray, thorough: bool, jumps: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts ``(m, k)``, the cell of each ``(m,)``, held parameters ``(m, k)``).

    ``x``: one refined fit per cell, internal coordinates; ``times``: the sample times with
    data, sorted; ``jumps``: the curve jumps at t0 (its t0 is already searched per interval).
    """
    model, (n, k) = rows.model, x.shape
    p = rows.to_p(x)
    starts: list[np.ndarray] = []
    cells: list[np.ndarray] = []
    held: list[np.ndarray] = []

    def add(points: np.ndarray, owner: np.ndarray, hold: int | None = None) -> None:
        starts.append(points)
        cells.append(owner)
        held.append(np.broadcast_to(np.arange(k) == (-1 if hold is None else hold), points.shape))

    if "t0" in model.param_names:
        i = model.param_names.index("t0")
        near = times[np.abs(p[:, i, None] - times[None, :]).argmin(axis=1)]
        spacing = np.median(np.diff(times)) if times.size > 1 else np.inf
        # On a bound, LM already holds t0 wherever its gradient points outwards.
        inner = (near > rows.lower[i]) & (near < rows.upper[i])
        kink = np.flatnonzero((np.abs(p[:, i] - near) <= _SNAP * spacing) & inner)
        snapped = x[kink].copy()
        snapped[:, i] = near[kink]
        add(snapped, kink, i)
        if thorough and not jumps:
            for value in _profile_times(times, rows.lower[i], rows.upper[i]):
                moved = x.copy()
                moved[:, i] = value  # t0 is never a log coordinate (its lower bound is 0)
                add(moved, np.arange(n), i)
    for make in (model.restarts, model.alternatives if thorough else None):
        if make is not None:
            alt = make(p).reshape(-1, k)  # NaN rows: none
            use = np.flatnonzero(np.isfinite(alt).all(axis=1))
            owner = np.tile(np.arange(n), alt.shape[0] // n)[use]
            add(rows.to_x(np.clip(alt[use], rows.lower, rows.upper)), owner)
    if not starts:
        return np.empty((0, k)), np.empty(0, dtype=np.intp), np.empty((0, k), dtype=np.bool_)
    return np.concatenate(starts), np.concatenate(cells), np.concatenate(held)


def _profile_times(times: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The sample times within ``[lo, hi]``, at most ``_PROFILE_MAX`` of them, evenly chosen."""
    inside = times[(times >= lo) & (times <= hi)]
    pick = np.linspace(0, inside.size - 1, min(inside.size, _PROFILE_MAX)).round().astype(int)
    return inside[np.unique(pick)]
