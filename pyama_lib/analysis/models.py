"""Expression-kinetics models fitted to single-cell traces, and the registry that names them.

A :class:`Model` is a record: parameter names in a fixed order, defaults, bounds, and two
vectorised functions of time ``t`` (hours, ``(n_t,)``) and parameters ``p`` (float64,
``(n_cells, n_params)``): ``evaluate`` -> ``(n_cells, n_t)`` and the analytic ``jacobian`` ->
``(n_cells, n_t, n_params)``. The built-ins ``trivial``, ``maturation`` and
``maturation_blocked`` (DESIGN "Fitting"; formulas and symmetries in
:mod:`~pyama_lib.analysis.builtin_models`) are always registered, first and in that order.

A lab adds its own model by building a :class:`Model` and calling :func:`register_model` (see
its example). The optional fields only help the fitter: ``linear`` and ``grid`` give it
data-driven starts, ``canonical`` and ``restarts`` encode symmetries like the built-ins',
``alternatives`` points a thorough fit also tries.

Module layout (acyclic): this module holds :class:`Model`, the registry and the override
checks; :mod:`~pyama_lib.analysis.builtin_models` holds the built-ins' math and records and
imports only :class:`Model` from here. The registry loads and registers the built-ins
lazily, on its first use (:func:`_registry`), by a function-level import, so neither module
imports the other while it is itself being imported. ``TRIVIAL``, ``MATURATION``,
``MATURATION_BLOCKED`` and ``BUILTIN`` remain attributes of this module (module
``__getattr__``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from threading import Lock
from types import MappingProxyType

import numpy as np

from pyama_lib.errors import ParamsError

Curve = Callable[[np.ndarray, np.ndarray], np.ndarray]
Rows = Callable[[np.ndarray], np.ndarray]

#: Parameters no user may override (DESIGN): always fitted from the model's defaults.
LOCKED = ("t0", "offset")


@dataclass(frozen=True)
class Model:
    """A fittable model: names, defaults, bounds and vectorised value and Jacobian.

    Attributes
    ----------
    name : str
        Registry key (stored lower case), the ``model_type`` of ``_fitted.csv``.
    param_names : tuple of str
        Order of the columns of ``p``, of the Jacobian's last axis and of the CSV.
    defaults : Mapping[str, float]
        Initial values (users may override all but ``locked``).
    bounds : Mapping[str, tuple of float]
        ``name -> (lo, hi)`` with ``lo < hi``; each default lies within.
    evaluate, jacobian : callable
        ``(t, p) -> (n_cells, n_t)`` and ``-> (n_cells, n_t, n_params)``, float64.
    locked : tuple of str
        Parameters users may not override (``t0`` and ``offset`` where present).
    linear : tuple of str
        Parameters the curve is jointly affine in (amplitude, offset): with ``grid`` the
        fitter solves them by linear least squares on a grid of the others for its starts.
    grid : Mapping[str, tuple of float]
        Candidate values of the other parameters; each value of the first gets a start.
    canonical : callable, optional
        ``p -> p`` giving the same curve in the form the fitter should continue from.
    restarts : callable, optional
        ``p -> (n_alternatives, n_cells, n_params)`` further starts near a fit (NaN rows:
        none), tried after the fit; the better result is kept.
    alternatives : callable, optional
        Like ``restarts``, further from the fit (another basin of SS_res); tried only by a
        thorough fit (``fit_cells(..., thorough=True)``).

    Examples
    --------
    >>> m = get_model("trivial")
    >>> m.param_names, m.bounds["t0"]
    (('t0', 'ktl', 'delta', 'beta', 'offset'), (0.0, 30.0))
    >>> m.jacobian(np.linspace(0, 10, 3), m.default_vector()[None, :]).shape
    (1, 3, 5)
    """

    name: str
    param_names: tuple[str, ...]
    defaults: Mapping[str, float]
    bounds: Mapping[str, tuple[float, float]]
    evaluate: Curve
    jacobian: Curve
    locked: tuple[str, ...] = LOCKED
    linear: tuple[str, ...] = ()
    grid: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    canonical: Rows | None = None
    restarts: Rows | None = None
    alternatives: Rows | None = None

    def __post_init__(self) -> None:
        names = tuple(self.param_names)
        if set(self.defaults) != set(names) or set(self.bounds) != set(names):
            raise ParamsError(f"model {self.name!r}: defaults and bounds must name {names}")
        for name in names:
            lo, hi = self.bounds[name]
            if not lo < hi or not lo <= self.defaults[name] <= hi:
                raise ParamsError(f"model {self.name!r}: {name} needs lo < hi, default within")
        if not set(self.linear) | set(self.grid) <= set(names):
            raise ParamsError(f"model {self.name!r}: linear/grid name unknown parameters")
        # Frozen all the way down: a registry entry is shared by every caller.
        freeze = object.__setattr__
        freeze(self, "name", self.name.lower())
        freeze(self, "param_names", names)
        freeze(self, "locked", tuple(n for n in self.locked if n in names))
        freeze(self, "defaults", MappingProxyType({n: float(self.defaults[n]) for n in names}))
        bounds = {n: (float(self.bounds[n][0]), float(self.bounds[n][1])) for n in names}
        freeze(self, "bounds", MappingProxyType(bounds))
        freeze(self, "grid", MappingProxyType({k: tuple(v) for k, v in self.grid.items()}))

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def default_vector(self) -> np.ndarray:
        """The defaults as a float64 vector in ``param_names`` order."""
        return np.array([self.defaults[n] for n in self.param_names], dtype=np.float64)


_REGISTRY: dict[str, Model] = {}
_BUILTINS_LOADED = False
_BUILTINS_LOCK = Lock()
_BUILTIN_ATTRS = ("TRIVIAL", "MATURATION", "MATURATION_BLOCKED", "BUILTIN")


def _registry() -> dict[str, Model]:
    """The registry, with the built-ins registered first on the first call.

    The function-level import keeps the module graph acyclic:
    :mod:`~pyama_lib.analysis.builtin_models` imports :class:`Model` from here.
    """
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        with _BUILTINS_LOCK:
            if not _BUILTINS_LOADED:
                from pyama_lib.analysis.builtin_models import BUILTIN_MODELS

                for model in BUILTIN_MODELS:
                    _check_shapes(model)
                # Before any lab model: register_model itself loads the built-ins first.
                _REGISTRY.update({m.name: m for m in BUILTIN_MODELS})
                _BUILTINS_LOADED = True
    return _REGISTRY


def __getattr__(name: str) -> object:
    """``TRIVIAL``, ``MATURATION``, ``MATURATION_BLOCKED``, ``BUILTIN``: from builtin_models."""
    if name in _BUILTIN_ATTRS:
        from pyama_lib.analysis import builtin_models

        return getattr(builtin_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_shapes(model: Model) -> None:
    """Raise ParamsError unless ``evaluate``/``jacobian`` return the right shapes."""
    t = np.linspace(0.0, 10.0, 7)
    p = np.tile(model.default_vector(), (2, 1))
    shapes = np.shape(model.evaluate(t, p)), np.shape(model.jacobian(t, p))
    if shapes != ((2, 7), (2, 7, model.n_params)):
        raise ParamsError(f"model {model.name!r}: evaluate/jacobian return shapes {shapes}")


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
    registry = _registry()
    if model.name in registry and not replace:
        raise ParamsError(f"model {model.name!r} is already registered (replace=True swaps it)")
    _check_shapes(model)
    registry[model.name] = model
    return model


def unregister_model(name: str) -> None:
    """Remove a model a lab registered (the built-ins stay)."""
    from pyama_lib.analysis.builtin_models import BUILTIN

    registry = _registry()
    if name.lower() in BUILTIN:
        raise ParamsError(f"built-in model {name!r} cannot be unregistered")
    registry.pop(name.lower(), None)


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
        return _registry()[str(name).lower()]
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
    return tuple(_registry())


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
    pyama_lib.errors.ParamsError: trivial: t0 cannot be overridden (t0 and offset are always \
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
