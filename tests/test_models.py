"""Models and their registry: formulas, analytic Jacobians, user overrides."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyama_lib.analysis.model import Model
from pyama_lib.analysis.models import (
    get_model,
    model_names,
    register_model,
    resolve_start_and_bounds,
    unregister_model,
)
from pyama_lib.core.errors import ParamsError

T = np.array([0.0, 0.3, 0.55, 1.0, 2.5, 7.0, 13.0, 30.0])


def trivial_formula(t: float, t0, ktl, delta, beta, offset) -> float:  # noqa: ANN001
    """The trivial model (docs/fidelity.md), written out with math for one time point."""
    dt = t - t0
    if dt <= 0:
        return offset
    return offset + ktl / (delta - beta) * (1 - math.exp(-(delta - beta) * dt)) * math.exp(
        -beta * dt
    )


def maturation_formula(t: float, t0, ktl, km, delta, beta, offset) -> float:  # noqa: ANN001
    dt = t - t0
    if dt <= 0:
        return offset
    bmd = beta - delta
    return offset + ktl * (
        math.exp(-(beta + km) * dt) / (bmd + km)
        - math.exp(-beta * dt) / bmd
        + km * math.exp(-delta * dt) / (bmd * (bmd + km))
    )


def blocked_formula(t: float, t0, g0, gu0, km, beta, offset) -> float:  # noqa: ANN001
    dt = t - t0
    if dt <= 0:
        return offset
    return (
        offset
        + g0 * math.exp(-beta * dt)
        + gu0 * (math.exp(-beta * dt) - math.exp(-(beta + km) * dt))
    )


FORMULAS = {
    "trivial": trivial_formula,
    "maturation": maturation_formula,
    "maturation_blocked": blocked_formula,
}
# A few parameter rows per model, t0 off the sample times (the curve has a kink there).
PARAMS = {
    "trivial": [[2.0, 20.0, 0.07, 0.0436275356035, 0.0], [0.4, 300.0, 0.5, 0.02, -7.0]],
    "maturation": [[0.0, 1e3, 1.28, 1e-2, 5.22e-3, 0.0], [0.45, 4000.0, 0.7, 0.2, 0.01, 35.0]],
    "maturation_blocked": [[0.0, 100, 100, 1.28, 5.22e-3, 0], [0.45, 500, 80, 0.4, 0.08, 12]],
}


def test_builtin_models_are_registered_with_design_defaults_and_bounds() -> None:
    assert model_names()[:3] == ("trivial", "maturation", "maturation_blocked")
    m = get_model("maturation")
    assert m.param_names == ("t0", "ktl", "km", "delta", "beta", "offset")
    assert dict(m.defaults) == {
        "t0": 0.0, "ktl": 1e3, "km": 1.28, "delta": 1e-2, "beta": 5.22e-3, "offset": 0.0
    }  # fmt: skip
    assert m.bounds["ktl"] == (1.0, 5e8) and m.bounds["km"] == (1e-5, 30.0)
    assert m.bounds["delta"] == (1e-5, 11.0) and m.bounds["t0"] == (0.0, 1.0)
    trivial = get_model("trivial")
    assert trivial.defaults["beta"] == 0.0436275356035 and trivial.bounds["t0"] == (0.0, 30.0)
    assert trivial.bounds["ktl"] == (1.0, 1e6) and trivial.bounds["delta"] == (1e-5, 10.1)
    blocked = get_model("MATURATION_BLOCKED")
    assert blocked.param_names == ("t0", "G0", "Gu0", "km", "beta", "offset")
    assert blocked.bounds["G0"] == (0.0, 1e6) and blocked.defaults["Gu0"] == 100.0


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_evaluate_matches_the_formula(name: str) -> None:
    model = get_model(name)
    p = np.array(PARAMS[name], dtype=np.float64)
    got = model.evaluate(T, p)
    assert got.shape == (p.shape[0], T.size) and got.dtype == np.float64
    want = [[FORMULAS[name](t, *row) for t in T] for row in p]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)


def equal_rates_limit(name: str, t: float, p: np.ndarray) -> float:
    """The formulas' limit at beta == delta, worked out by hand (l'Hopital)."""
    dt = t - p[0]
    if dt <= 0:
        return p[-1]
    if name == "trivial":  # ktl dt exp(-beta dt)
        return p[4] + p[1] * dt * math.exp(-p[3] * dt)
    ktl, km, rate = p[1], p[2], p[4]
    e, ek = math.exp(-rate * dt), math.exp(-(rate + km) * dt)
    return p[5] + ktl * (dt * e - (e - ek) / km)


@pytest.mark.parametrize("name", ["trivial", "maturation"])
def test_equal_rates_give_the_formulas_limit(name: str) -> None:
    """At beta == delta the printed formula divides by zero; the model gives its limit."""
    model = get_model(name)
    p = np.array(PARAMS[name][1:], dtype=np.float64)
    p[0, model.param_names.index("beta")] = p[0, model.param_names.index("delta")]
    want = [equal_rates_limit(name, t, p[0]) for t in T]
    np.testing.assert_allclose(model.evaluate(T, p)[0], want, rtol=1e-12)


def finite_differences(model: Model, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    out = np.empty((*model.evaluate(t, p).shape, p.shape[1]))
    for k in range(p.shape[1]):
        # the curve is linear in the offset (last): a large step has no truncation error
        h = 1e-6 * np.maximum(np.abs(p[:, k]), 1e-2) if k < p.shape[1] - 1 else np.ones(len(p))
        up, down = p.copy(), p.copy()
        up[:, k] += h
        down[:, k] -= h
        out[..., k] = (model.evaluate(t, up) - model.evaluate(t, down)) / (2 * h[:, None])
    return out


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_jacobian_matches_finite_differences(name: str) -> None:
    model = get_model(name)
    p = np.array(PARAMS[name], dtype=np.float64)
    p[:, 0] = [0.07, 0.45]  # between sample times
    if name != "maturation_blocked":  # and a row on the series path (beta ~ delta)
        row = p[1].copy()
        row[model.param_names.index("beta")] = row[model.param_names.index("delta")] * (1 + 1e-7)
        p = np.vstack([p, row])
    t = np.linspace(0.0, 30.0, 61)
    jac = model.jacobian(t, p)
    assert jac.shape == (p.shape[0], t.size, model.n_params)
    fd = finite_differences(model, t, p)
    scale = np.abs(fd).max(axis=1, keepdims=True) + 1e-12
    np.testing.assert_array_less(np.abs(jac - fd) / scale, 1e-5)


@pytest.mark.parametrize("name", ["trivial", "maturation"])
def test_canonical_form_is_the_same_curve(name: str) -> None:
    model = get_model(name)
    p = np.array(PARAMS[name], dtype=np.float64)
    q = model.canonical(p)
    np.testing.assert_allclose(model.evaluate(T, q), model.evaluate(T, p), rtol=1e-9, atol=1e-9)
    if name == "maturation":  # delta <= beta <= beta + km
        assert np.all(q[:, 3] <= q[:, 4]) and np.all(q[:, 2] > 0)


def rise(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    dt = np.maximum(t[None, :] - p[:, :1], 0.0)
    return p[:, 2:3] + p[:, 1:2] * dt


def rise_jacobian(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    on = t[None, :] > p[:, :1]
    dt = np.where(on, t[None, :] - p[:, :1], 0.0)
    return np.stack([-p[:, 1:2] * on, dt, np.ones_like(dt)], axis=-1)


RAMP = Model(
    "Test_Ramp",
    ("t0", "slope", "offset"),
    defaults={"t0": 1.0, "slope": 1.0, "offset": 0.0},
    bounds={"t0": (0.0, 5.0), "slope": (0.0, 100.0), "offset": (-1e3, 1e3)},
    evaluate=rise,
    jacobian=rise_jacobian,
)


def test_a_lab_registers_its_own_model() -> None:
    try:
        assert register_model(RAMP) is RAMP
        assert "test_ramp" in model_names() and get_model("TEST_RAMP") is RAMP
        with pytest.raises(ParamsError, match="already registered"):
            register_model(RAMP)
        register_model(RAMP, replace=True)
        ramp = get_model("test_ramp").evaluate(T[:3], np.array([[0.0, 2.0, 1.0]]))
        np.testing.assert_allclose(ramp, [[1.0, 1.6, 2.1]])
    finally:
        unregister_model("test_ramp")
    assert "test_ramp" not in model_names()
    with pytest.raises(ParamsError, match="unknown model 'test_ramp'; registered models: "):
        get_model("test_ramp")
    with pytest.raises(ParamsError, match="cannot be unregistered"):
        unregister_model("maturation")


def test_a_model_with_bad_shapes_or_defaults_is_refused() -> None:
    def flat(t: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.zeros(t.size)

    broken = Model("test_broken", RAMP.param_names, RAMP.defaults, RAMP.bounds, flat, flat)
    with pytest.raises(ParamsError, match="shapes"):
        register_model(broken)
    with pytest.raises(ParamsError, match="slope needs lo < hi, default within"):
        Model("x", RAMP.param_names, {**RAMP.defaults, "slope": 500.0}, RAMP.bounds, rise, rise)


def test_resolve_start_and_bounds_applies_overrides() -> None:
    start, lower, upper = resolve_start_and_bounds("maturation")
    assert start.dtype == np.float64
    assert start.tolist() == get_model("maturation").default_vector().tolist()
    start, lower, upper = resolve_start_and_bounds(
        "maturation", {"ktl": 500, "beta": 0.01}, {"km": (0.1, 5), "delta": [0.001, 1.0]}
    )
    assert start[1] == 500 and start[4] == 0.01
    assert (lower[2], upper[2], lower[3], upper[3]) == (0.1, 5.0, 0.001, 1.0)
    # a default outside bounds the user narrowed moves onto the nearest bound
    start, _, _ = resolve_start_and_bounds("maturation", bounds={"km": (2.0, 5.0)})
    assert start[2] == 2.0


@pytest.mark.parametrize(
    ("params", "bounds", "message"),
    [
        (
            {"kt1": 5},
            None,
            r"unknown parameter 'kt1' in initial values; parameters you may set: "
            r"ktl, km, delta, beta",
        ),
        (None, {"gamma": (0, 1)}, r"unknown parameter 'gamma' in bounds"),
        ({"t0": 0.5}, None, r"t0 cannot be overridden .*parameters you may set: ktl, km"),
        ({"offset": 3}, None, r"offset cannot be overridden"),
        (None, {"t0": (0, 2)}, r"t0 cannot be overridden"),
        (None, {"offset": (-1, 1)}, r"offset cannot be overridden"),
        (None, {"km": (5, 1)}, r"bounds of km: min 5 must be < max 1"),
        (None, {"km": (2, 2)}, r"bounds of km: min 2 must be < max 2"),
        (None, {"km": (1, 2, 3)}, r"bounds of km must be \(min, max\)"),
        (None, {"km": "1,2"}, r"bounds of km must be \(min, max\)"),
        (None, {"km": (float("nan"), 2)}, r"bound of km must be a number"),
        ({"ktl": "fast"}, None, r"initial value of ktl must be a number"),
        ({"ktl": 0.5}, None, r"initial value ktl=0.5 lies outside its bounds \[1, 5e\+08\]"),
        ({"km": 10}, {"km": (0.1, 5)}, r"initial value km=10 lies outside its bounds \[0.1, 5\]"),
    ],
)
def test_every_bad_override_names_the_parameter(params, bounds, message) -> None:  # noqa: ANN001
    with pytest.raises(ParamsError, match=message):
        resolve_start_and_bounds("maturation", params, bounds)
