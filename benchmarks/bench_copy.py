"""Copy stage: peak RSS and throughput of ``copy_fov`` (OME-TIFF -> Zarr store).

``copy_fov`` streams one frame at a time, so its peak memory must not grow with the number of
frames: a 200-frame 1024² FOV (1 pc + 1 fl channel, uint16, 800 MiB of pixels) must copy in
well under 300 MB of peak RSS.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from common import Record, ensure_synthetic, run_with_scratch, shown_verdict, verdict

TARGET_RSS_MB = 300.0

FULL = {"n_frames": 200, "size": 1024, "n_cells": 64}
QUICK = {"n_frames": 20, "size": 256, "n_cells": 16}


def copy_case(input_path: str, out_dir: str) -> Record:
    """Child side: copy FOV 0 (channels 0 and 1) into a fresh store; time it."""
    from pyama_lib.core.selection import Channels
    from pyama_lib.io import open_acquisition
    from pyama_lib.io.store import FovStore
    from pyama_lib.pipeline.stages import copy_fov

    shutil.rmtree(out_dir, ignore_errors=True)
    channels = Channels(pc=0, fl=(1,))
    with open_acquisition(input_path) as acq:
        store = FovStore(out_dir, acq.base_name, 0)
        start = time.perf_counter()
        result = copy_fov(acq, 0, channels, store)
        seconds = time.perf_counter() - start
        n_bytes = acq.n_frames * acq.height * acq.width * acq.dtype.itemsize * len(channels.all)
        facts = {"n_frames": acq.n_frames, "size": acq.width, "dtype": str(acq.dtype)}
    stored = sum(f.stat().st_size for f in Path(store.path).rglob("*") if f.is_file())
    return {
        **facts,
        "arrays_written": result.written,
        "seconds": round(seconds, 3),
        "mib_copied": round(n_bytes / 2**20, 1),
        "mb_per_s": round(n_bytes / 1e6 / seconds, 1),
        "store_mib": round(stored / 2**20, 1),
    }


def run(quick: bool = False) -> list[Record]:
    """Make (or reuse) the input, run the copy in a fresh process and return one record."""
    sizes = QUICK if quick else FULL
    name = f"copy_{sizes['n_frames']}f_{sizes['size']}"
    path = ensure_synthetic(name, n_fovs=1, **sizes)
    result = run_with_scratch("bench_copy", "copy_case", path, "copy_store")
    record: Record = {"case": "copy", "quick": quick, **result}
    record["target_peak_rss_mb"] = TARGET_RSS_MB
    record["verdict"] = verdict(result["peak_rss_mb"], TARGET_RSS_MB, higher_is_better=False)
    return [record]


def table_rows(records: list[Record]) -> list[list[Any]]:
    """Rows of the summary table: case, measurement, value, target, verdict."""
    rows = []
    for r in records:
        what = f"copy_fov {r['n_frames']}×{r['size']}² ×2 ch uint16"
        rows.append(
            [
                "copy",
                f"{what}: peak RSS (bare interpreter {r['baseline_rss_mb']:.0f} MB)",
                f"{r['peak_rss_mb']:.0f} MB",
                f"< {TARGET_RSS_MB:.0f} MB",
                shown_verdict(r),
            ]
        )
        rows.append(["copy", f"{what}: throughput", f"{r['mb_per_s']:.0f} MB/s", "–", "–"])
    return rows
