"""What each start-up step of a command saves (``flows/cli/session.py`` says what they are).

The fixed cost a person waits for is a no-op re-run: ``pyama process`` over an output that is
already complete does everything but the stages (start-up, the temporary Prefect server, the
flow run, the bookkeeping, the exit). It is timed with every step on, and with each step off in
turn (``PYAMA_UNTUNED=<step>``), in rounds that run every configuration once in a fresh order,
so that a slow minute of the shared machine hits all of them alike. A step pays when the
median of its paired differences (off minus on, same round) is above zero.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import OUT, Record, ensure_synthetic

SIZES = {"n_fovs": 2, "n_frames": 10, "size": 256, "n_cells": 16, "compression": "zlib"}
ROUNDS, QUICK_ROUNDS = 7, 1
PYAMA = str(Path(sys.executable).parent / "pyama")


def _steps() -> tuple[str, ...]:
    from flows.cli.session import TUNINGS

    return TUNINGS


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _noop(path: str, out: Path, env: dict[str, str], untuned: str) -> tuple[float, float]:
    """Wall and CPU seconds (the command and every process it waited for) of one no-op."""
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(
        [PYAMA, "process", path, "-o", str(out)],
        env={**env, "PYAMA_UNTUNED": untuned},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"no-op re-run ({untuned or 'all on'}) exited {done.returncode}")
    return seconds, _children_cpu() - cpu


def run(quick: bool = False) -> list[Record]:
    return [measure(_steps(), QUICK_ROUNDS if quick else ROUNDS, quick)]


def measure(steps: tuple[str, ...], rounds: int, quick: bool = False) -> Record:
    """The no-op re-run with every step on and with each of ``steps`` off, ``rounds`` times."""
    path = ensure_synthetic("startup_2x10f_256_zlib", **SIZES)
    OUT.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="prefect_home_", dir=OUT)
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # the temporary server, as a first-time user has it
    out = OUT / "startup_out"
    configs = ["", *steps]
    walls: dict[str, list[float]] = {c: [] for c in configs}
    cpus: dict[str, list[float]] = {c: [] for c in configs}
    order = random.Random(0)
    try:
        shutil.rmtree(out, ignore_errors=True)
        _noop(path, out, env, "")  # processes it, and makes Prefect's database: not timed
        _noop(path, out, env, "")  # warms the page cache and the database
        for _ in range(rounds):
            for config in order.sample(configs, len(configs)):
                wall, cpu = _noop(path, out, env, config)
                walls[config].append(wall)
                cpus[config].append(cpu)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    base = walls[""]
    saved = {}
    for step in steps:
        pairs = [off - on for off, on in zip(walls[step], base, strict=True)]
        cpu_pairs = [off - on for off, on in zip(cpus[step], cpus[""], strict=True)]
        saved[step] = {
            "off_s": round(statistics.median(walls[step]), 2),
            "saved_s": round(statistics.median(pairs), 2),
            "pairs_saved_s": [round(s, 2) for s in pairs],
            "cpu_saved_s": round(statistics.median(cpu_pairs), 2),
        }
    return {
        "case": "startup",
        "quick": quick,
        **SIZES,
        "rounds": rounds,
        "noop_all_on_s": round(statistics.median(base), 2),
        "noop_all_on_runs_s": [round(w, 2) for w in base],
        "noop_all_on_cpu_s": round(statistics.median(cpus[""]), 2),
        "steps": saved,
    }


def table_rows(records: list[Record]) -> list[list[Any]]:
    rows = []
    for r in records:
        runs = r["noop_all_on_runs_s"]
        what = (
            f"no-op re-run of `pyama process`, every start-up step on ({len(runs)} rounds; "
            f"CPU {r['noop_all_on_cpu_s']:.2f} s)"
        )
        rows.append(["startup", what, f"{r['noop_all_on_s']:.2f} s", "–", "–"])
        for step, s in r["steps"].items():
            what = (
                f"`{step}` off: {s['off_s']:.2f} s; wall saved per round {s['pairs_saved_s']}; "
                f"CPU saved (median) {s['cpu_saved_s']:+.2f} s"
            )
            pays = "pays" if s["saved_s"] > 0 else "does not pay"
            rows.append(["startup", what, f"{s['saved_s']:+.2f} s", "> 0", pays])
    return rows
