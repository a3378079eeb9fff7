"""Per-FOV quality-control pictures from the store: what segmentation and tracking found."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pyama_lib.analysis.figures import save_png, segmentation_figure
from pyama_lib.io.store import array_name
from pyama_lib.pipeline.plan import FovJob


def segmentation_png_path(job: FovJob) -> Path:
    """``<out>/fov_XXX/<base>_fov_XXX_segmentation.png``, beside the FOV's traces CSVs."""
    return job.store.path.parent / f"{job.base_name}_fov_{job.fov:03d}_segmentation.png"


def write_segmentation_png(job: FovJob, n_frames: int = 3) -> Path | None:
    """Outlines and track ids over the phase-contrast frame at ``n_frames`` time points
    (first, middle, last); None when the FOV has no complete tracked labels yet."""
    store = job.store
    pc, labels = array_name("pc", job.channels.pc), array_name("seg_labeled", job.channels.pc)
    if not (store.is_complete(pc) and store.is_complete(labels)):
        return None
    frames, tracks = store.frames(pc), store.frames(labels)
    picked = sorted({int(i) for i in np.linspace(0, len(frames) - 1, n_frames).round()})
    fig = segmentation_figure(
        [frames[i] for i in picked],
        [tracks[i] for i in picked],
        picked,
        f"{job.base_name} fov_{job.fov:03d}: segmentation and track ids",
    )
    return save_png(fig, segmentation_png_path(job))
