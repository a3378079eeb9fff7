"""The registry of expression models: the built-ins and those a lab adds, by name.

``trivial``, ``maturation`` and ``maturation_blocked`` (:mod:`~pyama_lib.analysis.builtin_models`)
are registered first and in that order. A lab adds its own model by building a
:class:`~pyama_lib.analysis.model.Model` and calling :func:`register_model` (see its example);
:func:`resolve_start_and_bounds` checks a user's overrides of a model's start and bounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pyama_lib.analysis.builtin_models import BUILTIN, BUILTIN_MODELS
from pyama_lib.analysis.model import Model
from pyama_lib.core.errors import ParamsError


def _check_shapes(model: Model) -> None:
    """Raise ParamsError unless ``evaluate``/``jacobian`` return the right shapes."""
    t = np.linspace(0.0, 10.0, 7)
    p = np.tile(model.default_vector(), (2, 1))
    shapes = np.shape(model.evaluate(t, p)), np.shape(model.jacobian(t, p))
    if shapes != ((2, 7), (2, 7, model.n_params)):
        raise ParamsError(f"model {model.name!r}: evaluate/jacobian return shapes {shapes}")


_REGISTRY: dict[str, Model] = {}


def register_model(model: Model, *, replace: bool = False) -> Model:
    """Add ``model`` to the registry under ``model.name`` (shapes checked on a short axis).

    Raises
    ------
    ParamsError
        When the name is taken (``replace=True`` swaps it) or ``evaluate``/``jacobian``
        return the wrong shapes.

    Examples
    --------
    A lab's saturating rise ``offset + A (1 - exp(-k dt))`` for ``dt > 0``:

    >>> def rise(t, p):
    ...     dt = np.maximum(t[None, :] - p[:, :1], 0.0)
    ...     return p[:, 3:4] + p[:, 1:2] * -np.expm1(-p[:, 2:3] * dt)
    >>> def rise_jacobian(t, p):
    ...     on = t[None, :] > p[:, :1]
    ...     dt = np.where(on, t[None, :] - p[:, :1], 0.0)
    ...     a, k, e = p[:, 1:2], p[:, 2:3], np.exp(-p[:, 2:3] * dt)
    ...     return np.stack([-a * k * e * on, 1 - e, a * dt * e, np.ones_like(dt)], axis=-1)
    >>> rise_model = Model(
    ...     "lab_rise", ("t0", "A", "k", "offset"),
    ...     defaults={"t0": 1.0, "A": 100.0, "k": 0.5, "offset": 0.0},
    ...     bounds={"t0": (0, 10), "A": (0, 1e6), "k": (1e-3, 10), "offset": (-1e6, 1e6)},
    ...     evaluate=rise, jacobian=rise_jacobian,
    ...     linear=("A", "offset"), grid={"t0": (0.5, 2.0, 5.0), "k": (0.1, 1.0)})
    >>> register_model(rise_model).name in model_names()
    True
    >>> get_model("lab_rise").evaluate(np.array([0.0, 3.0]), np.array([[1, 100, 0.5, 5]]))
    array([[ 5.        , 68.21205588]])
    >>> unregister_model("lab_rise")
    """
    if model.name in _REGISTRY and not replace:
        raise ParamsError(f"model {model.name!r} is already registered (replace=True swaps it)")
    _check_shapes(model)
    _REGISTRY[model.name] = model
    return model


def unregister_model(name: str) -> None:
    """Remove a model a lab registered (the built-ins stay)."""
    if name.lower() in BUILTIN:
        raise ParamsError(f"built-in model {name!r} cannot be unregistered")
    _REGISTRY.pop(name.lower(), None)


def get_model(name: str | Model) -> Model:
    """The registered model called ``name`` (case-insensitive); a Model passes through.

    Examples
    --------
    >>> get_model("Maturation").param_names
    ('t0', 'ktl', 'km', 'delta', 'beta', 'offset')
    """
    if isinstance(name, Model):
        return name
    try:
        return _REGISTRY[str(name).lower()]
    except KeyError:
        known = ", ".join(model_names())
        raise ParamsError(f"unknown model {name!r}; registered models: {known}") from None


def model_names() -> tuple[str, ...]:
    """Names of the registered models, in registration order.

    Examples
    --------
    >>> model_names()[:3]
    ('trivial', 'maturation', 'maturation_blocked')
    """
    return tuple(_REGISTRY)


def resolve_start_and_bounds(
    model: str | Model,
    params: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start vector and lower/upper bounds after the user's overrides, validated.

    A default outside bounds the user narrowed moves onto the nearest bound (PyAMA's
    ``least_squares`` would refuse every cell); a value the user gives must lie within.

    Returns
    -------
    start, lower, upper : np.ndarray
        float64 ``(n_params,)`` in ``model.param_names`` order.

    Raises
    ------
    ParamsError
        Naming the parameter and what is allowed: unknown, locked (``t0``, ``offset``), not
        a number, bounds not a ``(min, max)`` pair or ``min >= max``, or an initial value
        outside its bounds.

    Examples
    --------
    >>> start, lo, hi = resolve_start_and_bounds("trivial", {"ktl": 50}, {"delta": (0.01, 1)})
    >>> start.tolist(), float(lo[2]), float(hi[2])
    ([2.0, 50.0, 0.07, 0.0436275356035, 0.0], 0.01, 1.0)
    >>> resolve_start_and_bounds("trivial", {"t0": 1})
    Traceback (most recent call last):
    ...
    pyama_lib.core.errors.ParamsError: trivial: t0 cannot be overridden (t0 and offset are always \
fitted from the defaults); parameters you may set: ktl, delta, beta
    """
    model = get_model(model)
    names = model.param_names
    allowed = "parameters you may set: " + ", ".join(n for n in names if n not in model.locked)

    def check_name(name: str, what: str) -> int:
        if name in model.locked:
            raise ParamsError(
                f"{model.name}: {name} cannot be overridden (t0 and offset are always fitted "
                f"from the defaults); {allowed}"
            )
        if name not in names:
            raise ParamsError(f"{model.name}: unknown parameter {name!r} in {what}; {allowed}")
        return names.index(name)

    def number(name: str, value: object, what: str) -> float:
        try:
            out = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            out = float("nan")
        if np.isnan(out) or (what == "initial value" and not np.isfinite(out)):
            raise ParamsError(f"{model.name}: {what} of {name} must be a number, got {value!r}")
        return out

    lower = np.array([model.bounds[n][0] for n in names], dtype=np.float64)
    upper = np.array([model.bounds[n][1] for n in names], dtype=np.float64)
    for name, pair in (bounds or {}).items():
        i = check_name(name, "bounds")
        if isinstance(pair, str | bytes) or np.ndim(pair) != 1 or len(pair) != 2:
            raise ParamsError(f"{model.name}: bounds of {name} must be (min, max), got {pair!r}")
        lo, hi = (number(name, v, "bound") for v in pair)
        if not lo < hi:
            raise ParamsError(f"{model.name}: bounds of {name}: min {lo:g} must be < max {hi:g}")
        lower[i], upper[i] = lo, hi
    start = np.clip(model.default_vector(), lower, upper)
    for name, value in (params or {}).items():
        i = check_name(name, "initial values")
        start[i] = number(name, value, "initial value")
        if not lower[i] <= start[i] <= upper[i]:
            raise ParamsError(
                f"{model.name}: initial value {name}={start[i]:g} lies outside its bounds "
                f"[{lower[i]:g}, {upper[i]:g}]"
            )
    return start, lower, upper


for _model in BUILTIN_MODELS:
    _check_shapes(_model)
    _REGISTRY[_model.name] = _model
