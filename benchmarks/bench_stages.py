"""Per-stage speed, fast array functions vs the plain references, and streaming peak RSS.

Timing: one synthetic 2048² FOV with ~400 cells, a handful of frames held in memory. Each fast
function is timed as the best of several passes over all frames; each reference (slow) runs
once over its first frames. Both are reported in ms per frame, wall and CPU time, with a check
that the outputs agree (the fast functions promise PyAMA's results). The speed-up is taken on
CPU time: all these functions are single-threaded, and on a shared machine wall time also
counts the moments the process waited for a core. Streaming: every stage run through the Zarr
store with ``run_stage`` for a 180-frame 2048² FOV in a fresh process; its peak RSS must stay
under 1 GB whatever the number of frames.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import numpy as np
from common import (
    Record,
    ensure_synthetic,
    ms_per_frame,
    peak_rss_mb,
    run_in_subprocess,
    run_with_scratch,
    shown_verdict,
)
from common import verdict as _verdict

# Minimum speed-up (reference ms / fast ms) per stage; background only has to be no slower.
TARGETS = {"segmentation": 5.0, "background": 1.0, "tracking": 10.0, "extraction": 50.0}
TARGET_STREAM_RSS_MB = 1000.0

FULL = {"size": 2048, "n_cells": 400, "n_frames": 5, "ref_frames": 3, "repeats": 3}
QUICK = {"size": 512, "n_cells": 25, "n_frames": 4, "ref_frames": 2, "repeats": 2}
FULL_STREAM = {"size": 2048, "n_cells": 400, "n_frames": 180}
QUICK_STREAM = {"size": 512, "n_cells": 25, "n_frames": 30}


def _row(
    stage: str, variant: str, fast: tuple[float, float], ref: tuple[float, float], check: Record
) -> Record:
    """One timing record; ``fast`` and ``ref`` are (wall, CPU) ms per frame."""
    speedup = ref[1] / fast[1]  # CPU time: robust to other work on the shared machine
    return {
        "case": "stages",
        "stage": stage,
        "variant": variant,
        "fast_ms_per_frame": round(fast[0], 2),
        "reference_ms_per_frame": round(ref[0], 2),
        "fast_cpu_ms_per_frame": round(fast[1], 2),
        "reference_cpu_ms_per_frame": round(ref[1], 2),
        "speedup": round(speedup, 1),
        "speedup_wall": round(ref[0] / fast[0], 1),
        "target_speedup": TARGETS[stage],
        "verdict": _verdict(speedup, TARGETS[stage], higher_is_better=True),
        **check,
    }


def _time_once(fn: Any, n_frames: int) -> tuple[tuple[float, float], Any]:
    """((wall, CPU) ms per frame, result) of a single call: for the slow references."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    return (1000.0 * wall / n_frames, 1000.0 * cpu / n_frames), out


def timing_case(input_path: str, n_frames: int, ref_frames: int, repeats: int) -> Record:
    """Child side: time every stage's fast function and its reference on FOV 0 in memory."""
    from pyama_lib.io import open_acquisition
    from pyama_lib.processing.background import correct_frame
    from pyama_lib.processing.extraction import ExtractionParams, extract_traces
    from pyama_lib.processing.segmentation import segment_frame
    from pyama_lib.processing.tracking import track_frames, track_masks
    from tests.references.background import correct_frame_reference
    from tests.references.extraction import extract_reference
    from tests.references.segmentation import segment_frame_reference
    from tests.references.tracking import track_reference

    with open_acquisition(input_path) as acq:
        pc = [acq.frame(0, 0, t) for t in range(n_frames)]
        fl = [acq.frame(0, 1, t) for t in range(n_frames)]
        times = acq.frame_times(0)[:n_frames]
    r, rows = ref_frames, []

    # Segmentation: separable morphology vs scipy's iterated 7x7 opening/closing.
    seg = [segment_frame(p) for p in pc]
    fast = ms_per_frame(lambda: [segment_frame(p) for p in pc], n_frames, repeats)
    ref, ref_seg = _time_once(lambda: [segment_frame_reference(p) for p in pc[:r]], r)
    same = all(np.array_equal(a, b) for a, b in zip(seg, ref_seg, strict=False))
    rows.append(_row("segmentation", "segment_frame", fast, ref, {"identical": same}))

    # Background: vectorised window medians vs one nanmedian per window.
    corr = [correct_frame(f, s) for f, s in zip(fl, seg, strict=True)]
    fast = ms_per_frame(
        lambda: [correct_frame(f, s) for f, s in zip(fl, seg, strict=True)], n_frames, repeats
    )
    ref, ref_corr = _time_once(
        lambda: [correct_frame_reference(f, s) for f, s in zip(fl[:r], seg[:r], strict=True)], r
    )
    diff = max(float(np.nanmax(np.abs(a - b))) for a, b in zip(corr, ref_corr, strict=False))
    rows.append(_row("background", "correct_frame", fast, ref, {"max_abs_diff": diff}))

    # Tracking: all frames for both (frame 0 has nothing to match, so keep the mix the same).
    masks = np.stack(seg)

    def streaming() -> list[np.ndarray]:
        return list(track_frames(iter(masks)))  # the stage's path: one frame at a time

    tracked = track_masks(masks)
    ref, ref_tracked = _time_once(lambda: track_reference(masks), n_frames)
    same = bool(np.array_equal(tracked, ref_tracked))
    fast = ms_per_frame(streaming, n_frames, repeats)
    check = {"identical": same and bool(np.array_equal(np.stack(streaming()), ref_tracked))}
    rows.append(_row("tracking", "track_frames", fast, ref, check))

    # Extraction: one pass grouping pixels by label vs one boolean mask per cell.
    params = ExtractionParams(min_frames=0)
    df = extract_traces(tracked, corr, times, 0, params)
    fast = ms_per_frame(lambda: extract_traces(tracked, corr, times, 0, params), n_frames, repeats)
    ref, ref_df = _time_once(
        lambda: extract_reference(tracked[:r], corr[:r], times[:r], 0, min_frames=0), r
    )
    sub = df[df["frame"] < r].reset_index(drop=True)
    same_rows = len(sub) == len(ref_df) and np.array_equal(sub["cell"], ref_df["cell"])
    rel = float("nan")
    if same_rows:
        ref_total = ref_df["intensity_total"].to_numpy()
        err = np.abs(sub["intensity_total"].to_numpy() - ref_total)
        rel = float(np.max(err / np.maximum(np.abs(ref_total), 1.0)))
    check = {"same_rows": bool(same_rows), "max_rel_diff_intensity": rel}
    rows.append(_row("extraction", "extract_traces", fast, ref, check))

    cells = int(df.groupby("frame")["cell"].nunique().median())
    shape = list(pc[0].shape)
    for row in rows:
        row.update(size=shape[0], cells_per_frame=cells, fast_frames=n_frames, ref_frames=r)
    rows[2]["ref_frames"] = n_frames  # tracking: the reference runs all frames
    return {"rows": rows}


