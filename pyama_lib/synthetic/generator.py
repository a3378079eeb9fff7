"""Deterministic synthetic acquisition with ground truth, for the demo, the tests and benchmarks.

Cells sit near the points of a square micropattern grid, drift a few pixels over the movie and
express a fluorescent protein following the maturation model
(:mod:`~pyama_lib.analysis.builtin_models`, time in hours), or not at all. Channel 0 is phase
contrast (dark textured body, bright halo: high local variance on a flat, low-noise
background, so log-std segmentation finds the cells); channels 1..n_fl are fluorescence over
an uneven illumination background. Shot noise and camera read noise, uint16.

Everything is drawn from ``numpy.random.default_rng`` seeded by ``(seed, fov, stream, t)``, so a
frame is the same whatever was generated before it, and generation streams one frame at a time:
a 2048² × 180-frame FOV with 400 cells never holds more than one frame.

Ground truth, beside the OME-TIFF ``<base>.ome.tif``:

- ``<base>_truth_labels.zarr``: Zarr group, one uint16 array ``fov_XXX`` of shape (T, H, W) per
  FOV (one frame per chunk) holding each cell's body pixels as its cell id (optional);
- ``<base>_truth_cells.csv``: one row per (fov, cell, fluorescence channel): geometry, whether
  the cell expresses and its kinetic parameters;
- ``<base>_truth_traces.csv``: one row per (fov, cell, frame, channel): background-free total
  intensity (counts, before noise), body area and centre.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from pyama_lib.core.errors import InputDataError
from pyama_lib.io.readers.ome_tiff_writer import write_ome_tiff
from pyama_lib.synthetic.cells import (
    HALO_PX,
    KINETIC_PARAMS,
    MIN_SEMI_MINOR_PX,
    Cells,
    HardCases,
    draw_cells,
    maturation,
    pattern_grid,
    radius_range,
    with_hard_cases,
)

CHANNEL_NAMES = ("Phase", "GFP", "mCherry", "Cy5")
PIXEL_SIZE_UM = 0.65  # a 10x objective on a 6.5 µm camera pixel: the OME-TIFF's PhysicalSizeX

_PC_BACKGROUND = 1500.0  # counts
_PC_BODY_DARKENING = 330.0
_PC_TEXTURE_SD = 250.0  # ≫ background noise (~40): local std far above the log-std threshold
_PC_HALO = 500.0
_READ_NOISE_SD = 5.0
_FL_BACKGROUND = 100.0


@dataclass(frozen=True)
class SyntheticInfo:
    """Where :func:`make_synthetic` wrote what, and the acquisition's shape."""

    path: Path
    labels_path: Path | None
    cells_csv: Path
    traces_csv: Path
    n_fovs: int
    n_frames: int
    n_cells: int
    size: int
    channel_names: tuple[str, ...]
    times_min: tuple[float, ...]


def _illumination(rng: np.random.Generator, size: int, level: float) -> np.ndarray:
    """Smooth uneven background: a tilt plus an off-centre Gaussian hot spot, float32 (H, W)."""
    coords = np.linspace(0.0, 1.0, size, dtype=np.float32)
    y, x = coords[:, None], coords[None, :]
    gx, gy, cx, cy = rng.uniform(-0.4, 0.4, 4)
    spot = np.exp(-((x - 0.5 - cx / 2) ** 2 + (y - 0.5 - cy / 2) ** 2) / np.float32(0.18))
    field = level * (1.0 + gx * (x - 0.5) + gy * (y - 0.5) + 0.6 * spot)
    return field.astype(np.float32)


