"""fit_cells and fit_table: what the data determine, NaN handling, PyAMA's reference fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from pyama_lib.analysis.fitting import fit_cells, fit_table
from pyama_lib.analysis.model import Model
from pyama_lib.analysis.models import (
    get_model,
    register_model,
    resolve_start_and_bounds,
    unregister_model,
)
from pyama_lib.core.errors import InputDataError, ParamsError
from pyama_lib.synthetic.cells import draw_kinetics, maturation_traces

T = np.arange(180, dtype=np.float64) / 6.0  # 30 h, a frame every 10 min


def log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def truth(name: str, n: int, seed: int) -> np.ndarray:
    """Kinetics like the synthetic acquisitions' (and, for the others, alike)."""
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-200.0, 200.0, n)
    if name == "maturation":
        cols = list(draw_kinetics(rng, n).T)
    elif name == "trivial":
        cols = [rng.uniform(0.5, 10.0, n), log_uniform(rng, 50.0, 500.0, n)]
        cols += [log_uniform(rng, 0.05, 0.5, n), log_uniform(rng, 0.005, 0.05, n)]
    else:
        cols = [rng.uniform(0.1, 0.9, n), rng.uniform(100, 1000, n), rng.uniform(100, 1000, n)]
        cols += [log_uniform(rng, 0.3, 3.0, n), log_uniform(rng, 0.01, 0.2, n)]
    return np.column_stack([*cols, offset])


def height(model: Model, p: np.ndarray) -> np.ndarray:
    """Largest excursion of the expression term over the movie (peak or plateau)."""
    return np.abs(model.evaluate(T, p) - p[:, -1:]).max(axis=1)


@pytest.mark.parametrize("name", ["maturation", "trivial", "maturation_blocked"])
def test_noise_free_traces_are_fitted_exactly(name: str) -> None:
    model = get_model(name)
    p = truth(name, 30, seed=1)
    fit = fit_cells(T, model.evaluate(T, p), name)
    assert fit.params.shape == p.shape and fit.params.dtype == np.float64
    assert fit.success.all() and fit.r_squared.min() > 0.999
    np.testing.assert_allclose(height(model, fit.params), height(model, p), rtol=0.05)
    if name == "maturation_blocked":  # the curve jumps at t0: known only to a frame interval
        assert np.all(np.abs(fit.param("t0") - p[:, 0]) < 1.0 / 6.0)
    else:
        np.testing.assert_allclose(fit.param("t0"), p[:, 0], rtol=0.05)


def noisy(model: Model, p: np.ndarray, level: float, seed: int) -> np.ndarray:
    clean = model.evaluate(T, p)
    rng = np.random.default_rng(seed)
    return clean + rng.normal(size=clean.shape) * (level * height(model, p))[:, None]


@pytest.mark.parametrize("name", ["maturation", "trivial"])
def test_expressing_cells_with_5_percent_noise(name: str) -> None:
    model = get_model(name)
    p = truth(name, 60, seed=2)
    fit = fit_cells(T, noisy(model, p, 0.05, seed=3), name)
    assert fit.r_squared.min() > 0.9
    # the onset and the height stay close; individual rates are not determined
    np.testing.assert_allclose(height(model, fit.params), height(model, p), rtol=0.15)


def pyama_reference(y: np.ndarray, name: str, times: np.ndarray = T) -> np.ndarray:
    """R^2 of PyAMA's fit: one least_squares per cell from the defaults, NaN dropped."""
    model = get_model(name)
    x0, lower, upper = resolve_start_and_bounds(model)
    out = []
    for row in y:
        keep = np.isfinite(row)
        t, yy = times[keep], row[keep]
        res = least_squares(
            lambda q, t=t, yy=yy: yy - model.evaluate(t, q[None])[0], x0, bounds=(lower, upper)
        )
        out.append(max(0.0, 1.0 - (res.fun**2).sum() / ((yy - yy.mean()) ** 2).sum()))
    return np.array(out)


def test_at_least_as_good_as_pyamas_single_start() -> None:
    """PyAMA's fit is one least_squares from the defaults; ours starts there and elsewhere.

    Measured on 1440 such cells: ours >= PyAMA's (within 1e-9) on 99.2 % of expressing
    and ~96 % of flat cells; the rest fall short by at most ~4e-3 (another local minimum
    of noise-dominated t0/km trade-offs). These cells are all at least as good.
    """
    model = get_model("maturation")
    p = truth("maturation", 36, seed=4)
    y = noisy(model, p, 0.05, seed=5)
    y[:4] = p[:4, -1:] + np.random.default_rng(6).normal(size=(4, T.size)) * 300  # no signal
    y[5, 100:] = np.nan  # a cell lost two thirds of the way through
    shortfall = pyama_reference(y, "maturation") - fit_cells(T, y).r_squared
    assert shortfall.max() <= 1e-9


