"""The built-in expression models: their formulas, analytic Jacobians and symmetries.

PyAMA's models (docs/fidelity.md, fitting), with ``dt = t - t0``, ``offset`` alone while ``dt <= 0``
and offset plus the expression term after:

- ``trivial``: ``ktl/(delta-beta) (1 - exp(-(delta-beta) dt)) exp(-beta dt)``
- ``maturation``: ``ktl [exp(-(beta+km) dt)/(beta-delta+km) - exp(-beta dt)/(beta-delta)
  + km exp(-delta dt)/((beta-delta)(beta-delta+km))]``
- ``maturation_blocked``: ``G0 exp(-beta dt) + Gu0 (exp(-beta dt) - exp(-(beta+km) dt))``

The first two are computed through the divided difference of decays
``D(u, v) = (exp(-u dt) - exp(-v dt)) / (v - u)``: trivial is ``ktl D(beta, delta)`` and
maturation ``ktl (D(delta, beta) - D(delta, beta + km))``. Same functions, but finite where
the printed formulas divide by zero (``beta == delta``), with a series near there. It also
shows their symmetries: trivial is symmetric in ``delta`` and ``beta``, and maturation is
``ktl km`` times the second divided difference of ``exp(-x dt)`` at ``delta``, ``beta`` and
``beta + km``, symmetric in those three rates: up to three parameter sets give one curve.

The registry (:mod:`~pyama_lib.analysis.models`) registers :data:`BUILTIN_MODELS` when it
is imported; this module knows nothing of it.

Examples
--------
>>> [m.name for m in BUILTIN_MODELS] == list(BUILTIN)
True
>>> t = np.array([0.0, 2.0, 5.0])
>>> TRIVIAL.evaluate(t, np.array([[0.0, 10.0, 0.5, 0.5, 1.0]])).round(6)
array([[1.      , 8.357589, 5.10425 ]])
"""

from __future__ import annotations

from functools import partial

import numpy as np

from pyama_lib.analysis.model import Model

_KM_MAX = 30.0  # maturation's upper bound of km, 1/h
_SERIES_BELOW = 1e-4  # |v - u| dt / 2 below which D(u, v) comes from its Taylor series


