"""Test-only fault injection, off unless ``PYAMA_FAULT`` names a fault.

``PYAMA_FAULT="segment:1"`` makes the ``segment`` task of FOV 1 raise ``OSError`` once;
``PYAMA_FAULT="segment:1:crash"`` kills its worker process once (``os._exit(137)``, as the
kernel's OOM killer would), ``segment:1:crash-always`` every time; ``segment:1:slow`` sleeps
30 s once (room for a test to SIGKILL the run), ``segment:1:slow:2`` 2 s;
``segment:1:stubborn:2`` sleeps 2 s once and, told to terminate meanwhile, takes another 2 s
to exit (a worker finishing a write). Several faults are separated by commas. "Once" is
remembered by a file in the output folder (holding the pid that took the fault), so the
retry (in any process) proceeds normally. Used by the retry, crash and resume tests; never set it in
production.
"""

from __future__ import annotations

import os
import signal
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
        fired.write_text(str(os.getpid()))  # which process took the fault
        if kind == "crash":
            os._exit(137)
        if kind in ("slow", "stubborn"):
            seconds = float(parts[3]) if len(parts) > 3 else 30.0
            if kind == "stubborn":
                signal.signal(signal.SIGTERM, lambda *_, s=seconds: (time.sleep(s), os._exit(143)))
            time.sleep(seconds)
            continue
        raise OSError(f"injected fault ({ENV_VAR}={spec!r}) in {stage} of fov_{fov:03d}")