def test_fitted_parameters_lie_within_their_bounds() -> None:
    """Rates move as logarithms: ``exp(log(1e-5))`` is an ulp below the bound 1e-5.

    Noise fits push rates onto their bounds; before the clip about a third of these cells
    reported a parameter a rounding error outside them (and their canonical form was
    refused for it).
    """
    model = get_model("maturation")
    _, lower, upper = resolve_start_and_bounds(model)
    p = truth("maturation", 60, seed=20)
    y = noisy(model, p, 0.05, seed=120)
    y[:10] = p[:10, -1:] + np.random.default_rng(20).normal(size=(10, T.size)) * 300
    fit = fit_cells(T, y)
    assert (fit.params >= lower).all() and (fit.params <= upper).all()
    assert (fit.params == lower).any() and (fit.params == upper).any()  # bounds reached


def test_cells_that_once_fell_short_of_pyama() -> None:
    """Cells of ``make bench``'s traces (seed 0) where the fit was short of PyAMA's.

    Expressing cells: 35 ended with beta an ulp below its bound, so its canonical form was
    refused; 2 zigzags slowly along the delta/beta valley and needs more than 100
    iterations; in 474 t0 creeps up to a sample time (the curve's bend reaches a data
    point), which only t0 on that sample time settles. Flat cells (no expression): 217
    and 276 needed starts between the grid's t0 values, 466 the restart with delta and
    beta exchanged (km on its bound). (377, zigzagging too, still ends 4e-9 short: the fit
    benchmark, docs/benchmarks.md.)
    """
    t, y, expresses = maturation_traces(600, 180, seed=0)
    cells = [2, 35, 474, 217, 276, 466]
    assert expresses[cells].tolist() == [True] * 3 + [False] * 3
    shortfall = pyama_reference(y[cells], "maturation", t) - fit_cells(t, y[cells]).r_squared
    assert shortfall.max() <= 1e-9


def test_a_thorough_fit_reaches_pyama_where_the_default_falls_short() -> None:
    """Cells of ``make bench``'s traces (seeds 0-2) where the default fit ends below PyAMA's
    R^2: expressing cells in another minimum along the t0-km trade-off (seed 1's 443 by
    9e-5, PyAMA's fit at t0 0.93 and km 30, ours at t0 0.09 and km 1.6), or still creeping
    (seed 0's 127 and 377), and fits of a flat cell's noise (219, 492: 9e-4)."""
    for seed, cells in {0: [127, 219, 377], 1: [2, 39, 443], 2: [71, 325, 492]}.items():
        t, y, _ = maturation_traces(600, 180, seed=seed)
        reference = pyama_reference(y[cells], "maturation", t)
        default = fit_cells(t, y[cells]).r_squared
        thorough = fit_cells(t, y[cells], thorough=True).r_squared
        assert (reference - default).max() > 1e-6, seed  # the default does fall short here
        assert (reference - thorough).max() <= 1e-9, (seed, reference - thorough)
        assert (thorough >= default).all(), seed  # never worse, exactly


def blocked_truth(seed: int, n: int = 300) -> np.ndarray:
    """maturation_blocked parameters over a wider range than ``truth``'s."""
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.uniform(0.0, 1.0, n),
            10 ** rng.uniform(2, 4, n),
            10 ** rng.uniform(2, 4, n),
            10 ** rng.uniform(-0.5, 0.5, n),
            10 ** rng.uniform(-2.5, -1, n),
            rng.uniform(-200.0, 200.0, n),
        ]
    )


def test_a_thorough_blocked_fit_tries_the_other_split_of_the_protein() -> None:
    """Cells where the default maturation_blocked fit ends below PyAMA's R^2 (by 3e-4 and
    2e-5) with G0 near 0 and fast maturation; the thorough fit's alternative (half of Gu0
    mature, km slow) reaches it."""
    model = get_model("maturation_blocked")
    y = noisy(model, blocked_truth(2), 0.05, seed=2)[[14, 154]]
    reference = pyama_reference(y, "maturation_blocked")
    default = fit_cells(T, y, "maturation_blocked")
    thorough = fit_cells(T, y, "maturation_blocked", thorough=True).r_squared
    assert (reference - default.r_squared > 1e-5).all()
    assert (default.param("km") > 5.0).all()
    assert (thorough >= reference - 1e-9).all()


def test_a_fit_that_cannot_move_is_not_reported_converged() -> None:
    """A row whose damping explodes before a step helped reports ``success`` False."""
    model = get_model("maturation")
    broken = Model(  # a Jacobian of the wrong sign: every Gauss-Newton step goes uphill
        "test_uphill",
        model.param_names,
        model.defaults,
        model.bounds,
        model.evaluate,
        lambda t, q: -model.jacobian(t, q),
    )
    register_model(broken)
    try:
        y = model.evaluate(T, truth("maturation", 3, seed=13))
        fit = fit_cells(T, y, "test_uphill")
        assert not fit.success.any()
        assert fit_cells(T, y).success.all()
    finally:
        unregister_model("test_uphill")


