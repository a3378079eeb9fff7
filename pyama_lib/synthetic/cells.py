"""The cells of a synthetic FOV: where they are, their shape and kinetics, and the hard cases.

:func:`draw_cells` draws cells every segmentation finds (thick, apart, in every frame, at full
contrast). :class:`HardCases` adds, from a random stream of its own (so the easy cells and
their frames stay the same), the cells that make an accuracy score honest: cells that arrive
late or leave early, faint ones (low phase contrast) and small ones (radius 8-12 px, under
PyAMA's 19 px opening).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pyama_lib.analysis.models import get_model
from pyama_lib.core.errors import InputDataError

KINETIC_PARAMS = ("t0", "ktl", "km", "delta", "beta")
HALO_PX = 2.0

_P_EXPRESS = 0.75
# PyAMA's opening erases blobs without a 19×19 square inside them and its closing merges blobs less
# than 19 px apart (docs/fidelity.md, segmentation): cells are at least this thick and this far
# apart.
MIN_SEMI_MINOR_PX = 12.0
_MAX_SEMI_MAJOR_PX = 24.0
_MIN_GAP_PX = 20.0


@dataclass(frozen=True)
class Cells:
    """One FOV's cells; every array has one entry per cell (cell id = index + 1)."""

    pattern_x: np.ndarray
    pattern_y: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    drift_x: np.ndarray  # px over the whole movie
    drift_y: np.ndarray
    semi_major: np.ndarray
    semi_minor: np.ndarray
    angle: np.ndarray  # radians
    expresses: np.ndarray  # bool
    kinetics: np.ndarray  # (n_fl, n_cells, 5) in KINETIC_PARAMS order, time in hours
    # The hard cases (None: every cell in every frame at full contrast; see HardCases)
    first_frame: np.ndarray | None = None
    last_frame: np.ndarray | None = None
    contrast: np.ndarray | None = None  # phase-contrast darkening, texture and halo factor

    def present(self, t: int) -> np.ndarray:
        """Which cells are in frame ``t`` (bool per cell)."""
        here = np.ones(self.x0.size, dtype=bool)
        if self.first_frame is not None and self.last_frame is not None:
            here = (self.first_frame <= t) & (t <= self.last_frame)
        return here


def maturation(
    t_h: np.ndarray | float,
    t0: np.ndarray | float,
    ktl: np.ndarray | float,
    km: np.ndarray | float,
    delta: np.ndarray | float,
    beta: np.ndarray | float,
) -> np.ndarray:
    """Mature-protein amount of the maturation model (no offset); 0 before ``t0``.

    All arguments broadcast; times and rates in hours. Requires ``beta != delta`` and
    ``beta - delta + km != 0``.
    """
    dt = np.maximum(np.asarray(t_h, dtype=np.float64) - t0, 0.0)
    bd = np.asarray(beta, dtype=np.float64) - delta
    value = ktl * (
        np.exp(-(beta + km) * dt) / (bd + km)
        - np.exp(-beta * dt) / bd
        + km * np.exp(-delta * dt) / (bd * (bd + km))
    )
    return np.where(dt > 0, value, 0.0)


