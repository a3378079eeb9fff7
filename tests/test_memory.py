"""A stage worker reuses the memory it frees: a frame-sized array allocated again and again
costs no new page faults (glibc's defaults map and zero fresh pages every time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Allocates and fills a 2048² float64 frame (32 MB, as the background's spline surface) six
# times and prints the minor page faults of the last five.
PROBE = """
import resource, sys
import numpy as np
from pyama_lib.pipeline.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
def frame():
    a = np.empty((2048, 2048)); a.fill(1.0); return float(a[-1, -1])
frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    frame()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, cwd=REPO, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_freed_frames_are_reused_without_page_faults():
    # Fresh memory faults at least once per page on first touch, so once per 2 MB even with
    # transparent huge pages: 16 times per frame at least.
    per_frame = 2048 * 2048 * 8 // (2 << 20)
    assert _faults("default") >= 5 * per_frame
    assert _faults("reuse") < per_frame