def test_nan_points_are_dropped() -> None:
    model = get_model("maturation")
    p = truth("maturation", 3, seed=7)
    y = noisy(model, p, 0.05, seed=8)
    holes = np.zeros(y.shape, dtype=bool)
    holes[0, ::3] = holes[1, 120:] = True
    y[holes] = np.nan
    fit = fit_cells(T, y)
    assert fit.n_points.tolist() == [120, 120, 180]
    for i in range(2):  # the same as fitting only the points there are
        alone = fit_cells(T[~holes[i]], y[i, ~holes[i]])
        np.testing.assert_allclose(fit.r_squared[i], alone.r_squared[0], atol=1e-9)
        np.testing.assert_allclose(
            model.evaluate(T, fit.params[i : i + 1]), model.evaluate(T, alone.params), rtol=1e-4
        )
    # a NaN time drops that column for every cell
    t = T.copy()
    t[5] = np.nan
    assert fit_cells(t, y[2:]).n_points.tolist() == [179]


def test_too_few_points_are_not_fitted() -> None:
    y = np.full((3, T.size), np.nan)
    y[1, :5] = [1.0, 2.0, 3.0, 4.0, 5.0]  # 5 points, 6 parameters
    y[2] = 7.0  # constant: fitted, but SS_tot is 0
    fit = fit_cells(T, y)
    model = get_model("maturation")
    assert fit.success.tolist()[:2] == [False, False]
    np.testing.assert_array_equal(fit.params[:2], np.tile(model.default_vector(), (2, 1)))
    assert fit.r_squared.tolist() == [0.0, 0.0, 0.0] and fit.n_points.tolist() == [0, 5, 180]


def test_fit_table_has_pyamas_columns() -> None:
    model = get_model("maturation")
    p = truth("maturation", 4, seed=9)
    y = model.evaluate(T, p)
    y[2] = np.nan
    table = fit_table(fit_cells(T, y))
    assert table.columns.tolist() == [
        "cell_id", "model_type", "success", "r_squared", "t0", "ktl", "km", "delta", "beta",
        "offset",
    ]  # fmt: skip
    assert table["cell_id"].tolist() == [0, 1, 2, 3]
    assert set(table["model_type"]) == {"maturation"}
    assert table["success"].tolist() == [True, True, False, True]
    assert table["success"].dtype == bool and table["r_squared"].dtype == np.float64
    assert table.loc[2, "ktl"] == 1e3


def test_user_values_and_bounds_are_used() -> None:
    model = get_model("maturation")
    p = truth("maturation", 6, seed=10)
    y = model.evaluate(T, p)
    fit = fit_cells(T, y, params={"km": 2.0}, bounds={"km": (1.0, 4.0), "ktl": (1.0, 1e6)})
    assert np.all((fit.param("km") >= 1.0) & (fit.param("km") <= 4.0))
    assert np.all(fit.param("ktl") <= 1e6)
    with pytest.raises(ParamsError, match="t0 cannot be overridden"):
        fit_cells(T, y, params={"t0": 0.5})
    with pytest.raises(ParamsError, match="unknown model"):
        fit_cells(T, y, model="exponential")
    with pytest.raises(InputDataError, match="to match t_hours"):
        fit_cells(T[:10], y)


def test_chunks_one_dimensional_input_and_a_lab_model() -> None:
    model = get_model("maturation")
    p = truth("maturation", 9, seed=11)
    y = noisy(model, p, 0.05, seed=12)
    whole = fit_cells(T, y)
    parts = fit_cells(T, y, chunk_cells=4)
    np.testing.assert_allclose(parts.r_squared, whole.r_squared, atol=1e-12)
    assert fit_cells(T, y[3]).params.shape == (1, 6)

    def rise(t: np.ndarray, q: np.ndarray) -> np.ndarray:
        return q[:, 2:3] + q[:, 1:2] * -np.expm1(-np.maximum(t[None, :] - q[:, :1], 0.0))

    def rise_jacobian(t: np.ndarray, q: np.ndarray) -> np.ndarray:
        on = t[None, :] > q[:, :1]
        e = np.exp(-np.where(on, t[None, :] - q[:, :1], 0.0))
        return np.stack([-q[:, 1:2] * e * on, 1 - e, np.ones_like(e)], axis=-1)

    lab = Model(
        "test_saturating",
        ("t0", "A", "offset"),
        defaults={"t0": 1.0, "A": 1.0, "offset": 0.0},
        bounds={"t0": (0.0, 20.0), "A": (0.0, 1e6), "offset": (-1e6, 1e6)},
        evaluate=rise,
        jacobian=rise_jacobian,
        linear=("A", "offset"),
        grid={"t0": (0.0, 5.0, 10.0, 15.0)},
    )
    register_model(lab)
    try:
        q = np.array([[6.3, 250.0, 10.0], [12.4, 80.0, -5.0]])
        fit = fit_cells(T, rise(T, q), "test_saturating")
        np.testing.assert_allclose(fit.params, q, rtol=1e-6)
        assert fit_table(fit)["model_type"].tolist() == ["test_saturating"] * 2
    finally:
        unregister_model("test_saturating")
