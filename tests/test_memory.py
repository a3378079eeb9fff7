"""A stage worker reuses the memory it frees: a frame-sized array allocated again and again
costs no new page faults (glibc's defaults map and zero fresh pages every time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.probes import FRESH_FRAME_FAULTS

REPO = Path(__file__).resolve().parents[1]

# The frame probe of tests/probes.py, with or without the stage workers' setting.
PROBE = """
import sys
from pyama_lib.pipeline.memory import reuse_freed_memory
from tests.probes import frame_faults
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
print(frame_faults())
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
    assert _faults("default") >= 5 * FRESH_FRAME_FAULTS
    assert _faults("reuse") < FRESH_FRAME_FAULTS