def pattern_grid(size: int, n_cells: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Centres (x, y) of the smallest square grid with ``n_cells`` points, and its spacing."""
    side = max(1, math.ceil(math.sqrt(n_cells)))
    spacing = size / side
    centres = (np.arange(side, dtype=np.float64) + 0.5) * spacing
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return xs.ravel(), ys.ravel(), spacing


def draw_kinetics(rng: np.random.Generator, n_cells: int) -> np.ndarray:
    """Maturation kinetics of ``n_cells`` cells, float64 ``(n_cells, 5)`` in
    :data:`KINETIC_PARAMS` order, time in hours.

    t0 is uniform in 0.1-0.9 h (within the fit bounds [0, 1]); ktl (1e3-1e4), km (0.5-3/h),
    delta (0.05-0.3/h) and beta (0.002-0.03/h, below delta) are log-uniform.

    Examples
    --------
    >>> k = draw_kinetics(np.random.default_rng(0), 4)
    >>> k.shape, bool((k[:, 4] < k[:, 3]).all()), bool(((k[:, 0] > 0.1) & (k[:, 0] < 0.9)).all())
    ((4, 5), True, True)
    """

    def log_uniform(lo: float, hi: float) -> np.ndarray:
        return np.exp(rng.uniform(np.log(lo), np.log(hi), n_cells))

    return np.column_stack(
        [
            rng.uniform(0.1, 0.9, n_cells),
            log_uniform(1e3, 1e4),
            log_uniform(0.5, 3.0),
            log_uniform(0.05, 0.3),
            log_uniform(0.002, 0.03),
        ]
    )


def maturation_traces(
    n_cells: int, n_t: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy single-cell traces of the maturation model: ``(t_hours, y, expresses)``.

    A frame every 10 min; :func:`draw_kinetics` and an offset of +-200 per cell; 75 % of the
    cells express (the others stay flat at their offset); Gaussian noise of 5 % of the cell's
    peak (of the peak it would have had, for a flat cell). ``y`` is float64
    ``(n_cells, n_t)``. The fit benchmark's traces, and its tests'.

    Examples
    --------
    >>> t, y, expresses = maturation_traces(5, 12, seed=0)
    >>> t[:3].tolist(), y.shape, expresses.dtype.name
    ([0.0, 0.16666666666666666, 0.3333333333333333], (5, 12), 'bool')
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_t, dtype=np.float64) * (10.0 / 60.0)
    p = np.column_stack([draw_kinetics(rng, n_cells), rng.uniform(-200.0, 200.0, n_cells)])
    expresses = rng.random(n_cells) < 0.75
    clean = get_model("maturation").evaluate(t, p)
    peak = (clean - p[:, 5:6]).max(axis=1)
    clean[~expresses] = p[~expresses, 5:6]
    y = clean + rng.normal(size=clean.shape) * (0.05 * peak)[:, None]
    return t, y, expresses


def draw_cells(
    rng: np.random.Generator, size: int, n_cells: int, n_fl: int, max_drift: float
) -> Cells:
    xs, ys, spacing = pattern_grid(size, n_cells)
    # Row-major subset of grid points: cell ids follow the pattern's raster order.
    keep = np.sort(rng.choice(xs.size, size=n_cells, replace=False))
    px, py = xs[keep], ys[keep]
    jitter = min(2.0, 0.04 * spacing)
    r_min, r_max = radius_range(spacing, jitter, max_drift)
    minor = rng.uniform(r_min, max(r_min, 0.5 * (r_min + r_max)), n_cells)
    major = np.minimum(minor * rng.uniform(1.0, 1.3, n_cells), max(r_max, r_min))
    direction = rng.uniform(0.0, 2 * np.pi, n_cells)
    drift = rng.uniform(0.3, 1.0, n_cells) * max_drift
    kin = np.stack([draw_kinetics(rng, n_cells) for _ in range(n_fl)])
    expresses = rng.random(n_cells) < _P_EXPRESS
    kin[:, ~expresses, 1] = 0.0  # ktl 0: the model gives 0 at every time
    return Cells(
        pattern_x=px,
        pattern_y=py,
        x0=px + rng.uniform(-jitter, jitter, n_cells),
        y0=py + rng.uniform(-jitter, jitter, n_cells),
        drift_x=drift * np.cos(direction),
        drift_y=drift * np.sin(direction),
        semi_major=major,
        semi_minor=minor,
        angle=rng.uniform(0.0, np.pi, n_cells),
        expresses=expresses,
        kinetics=kin,
    )


def radius_range(spacing: float, jitter: float, max_drift: float) -> tuple[float, float]:
    """Smallest semi-minor and largest semi-major axis (px) keeping neighbours ≥ 20 px apart."""
    r_max = min(_MAX_SEMI_MAJOR_PX, 0.5 * (spacing - _MIN_GAP_PX) - jitter - max_drift - HALO_PX)
    return min(MIN_SEMI_MINOR_PX, r_max), r_max


@dataclass(frozen=True)
class HardCases:
    """Shares of a FOV's cells that are hard to find or to measure (each drawn independently).

    ``late`` cells appear after frame 0 (at a random frame in the first two thirds), ``leaving``
    cells disappear before the last frame (in the last two thirds), ``faint`` ones have
    ``faint_contrast`` times the phase contrast, ``small`` ones a semi-minor axis drawn from
    ``small_radius`` px. The defaults are those of the accuracy issue's hard acquisition.
    """

    late: float = 0.06
    leaving: float = 0.06
    faint: float = 0.08
    small: float = 0.25
    faint_contrast: float = 0.55
    small_radius: tuple[float, float] = (8.0, 12.0)

    def __post_init__(self) -> None:
        shares = {"late": self.late, "leaving": self.leaving, "faint": self.faint}
        shares |= {"small": self.small, "faint_contrast": self.faint_contrast}
        problems = [
            f"{n} must be within [0, 1], got {v}" for n, v in shares.items() if not 0 <= v <= 1
        ]
        low, high = self.small_radius
        if not 4 <= low <= high:
            problems.append(
                f"small_radius must be (low, high) with 4 <= low <= high, got {low, high}"
            )
        if problems:
            raise InputDataError("hard cases: " + "; ".join(problems))


def with_hard_cases(
    rng: np.random.Generator, cells: Cells, n_frames: int, hard: HardCases
) -> Cells:
    """``cells`` with ``hard``'s share of late, leaving, faint and small cells."""
    n = cells.x0.size
    late, leaving, faint, small = (rng.random((4, n)) < np.array(
        [[hard.late], [hard.leaving], [hard.faint], [hard.small]]
    ))  # fmt: skip
    third = max(1, n_frames // 3)
    first = np.where(late, rng.integers(1, max(2, 2 * third), n), 0)
    last = np.where(leaving, rng.integers(third, max(third + 1, n_frames - 1), n), n_frames - 1)
    last = np.maximum(last, np.minimum(first + 1, n_frames - 1))  # every cell in 2+ frames
    minor = np.where(small, rng.uniform(*hard.small_radius, n), cells.semi_minor)
    major = np.where(small, minor * rng.uniform(1.0, 1.3, n), cells.semi_major)
    return replace(
        cells,
        semi_minor=minor,
        semi_major=np.maximum(major, minor),
        first_frame=first.astype(np.int64),
        last_frame=last.astype(np.int64),
        contrast=np.where(faint, hard.faint_contrast, 1.0),
    )
