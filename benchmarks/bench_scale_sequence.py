"""A TIFF-sequence folder of a lab's size: 1 000 to 100 000 image files (part of case ``scale``).

Per size, in a fresh process: the first open (one listing of the folder, every name parsed,
the layout checked), a second open in the same process (the per-process index cache),
``check_files`` (every image's header, as a run's planning does once) and ``input_identity``
(every file's size and time). The folder holds 250 positions × N frames × 2 channels of
64 × 64 uint16 images, hard links to four small files (what is measured is the listing, the
names and the headers, not pixel data). Time per file should not grow with the file count.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from common import OUT, Record, run_in_subprocess

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (100, 1_000)
POSITIONS = 50
LINKS_PER_SOURCE = 50_000  # ext4 allows 65 000 links to one file


def _folder(n_files: int) -> Path:
    """The sequence folder of ``n_files`` images (made when missing)."""
    import numpy as np
    import tifffile

    folder = OUT / f"sequence_{n_files}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = []
    n_frames = n_files // (POSITIONS * 2)
    for i in range(-(-n_files // LINKS_PER_SOURCE)):
        source = folder.parent / f"sequence_source_{i}.tif"
        tifffile.imwrite(source, np.full((64, 64), i, np.uint16))
        sources.append(source)
    n = 0
    for p in range(1, POSITIONS + 1):
        for t in range(1, n_frames + 1):
            for c in (1, 2):
                os.link(sources[n // LINKS_PER_SOURCE], folder / f"exp_t{t:04d}xy{p}c{c}.tif")
                n += 1
    done.touch()
    return folder


def measure(n_files: int) -> Record:
    """Child side: the timings of one size (the folder was made by the parent)."""
    from pyama_lib.io import open_acquisition
    from pyama_lib.io.identity import input_identity

    folder = OUT / f"sequence_{n_files}"
    start = time.perf_counter()
    acq = open_acquisition(folder)
    opened = time.perf_counter()
    acq.close()
    again = open_acquisition(folder)
    reopened = time.perf_counter()
    again.check_files()
    checked = time.perf_counter()
    input_identity(folder)
    identified = time.perf_counter()
    again.close()
    return {
        "n_files": n_files,
        "fovs": acq.n_fovs,
        "frames": acq.n_frames,
        "open_s": round(opened - start, 3),
        "reopen_ms": round(1000 * (reopened - opened), 2),
        "check_files_s": round(checked - reopened, 3),
        "identity_s": round(identified - checked, 3),
    }


def run(quick: bool = False) -> list[Record]:
    sizes = QUICK_SIZES if quick else SIZES
    for n in sizes:
        _folder(n)  # made before anything is timed
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    records = []
    for n in sizes:
        print(f"[bench] scale: a TIFF sequence of {n} files", file=sys.stderr, flush=True)
        record = run_in_subprocess("bench_scale_sequence", "measure", {"n_files": n})
        records.append({"case": "scale_sequence", "date": date, "quick": quick, **record})
    return records


def table_rows(records: list[Record]) -> list[list[Any]]:
    rows = []
    for r in records:
        if r["case"] != "scale_sequence":
            continue
        n = r["n_files"]
        per_file = 1e6 * (r["open_s"] + r["check_files_s"] + r["identity_s"]) / n
        what = (
            f"TIFF sequence, {n} files ({r['fovs']} FOVs × {r['frames']} frames × 2 channels): "
            f"open (listing, names) {r['open_s']:.2f} s, again in the process "
            f"{r['reopen_ms']:.2f} ms, every header {r['check_files_s']:.2f} s, identity "
            f"{r['identity_s']:.2f} s; peak RSS {r.get('peak_rss_mb', 0):.0f} MB"
        )
        rows.append(["scale", what, f"{per_file:.0f} µs per file", "linear in files", "–"])
    return rows