def _onset(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
    """(t, p, dt, span): float64, ``dt = max(t - t0, 0)`` (n_cells, n_t), span its row max."""
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    span = np.maximum(t.max(initial=0.0) - p[:, :1], 0.0)
    return t, p, np.maximum(t[None, :] - p[:, :1], 0.0), span


def _decay_dd(
    u: np.ndarray,
    v: np.ndarray,
    dt: np.ndarray,
    span: np.ndarray,
    eu: np.ndarray,
    ev: np.ndarray,
    grad: bool,
) -> list[np.ndarray]:
    """``D = (exp(-u dt) - exp(-v dt)) / (v - u)`` and, with ``grad``, dD/du, dD/dv, dD/ddt.

    ``u``, ``v`` are (n, 1) rates, ``span`` each row's largest ``dt``, ``eu``, ``ev`` the
    decays (shared with the caller). The
    quotients lose ~``eps / x`` relative precision where ``x = |v - u| dt / 2`` is small, so
    rows with ``x < 1e-4`` take the series of ``exp(-c dt) dt sinh(x) / x`` around the
    midpoint ``c`` instead (error ~ x^6 / 5040).
    """
    h = v - u
    near = np.abs(h) * span * 0.5 < _SERIES_BELOW
    inv = 1.0 / np.where(near, 1.0, h)  # one division per row: multiplying is cheaper
    d = np.subtract(eu, ev)
    d *= inv
    out = [d]
    if grad:
        d_u = np.multiply(dt, eu)
        np.subtract(d, d_u, out=d_u)
        d_v = np.multiply(dt, ev)
        d_v -= d
        d_dt = np.multiply(v, ev)
        d_dt -= u * eu
        for part in (d_u, d_v, d_dt):
            part *= inv
        out += [d_u, d_v, d_dt]
    rows = np.flatnonzero(near[:, 0])
    if rows.size:
        c, s, tau = 0.5 * (u[rows] + v[rows]), 0.5 * h[rows], dt[rows]
        x2 = (s * tau) ** 2
        ec = np.exp(-c * tau)
        sinhc = 1.0 + x2 / 6.0 + x2 * x2 / 120.0
        out[0][rows] = ec * tau * sinhc
        if grad:
            ds = s * tau * tau * (1.0 / 3.0 + x2 / 30.0 + x2 * x2 / 840.0)  # tau dS/dx
            out[1][rows] = -0.5 * tau * ec * (tau * sinhc + ds)
            out[2][rows] = -0.5 * tau * ec * (tau * sinhc - ds)
            out[3][rows] = ec * (sinhc * (1.0 - c * tau) + s * ds)
    return out


def _decay(rate: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """``exp(-rate dt)``, computed in one buffer."""
    out = np.multiply(-rate, dt)
    return np.exp(out, out=out)


def _columns(n_params: int, dt: np.ndarray) -> np.ndarray:
    """A ``(n_params, n_cells, n_t)`` Jacobian buffer, last column (offset) 1.

    Handed out as ``buffer.transpose(1, 2, 0)``, the ``(n_cells, n_t, n_params)`` view:
    filling columns in place saves the copy ``np.stack`` makes.
    """
    out = np.empty((n_params, *dt.shape), dtype=np.float64)
    out[-1] = 1.0
    return out


def _trivial(t: np.ndarray, p: np.ndarray, grad: bool = False) -> np.ndarray:
    t, p, dt, span = _onset(t, p)
    ktl, delta, beta, offset = p[:, 1:2], p[:, 2:3], p[:, 3:4], p[:, 4:5]
    eb, ed = np.exp(-beta * dt), np.exp(-delta * dt)
    parts = _decay_dd(beta, delta, dt, span, eb, ed, grad)
    if not grad:
        return offset + ktl * parts[0]
    d, d_beta, d_delta, d_dt = parts
    jac = _columns(5, dt)
    np.multiply(-ktl * d_dt, t[None, :] > p[:, :1], out=jac[0])
    jac[1] = d
    np.multiply(ktl, d_delta, out=jac[2])
    np.multiply(ktl, d_beta, out=jac[3])
    return jac.transpose(1, 2, 0)


def _maturation(t: np.ndarray, p: np.ndarray, grad: bool = False) -> np.ndarray:
    t, p, dt, span = _onset(t, p)
    ktl, km, delta, beta, offset = (p[:, i : i + 1] for i in range(1, 6))
    ed, eb, ebk = (_decay(rate, dt) for rate in (delta, beta, beta + km))
    one = _decay_dd(delta, beta, dt, span, ed, eb, grad)
    two = _decay_dd(delta, beta + km, dt, span, ed, ebk, grad)
    # In place where a temporary would do: the arrays are (rows x time points) and the
    # fitter calls this for every row of every iteration.
    if not grad:
        out = np.subtract(one[0], two[0], out=one[0])
        out *= ktl
        out += offset
        return out
    jac = _columns(6, dt)
    np.subtract(two[3], one[3], out=jac[0])
    jac[0] *= ktl
    jac[0] *= t[None, :] > p[:, :1]
    np.subtract(one[0], two[0], out=jac[1])
    np.multiply(-ktl, two[2], out=jac[2])
    np.subtract(one[1], two[1], out=jac[3])
    jac[3] *= ktl
    np.subtract(one[2], two[2], out=jac[4])
    jac[4] *= ktl
    return jac.transpose(1, 2, 0)


def _blocked(t: np.ndarray, p: np.ndarray, grad: bool = False) -> np.ndarray:
    t, p, dt, _ = _onset(t, p)
    g0, gu0, km, beta, offset = (p[:, i : i + 1] for i in range(1, 6))
    on = t[None, :] > p[:, :1]  # the term jumps to G0 at t0: mask rather than rely on dt = 0
    eb, ek = np.exp(-beta * dt) * on, np.exp(-km * dt)
    immature = -np.expm1(-km * dt)  # 1 - exp(-km dt), exact at small km dt
    term = eb * (g0 + gu0 * immature)
    if not grad:
        return offset + term
    jac = _columns(6, dt)
    jac[0] = beta * term - gu0 * km * eb * ek
    jac[1] = eb
    np.multiply(eb, immature, out=jac[2])
    jac[3] = gu0 * eb * dt * ek
    np.multiply(-dt, term, out=jac[4])
    return jac.transpose(1, 2, 0)


def _trivial_canonical(p: np.ndarray) -> np.ndarray:
    """The curve is symmetric in delta and beta: the larger is called delta."""
    p = np.array(p, dtype=np.float64)
    p[:, 2:4] = np.sort(p[:, 2:4], axis=1)[:, ::-1]
    return p


def _maturation_canonical(p: np.ndarray) -> np.ndarray:
    """Same curve with the three rates re-assigned: delta <= beta <= beta + km.

    The fastest rate is ``beta + km``, which may reach beta + 30/h (delta stops at 11, beta
    at 10), with beta the middle one: the most room within the bounds. ``ktl km`` is kept.
    """
    p = np.array(p, dtype=np.float64)
    km, beta = p[:, 2], p[:, 4]
    rates = np.sort(np.stack([p[:, 3], beta, beta + km], axis=1), axis=1)
    new_km = rates[:, 2] - rates[:, 1]
    ok = new_km > 0
    p[ok, 1] *= km[ok] / new_km[ok]
    p[ok, 2], p[ok, 3], p[ok, 4] = new_km[ok], rates[ok, 0], rates[ok, 1]
    return p


def _split_close_rates(cols: tuple[int, ...], p: np.ndarray, factor: float = 1.5) -> np.ndarray:
    """``(1, n, k)``: rows whose rates in ``cols`` nearly coincide, that pair pulled apart.

    On the diagonal of a symmetric pair the gradient across it vanishes (the curve is even
    there), so Gauss-Newton can stop on a saddle; a start off it lets the fit leave. Rows
    without such a pair are NaN.
    """
    p = np.array(p, dtype=np.float64)
    rates = p[:, list(cols)]
    order = np.argsort(rates, axis=1)
    ranked = np.take_along_axis(rates, order, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ranked[:, 1:] / ranked[:, :-1]
    j = np.argmin(ratio, axis=1)
    rows = np.arange(p.shape[0])
    p[rows, np.array(cols)[order[rows, j]]] /= factor
    p[rows, np.array(cols)[order[rows, j + 1]]] *= factor
    p[~(ratio[rows, j] < 1.2)] = np.nan
    return p[None]


def _maturation_restarts(p: np.ndarray) -> np.ndarray:
    """Starts near a canonical maturation fit that Gauss-Newton from it may not reach.

    Close rates pulled apart (:func:`_split_close_rates` on delta, beta, beta + km); for
    slow maturation (``km < beta / 5``) ``km`` 1000x smaller with ``ktl km`` kept: as
    ``km -> 0`` at fixed ``ktl km`` the curve tends to a limit that steps only creep to;
    and for ``km`` on its upper bound, delta and beta exchanged (same rates, smaller km).
    """
    p = np.array(p, dtype=np.float64)
    rates = np.column_stack([p[:, 0], p[:, 3], p[:, 4], p[:, 4] + p[:, 2]])
    split = _split_close_rates((1, 2, 3), rates)[0]
    apart = p.copy()
    apart[:, 3], apart[:, 4], apart[:, 2] = split[:, 1], split[:, 2], split[:, 3] - split[:, 2]
    apart[np.isnan(split[:, 1])] = np.nan
    slow = p * np.array([1.0, 1e3, 1e-3, 1.0, 1.0, 1.0])
    slow[~(p[:, 2] < p[:, 4] / 5)] = np.nan
    # km on its upper bound caps the fastest rate beta + km; with delta and beta exchanged
    # the same rates need a smaller km, so the fit can move on from there. (The default
    # bound: under a narrower one a user sets, this start is not made.)
    swapped = p.copy()
    swapped[:, 3], swapped[:, 4] = p[:, 4], p[:, 3]
    swapped[:, 2] = p[:, 4] + p[:, 2] - p[:, 3]
    capped = (p[:, 2] >= 0.999 * _KM_MAX) & (swapped[:, 2] > 0)
    swapped[:, 1] *= p[:, 2] / np.where(capped, swapped[:, 2], 1.0)
    swapped[~capped] = np.nan
    return np.stack([apart, slow, swapped])


def _maturation_alternatives(p: np.ndarray) -> np.ndarray:
    """``(1, n, k)``: the fit moved to the other side of the t0-km trade-off.

    Fluorescence appears about ``1/km`` after t0, so a late onset with fast maturation and an
    early one with slow maturation fit noisy data nearly alike, in separate basins. A slow
    fit (km < 10/h) moves to km = 29/h (just within the default bound), a fast one to the
    default 1.28/h; t0 keeps ``t0 + 1/km``, and ktl the height ``ktl km / (beta + km)``.
    """
    p = np.array(p, dtype=np.float64)
    km = np.where(p[:, 2] < 10.0, 29.0, 1.28)
    moved = p.copy()
    moved[:, 0] = p[:, 0] + 1.0 / p[:, 2] - 1.0 / km
    moved[:, 1] = p[:, 1] * p[:, 2] / (p[:, 4] + p[:, 2]) * (p[:, 4] + km) / km
    moved[:, 2] = km
    return moved[None]


def _blocked_alternatives(p: np.ndarray) -> np.ndarray:
    """``(1, n, k)``: half of the immature protein moved to the mature, maturation rate swapped.

    With fast maturation (km >= 5/h) the immature protein ``Gu0`` is mature within minutes,
    so ``G0 = 0`` with a large ``Gu0`` fits nearly as well as the split that slower
    maturation gives, in another basin; and the other way round. km moves to 1.28/h (the
    default) or 29/h (just within the bound).
    """
    p = np.array(p, dtype=np.float64)
    moved = p.copy()
    moved[:, 1] = p[:, 1] + 0.5 * p[:, 2]
    moved[:, 2] = 0.5 * p[:, 2]
    moved[:, 3] = np.where(p[:, 3] >= 5.0, 1.28, 29.0)
    return moved[None]


_RATES = (1e-5, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # 1/h

TRIVIAL = Model(
    "trivial",
    ("t0", "ktl", "delta", "beta", "offset"),
    defaults={"t0": 2.0, "ktl": 20.0, "delta": 0.07, "beta": 0.0436275356035, "offset": 0.0},
    bounds={
        "t0": (0.0, 30.0),
        "ktl": (1.0, 1e6),
        "delta": (1e-5, 10.1),
        "beta": (1e-5, 10.0),
        "offset": (-1e6, 1e6),
    },
    evaluate=_trivial,
    jacobian=partial(_trivial, grad=True),
    linear=("ktl", "offset"),
    grid={"t0": (0.0, 1.0, 2.0, 4.0, 7.0, 11.0, 16.0, 22.0), "delta": _RATES, "beta": _RATES},
    canonical=_trivial_canonical,
    restarts=partial(_split_close_rates, (2, 3)),
)

MATURATION = Model(
    "maturation",
    ("t0", "ktl", "km", "delta", "beta", "offset"),
    defaults={"t0": 0.0, "ktl": 1e3, "km": 1.28, "delta": 1e-2, "beta": 5.22e-3, "offset": 0.0},
    bounds={
        "t0": (0.0, 1.0),
        "ktl": (1.0, 5e8),
        "km": (1e-5, _KM_MAX),
        "delta": (1e-5, 11.0),
        "beta": (1e-5, 10.0),
        "offset": (-1e6, 1e6),
    },
    evaluate=_maturation,
    jacobian=partial(_maturation, grad=True),
    linear=("ktl", "offset"),
    grid={"t0": (0.0, 0.5, 1.0), "km": _RATES[1:], "delta": _RATES, "beta": _RATES},
    canonical=_maturation_canonical,
    restarts=_maturation_restarts,
    alternatives=_maturation_alternatives,
)

MATURATION_BLOCKED = Model(
    "maturation_blocked",
    ("t0", "G0", "Gu0", "km", "beta", "offset"),
    defaults={"t0": 0.0, "G0": 100.0, "Gu0": 100.0, "km": 1.28, "beta": 5.22e-3, "offset": 0.0},
    bounds={
        "t0": (0.0, 1.0),
        "G0": (0.0, 1e6),
        "Gu0": (0.0, 1e6),
        "km": (1e-5, 30.0),
        "beta": (1e-5, 10.0),
        "offset": (-1e6, 1e6),
    },
    evaluate=_blocked,
    jacobian=partial(_blocked, grad=True),
    linear=("G0", "Gu0", "offset"),
    # t0's grid is replaced by one value per sample interval: the curve jumps at t0.
    grid={"t0": (0.5,), "km": (0.1, 0.3, 1.28, 5.0), "beta": _RATES},
    alternatives=_blocked_alternatives,
)

BUILTIN = ("trivial", "maturation", "maturation_blocked")

#: The built-ins, in registration order.
BUILTIN_MODELS = (TRIVIAL, MATURATION, MATURATION_BLOCKED)
