"""Test-only fault injection, off unless ``PYAMA_FAULT`` names a fault.

``PYAMA_FAULT="segment:1"`` makes the ``segment`` task of FOV 1 raise ``OSError`` once;
``PYAMA_FAULT="segment:1:crash"`` kills its worker process once (``os._exit(137)``, as the
kernel's OOM killer would), ``segment:1:crash-always`` every time; ``PYAMA_FAULT="segment:1:slow"``
sleeps 30 s once (room for a test to SIGKILL the run), ``segment:1:slow:2`` 2 s. Several faults
are separated by commas. "Once" is remembered by a file in the output folder, so the retry (in
any process) proceeds normally. Used by the retry, crash and resume tests; never set it in
production.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV_VAR = "PYAMA_FAULT"


def maybe_inject_fault(stage: str, fov: int, output_dir: str | Path) -> None:
    spec = os.environ.get(ENV_VAR, "")
    for fault in filter(None, (f.strip() for f in spec.split(","))):
        parts = fault.split(":")
        if parts[:2] != [stage, str(fov)]:
            continue
        kind = parts[2] if len(parts) > 2 else "oserror"
        if kind == "crash-always":
            os._exit(137)
        fired = Path(output_dir) / f".pyama-fault-{stage}-{fov}-{kind}"
        if fired.exists():
            continue
        fired.touch()
        if kind == "crash":
            os._exit(137)
        if kind == "slow":
            time.sleep(float(parts[3]) if len(parts) > 3 else 30.0)
            continue
        raise OSError(f"injected fault ({ENV_VAR}={spec!r}) in {stage} of fov_{fov:03d}")
