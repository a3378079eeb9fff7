"""Small real processing outputs the tests build once per module."""

from __future__ import annotations

from pathlib import Path

from pyama_lib.core.selection import STAGES, Channels
from pyama_lib.io.results_yaml import update_results_file
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.stages import results_entries, run_stage
from pyama_lib.synthetic.generator import make_synthetic


def processed_run(root: Path, n_fovs: int) -> Path:
    """Every stage run on a synthetic acquisition of ``n_fovs`` FOVs × 32 frames × 128², 4 cells,
    fluorescence channels 1 and 2, with its results YAML; the output folder."""
    acq = make_synthetic(
        root / "acq", n_fovs=n_fovs, n_frames=32, size=128, n_cells=4, n_fl=2, seed=7
    )
    out = root / "out"
    plan = plan_jobs(acq.path, out, Channels(pc=0, fl=[1, 2]))
    for job in plan.jobs:
        for stage in STAGES:
            run_stage(stage, job)
    update_results_file(results_entries(plan, [job.fov for job in plan.jobs]))
    return out
