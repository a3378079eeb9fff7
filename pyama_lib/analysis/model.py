"""What an expression-kinetics model is: :class:`Model`, the record the fitter works from.

A :class:`Model` holds parameter names in a fixed order, defaults, bounds, and two vectorised
functions of time ``t`` (hours, ``(n_t,)``) and parameters ``p`` (float64,
``(n_cells, n_params)``): ``evaluate`` -> ``(n_cells, n_t)`` and the analytic ``jacobian`` ->
``(n_cells, n_t, n_params)``. The optional fields only help the fitter: ``linear`` and ``grid``
give it data-driven starts, ``canonical`` and ``restarts`` encode symmetries like the
built-ins', ``alternatives`` points a thorough fit also tries.

The built-in models are in :mod:`~pyama_lib.analysis.builtin_models`; the registry that names
them, and any a lab adds, in :mod:`~pyama_lib.analysis.models`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from pyama_lib.core.errors import ParamsError

Curve = Callable[[np.ndarray, np.ndarray], np.ndarray]
Rows = Callable[[np.ndarray], np.ndarray]

#: Parameters no user may override (as in PyAMA): always fitted from the model's defaults.
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
    >>> from pyama_lib.analysis.models import get_model
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