def streaming_case(input_path: str, out_dir: str) -> Record:
    """Child side: run every stage for FOV 0 through the store; peak RSS after each stage."""
    from pyama_lib.core.selection import STAGES, Channels
    from pyama_lib.pipeline.plan import plan_jobs
    from pyama_lib.pipeline.stages import run_stage

    shutil.rmtree(out_dir, ignore_errors=True)
    plan = plan_jobs(input_path, out_dir, Channels(pc=0, fl=(1,)), fovs=[0])
    job = plan.jobs[0]
    seconds, rss = {}, {}
    for stage in STAGES:
        result = run_stage(stage, job)
        seconds[stage] = round(result.seconds, 2)
        rss[stage] = round(peak_rss_mb(), 1)  # running peak: shows which stage sets it
    return {
        "n_frames": plan.n_frames,
        "size": plan.shape[0],
        "stage_seconds": seconds,
        "ms_per_frame": {s: round(1000 * v / plan.n_frames, 1) for s, v in seconds.items()},
        "peak_rss_after_stage_mb": rss,
    }


def run(quick: bool = False) -> list[Record]:
    """Timing rows (one per stage variant), then the streaming RSS record."""
    sizes = QUICK if quick else FULL
    name = f"stages_{sizes['n_frames']}f_{sizes['size']}"
    path = ensure_synthetic(
        name, n_fovs=1, n_frames=sizes["n_frames"], size=sizes["size"], n_cells=sizes["n_cells"]
    )
    kwargs = {k: sizes[k] for k in ("n_frames", "ref_frames", "repeats")}
    result = run_in_subprocess("bench_stages", "timing_case", {"input_path": path, **kwargs})
    records: list[Record] = [{**row, "quick": quick} for row in result["rows"]]

    stream = QUICK_STREAM if quick else FULL_STREAM
    name = f"stream_{stream['n_frames']}f_{stream['size']}"
    path = ensure_synthetic(name, n_fovs=1, **stream)
    res = run_with_scratch("bench_stages", "streaming_case", path, "stream_store")
    res.update(
        case="stages",
        stage="all (streaming through store)",
        quick=quick,
        target_peak_rss_mb=TARGET_STREAM_RSS_MB,
        verdict=_verdict(res["peak_rss_mb"], TARGET_STREAM_RSS_MB, higher_is_better=False),
    )
    records.append(res)
    return records


def table_rows(records: list[Record]) -> list[list[Any]]:
    """Rows of the summary table: case, measurement, value, target, verdict."""
    rows = []
    for r in records:
        if "speedup" in r:
            what = (
                f"{r['stage']} ({r['variant']}), {r['size']}², {r['cells_per_frame']} cells: "
                f"{r['fast_cpu_ms_per_frame']:.1f} vs {r['reference_cpu_ms_per_frame']:.0f} CPU "
                f"ms/frame (wall {r['fast_ms_per_frame']:.1f} vs "
                f"{r['reference_ms_per_frame']:.0f}, {r['speedup_wall']:.1f}×)"
            )
            target = f"≥ {r['target_speedup']:g}×"
            rows.append(["stages", what, f"{r['speedup']:.1f}×", target, shown_verdict(r)])
        else:
            per = ", ".join(f"{s} {v:.0f}" for s, v in r["ms_per_frame"].items())
            what = f"all stages streamed, {r['n_frames']}×{r['size']}²: peak RSS (ms/frame: {per})"
            target = f"< {r['target_peak_rss_mb']:.0f} MB"
            rows.append(["stages", what, f"{r['peak_rss_mb']:.0f} MB", target, shown_verdict(r)])
    return rows