def _render(
    cells: Cells,
    t: int,
    frac: float,
    totals: np.ndarray,
    backgrounds: list[np.ndarray],
    seed: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame: (C, H, W) uint16 image, (H, W) uint16 labels and each cell's body area."""
    rng = np.random.default_rng(seed)
    size = backgrounds[0].shape[0]
    expected = [bg.copy() for bg in backgrounds]  # phase, then each fluorescence channel
    labels = np.zeros((size, size), dtype=np.uint16)
    areas = np.zeros(cells.x0.size, dtype=np.int64)
    cxs, cys = cells.x0 + frac * cells.drift_x, cells.y0 + frac * cells.drift_y
    present = cells.present(t)
    for i in range(cells.x0.size):
        if not present[i]:
            continue
        a, b = float(cells.semi_major[i]), float(cells.semi_minor[i])
        cx, cy = float(cxs[i]), float(cys[i])
        ext = a + HALO_PX + 1.0
        y_lo, y_hi = max(0, math.floor(cy - ext)), min(size, math.ceil(cy + ext) + 1)
        x_lo, x_hi = max(0, math.floor(cx - ext)), min(size, math.ceil(cx + ext) + 1)
        # Pixel centres relative to the cell centre, rotated into the ellipse's frame.
        yy = (np.arange(y_lo, y_hi, dtype=np.float32) - np.float32(cy))[:, None]
        xx = (np.arange(x_lo, x_hi, dtype=np.float32) - np.float32(cx))[None, :]
        cos, sin = np.float32(math.cos(cells.angle[i])), np.float32(math.sin(cells.angle[i]))
        d = np.sqrt(((xx * cos + yy * sin) / a) ** 2 + ((yy * cos - xx * sin) / b) ** 2)
        body = d < 1.0
        sl = (slice(y_lo, y_hi), slice(x_lo, x_hi))
        halo = np.clip(1.0 - (d - 1.0) * (0.5 * (a + b) / HALO_PX), 0.0, 1.0) * ~body
        texture = rng.standard_normal(body.shape, dtype=np.float32) * np.float32(_PC_TEXTURE_SD)
        contrast = np.where(body, texture - _PC_BODY_DARKENING, _PC_HALO * halo)
        if cells.contrast is not None:  # (a faint cell; the easy ones stay as they were)
            contrast *= np.float32(cells.contrast[i])
        expected[0][sl] += contrast
        labels[sl][body] = i + 1
        areas[i] = int(body.sum())
        weight = np.where(body, 1.25 - d * d, 0.0)  # dome profile, brighter in the middle
        weight /= max(float(weight.sum()), 1e-12)  # body sum = the cell's true total
        for k in range(totals.shape[0]):
            if totals[k, i] > 0:
                expected[k + 1][sl] += (totals[k, i] * weight).astype(np.float32)
    frame = np.stack([_noisy(e, rng) for e in expected])
    return frame, labels, areas


def _noisy(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shot + read noise as one Gaussian of variance λ + σ², uint16, in place on ``expected``.

    At the counts used here (λ ≥ ~60) this equals Poisson + Gaussian noise to within a fraction
    of a count, and is much faster than ``rng.poisson`` on large frames.
    """
    np.maximum(expected, 0.0, out=expected)
    noise = rng.standard_normal(expected.shape, dtype=np.float32)
    noise *= np.sqrt(expected + np.float32(_READ_NOISE_SD**2))
    expected += noise
    np.rint(expected, out=expected)
    np.clip(expected, 0, np.iinfo(np.uint16).max, out=expected)
    return expected.astype(np.uint16)


def _fov_frames(
    fov: int,
    cells: Cells,
    totals: np.ndarray,
    n_frames: int,
    size: int,
    seed: int,
    labels_out: zarr.Array | None,
    areas_out: np.ndarray,
) -> Iterator[np.ndarray]:
    """Yield one FOV's (C, H, W) frames; write its truth labels and areas on the way."""
    n_fl = totals.shape[1]
    backgrounds = [np.full((size, size), _PC_BACKGROUND, dtype=np.float32)]
    backgrounds += [
        _illumination(np.random.default_rng([seed, fov, 2, k]), size, _FL_BACKGROUND)
        for k in range(n_fl)
    ]
    for t in range(n_frames):
        frac = t / max(n_frames - 1, 1)
        frame, labels, areas = _render(cells, t, frac, totals[t], backgrounds, [seed, fov, 1, t])
        if labels_out is not None:
            labels_out[t] = labels
        areas_out[t] = areas
        yield frame


def make_synthetic(
    out_dir: str | Path,
    n_fovs: int = 2,
    n_frames: int = 40,
    size: int = 256,
    n_cells: int = 16,
    seed: int = 0,
    n_fl: int = 1,
    interval_min: float = 10.0,
    *,
    base_name: str = "synthetic",
    max_drift_px: float = 2.0,
    write_labels: bool = True,
    compression: str | None = None,
    hard: HardCases | None = None,
    brightness: float = 1.0,
) -> SyntheticInfo:
    """Write a synthetic multi-FOV OME-TIFF acquisition and its ground truth into ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder to write into (created). Existing files of the same names are replaced.
    n_fovs, n_frames, size, n_cells
        FOVs, frames per FOV, image side (px) and cells per FOV. Cells get the smallest square
        grid holding ``n_cells`` points. With a grid spacing ``size / ceil(sqrt(n_cells))`` of
        at least 64 px every cell is thick enough to survive PyAMA's segmentation and far
        enough from its neighbours not to merge; below that cells shrink (error under ~38 px).
    seed
        Same seed, same frames and truth (the OME-XML's UUID differs between writes).
    n_fl
        Fluorescence channels (1-3 named GFP, mCherry, Cy5); channel 0 is phase contrast.
    interval_min
        Minutes between frames, written as OME ``DeltaT``.
    base_name
        File stem: ``<base>.ome.tif``, ``<base>_truth_*.*``.
    max_drift_px
        Largest distance a cell drifts over the movie.
    write_labels
        Write the truth label stacks (skip them for large benchmarks to save time).
    compression
        TIFF compression passed to :func:`~pyama_lib.io.readers.ome_tiff_writer.write_ome_tiff`.
    hard
        Cells that arrive late, leave, are faint or small (:class:`HardCases`; their truth
        rows exist only for the frames a cell is in, and the cell table marks them). None:
        every cell is easy to find, in every frame.
    brightness
        Factor on every cell's fluorescence (its ``ktl``). At 1 the reporter is dim: a cell's
        plateau lies some 10-40 counts per pixel above a 100-count background, so shot noise
        alone puts its summed intensity 2-3% off; 5 is a bright reporter. The cells, their
        kinetics otherwise and the phase contrast stay the same.

    Returns
    -------
    SyntheticInfo
    """
    _validate(n_fovs, n_frames, size, n_cells, n_fl, interval_min, max_drift_px, brightness)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = CHANNEL_NAMES[: n_fl + 1]
    if n_fl >= len(CHANNEL_NAMES):  # more reporters than named ones: number them all
        names = ("Phase", *(f"FL{k}" for k in range(1, n_fl + 1)))
    times_min = np.arange(n_frames, dtype=np.float64) * interval_min
    cells = [
        draw_cells(np.random.default_rng([seed, fov, 0, 0]), size, n_cells, n_fl, max_drift_px)
        for fov in range(n_fovs)
    ]
    if hard is not None:  # a stream of its own: the easy cells stay the same
        cells = [
            with_hard_cases(np.random.default_rng([seed, fov, 3, 0]), c, n_frames, hard)
            for fov, c in enumerate(cells)
        ]
    if brightness != 1.0:  # after every draw: the same cells and streams, a brighter reporter
        cells = [replace(c, kinetics=_brighter(c.kinetics, brightness)) for c in cells]
    # (fov, T, n_fl, n_cells): from the model, so traces never depend on the rendering.
    totals = np.stack(
        [
            maturation(times_min[:, None, None] / 60.0, *np.moveaxis(c.kinetics, -1, 0))
            for c in cells
        ]
    )
    areas = np.zeros((n_fovs, n_frames, n_cells), dtype=np.int64)
    labels_path = out / f"{base_name}_truth_labels.zarr" if write_labels else None
    group = zarr.open_group(labels_path, mode="w") if labels_path is not None else None

    def labels_array(fov: int) -> zarr.Array | None:
        if group is None:
            return None
        arr = group.create_array(
            f"fov_{fov:03d}", shape=(n_frames, size, size), chunks=(1, size, size), dtype="uint16"
        )
        arr.attrs["axes"] = "TYX"
        return arr

    path = write_ome_tiff(
        out / f"{base_name}.ome.tif",
        (
            _fov_frames(f, cells[f], totals[f], n_frames, size, seed, labels_array(f), areas[f])
            for f in range(n_fovs)
        ),
        names,
        times_min,
        compression=compression,
        pixel_size_um=PIXEL_SIZE_UM,
    )
    cells_csv = out / f"{base_name}_truth_cells.csv"
    _cells_table(cells, n_frames).to_csv(cells_csv, index=False)
    traces_csv = out / f"{base_name}_truth_traces.csv"
    _traces_table(cells, totals, areas, times_min).to_csv(traces_csv, index=False)
    return SyntheticInfo(
        path=path,
        labels_path=labels_path,
        cells_csv=cells_csv,
        traces_csv=traces_csv,
        n_fovs=n_fovs,
        n_frames=n_frames,
        n_cells=n_cells,
        size=size,
        channel_names=tuple(names),
        times_min=tuple(times_min.tolist()),
    )


def _brighter(kinetics: np.ndarray, factor: float) -> np.ndarray:
    """Kinetics (n_fl, n_cells, 5) with ``ktl``, the model's only amplitude, times ``factor``."""
    out = kinetics.copy()
    out[..., KINETIC_PARAMS.index("ktl")] *= factor
    return out


def _validate(
    n_fovs: int,
    n_frames: int,
    size: int,
    n_cells: int,
    n_fl: int,
    interval_min: float,
    max_drift: float,
    brightness: float,
) -> None:
    problems = [
        f"{name} must be ≥ {low}, got {value}"
        for name, value, low in (
            ("n_fovs", n_fovs, 1),
            ("n_frames", n_frames, 1),
            ("size", size, 64),
            ("n_cells", n_cells, 1),
            ("n_fl", n_fl, 1),
        )
        if value < low
    ]
    if n_cells >= 1 and size >= 64:
        spacing = pattern_grid(size, n_cells)[2]
        if radius_range(spacing, min(2.0, 0.04 * spacing), max_drift)[1] < 4.0:
            problems.append(
                f"{n_cells} cells do not fit a {size} px image with {max_drift:g} px drift (grid "
                f"spacing {spacing:.0f} px); use fewer cells, a larger size or less drift"
            )
    if not max_drift >= 0:
        problems.append(f"max_drift_px must be ≥ 0, got {max_drift}")
    if not interval_min > 0:
        problems.append(f"interval_min must be > 0, got {interval_min}")
    if not brightness > 0:
        problems.append(f"brightness must be > 0, got {brightness}")
    if problems:
        raise InputDataError("synthetic acquisition: " + "; ".join(problems))


def _cells_table(cells: list[Cells], n_frames: int) -> pd.DataFrame:
    """One row per (fov, cell, fluorescence channel): geometry, expression, kinetics."""
    frames = []
    for fov, c in enumerate(cells):
        n_fl, n = c.kinetics.shape[:2]
        geometry = {f.name: getattr(c, f.name) for f in fields(c) if f.name != "kinetics"}
        geometry = {name: v for name, v in geometry.items() if v is not None}
        if c.first_frame is not None and c.last_frame is not None and c.contrast is not None:
            geometry |= {"late": c.first_frame > 0, "faint": c.contrast < 1.0}
            geometry |= {"leaving": c.last_frame < n_frames - 1}
            geometry |= {"small": c.semi_minor < MIN_SEMI_MINOR_PX}
        for k in range(n_fl):
            table = {"fov": fov, "cell": np.arange(1, n + 1), "channel": k + 1} | geometry
            table |= {p: c.kinetics[k, :, j] for j, p in enumerate(KINETIC_PARAMS)}
            frames.append(pd.DataFrame(table))
    return pd.concat(frames, ignore_index=True)


def _traces_table(
    cells: list[Cells], totals: np.ndarray, areas: np.ndarray, times_min: np.ndarray
) -> pd.DataFrame:
    """One row per (fov, cell, frame, channel): true total intensity, area and centre."""
    n_fovs, n_frames, n_fl, n = totals.shape
    frac = np.arange(n_frames, dtype=np.float64) / max(n_frames - 1, 1)
    frames = []
    for fov, c in enumerate(cells):
        present = np.stack([c.present(t) for t in range(n_frames)])  # (T, n): rows that exist
        for k in range(n_fl):
            frame_idx = np.repeat(np.arange(n_frames), n)
            frames.append(
                pd.DataFrame(
                    {
                        "fov": fov,
                        "cell": np.tile(np.arange(1, n + 1), n_frames),
                        "frame": frame_idx,
                        "time": times_min[frame_idx],
                        "channel": k + 1,
                        "intensity_total": totals[fov, :, k, :].ravel(),
                        "area": areas[fov].ravel(),
                        "position_x": (c.x0 + frac[:, None] * c.drift_x).ravel(),
                        "position_y": (c.y0 + frac[:, None] * c.drift_y).ravel(),
                    }
                )[present.ravel()]
            )
    return pd.concat(frames, ignore_index=True)
