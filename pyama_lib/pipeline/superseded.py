"""FOVs of an earlier version of the input, set aside before a run.

An acquisition re-exported to the same path (or an inbox reusing a file name) owns the same
output folder (:func:`~pyama_lib.pipeline.plan.check_output_owner`), and every stage redoes
what it computes from changed content. But FOVs the run does not redo would stay behind as
results of the new file: a FOV the new file no longer has, or one outside this run's
selection. :func:`set_aside_superseded` moves every FOV computed from another version of the
input (its store's copy marker names another input) or absent from the input to
``superseded/<time>/`` in the output folder, with its traces partition, and drops it from
``processing_results.yaml``, so a merge never takes them for the new acquisition's.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path

from pyama_lib.io.results_yaml import RUN_OF_FOV, load_results, results_file_path, save_results
from pyama_lib.io.store import FovStore, array_name, fov_dir
from pyama_lib.io.traces import PARQUET_DIR
from pyama_lib.pipeline.plan import Plan

SUPERSEDED_DIR = "superseded"
_FOV_DIR = re.compile(r"^fov_(\d+)$")
_FOV_PARTITION = re.compile(r"^fov=(\d+)$")


def fovs_on_disk(out: Path) -> set[int]:
    """The FOVs an output folder holds anything of: folders, traces partitions, results file."""
    fovs = {int(m[1]) for p in _children(out) if (m := _FOV_DIR.match(p.name))}
    fovs |= {int(m[1]) for p in _children(out / PARQUET_DIR) if (m := _FOV_PARTITION.match(p.name))}
    if results_file_path(out).is_file():
        fovs |= set(load_results(out).results_paths)
    return fovs


def superseded_fovs(plan: Plan) -> list[int]:
    """The FOVs of ``plan``'s output folder that are not results of ``plan``'s input: beyond
    the input's FOVs, or copied from another version of it. A FOV whose store does not say
    (a folder written by PyAMA itself) is left alone."""
    out, key = Path(plan.output_dir), plan.jobs[0].input_key
    stale = []
    for fov in sorted(fovs_on_disk(out)):
        if fov >= plan.n_fovs:
            stale.append(fov)
            continue
        marker = FovStore(out, plan.base_name, fov).completion(array_name("pc", plan.channels.pc))
        copied_from = (marker or {}).get("params", {}).get("input")
        if copied_from is not None and copied_from != key:
            stale.append(fov)
    return stale


def set_aside_superseded(plan: Plan) -> str | None:
    """Move the :func:`superseded_fovs` of ``plan`` aside; a sentence saying so, or None.

    Call it holding the output folder's lock, before the run writes anything.
    """
    stale = superseded_fovs(plan)
    if not stale:
        return None
    out = Path(plan.output_dir)
    aside = out / SUPERSEDED_DIR / datetime.now().strftime("%Y%m%dT%H%M%S%f")
    for fov in stale:
        for source in (fov_dir(out, fov), out / PARQUET_DIR / f"fov={fov}"):
            if source.exists():
                target = aside / source.relative_to(out)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, target)
    if results_file_path(out).is_file():
        results = load_results(out)
        for fov in stale:
            results.results_paths.pop(fov, None)
            (results.extra.get(RUN_OF_FOV) or {}).pop(fov, None)
        save_results(results)
    return (
        f"{out}: FOV(s) {stale} were computed from another version of {plan.input_path} or "
        f"are not in it; moved to {aside} and dropped from processing_results.yaml. Merge again "
        "if a sample used them"
    )


def _children(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
