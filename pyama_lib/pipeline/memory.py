"""Let a stage worker reuse the memory it frees, instead of returning it to the kernel.

Every frame of a stage allocates and frees the same large temporaries (at 2048²: the 32 MB
float64 spline surface of the background correction, 16 MB float32 frame copies, the read and
encode buffers of the store). glibc serves each allocation above its mmap threshold (adjusted
by itself to at most 32 MB) with a fresh ``mmap`` and unmaps it on free, and hands a freed heap
top above its trim threshold back to the kernel: every frame then pays page faults and the
kernel's zeroing of the new pages. Raising both thresholds keeps that memory in the heap for
the next frame; outputs are the same bytes. The cost is up to ``TRIM_THRESHOLD`` of freed
memory kept per worker (``make bench``, cases ``stages`` and ``scaling``, report the peaks).
"""

from __future__ import annotations

import ctypes
import sys

# mallopt() parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap and are reused (glibc's own limit: 32 MB).
MMAP_THRESHOLD = 256 << 20
#: A freed heap top is returned to the kernel only beyond this much.
TRIM_THRESHOLD = 256 << 20


def reuse_freed_memory() -> bool:
    """Set this process's allocator thresholds (glibc on Linux); True when they were set.

    Elsewhere (macOS, Windows, musl, whose ``mallopt`` does nothing) it changes nothing and
    returns False: the stages then run as they did, only slower.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # Setting either one also stops glibc's own adjustment of both.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
