"""Shared helpers of the benchmarks: fresh-subprocess cases, peak RSS, timing, JSON output.

Every measured case runs in a fresh Python process (``python -c``) so that its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``, read in the child) is the case's own and not the
high-water mark of whatever ran before it in the parent. The child writes its result as JSON
into a file (its stdout is sent to our stderr: Prefect and tifffile may print there), and the
parent prints one JSON object per line.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT = BENCH_DIR / "out"  # gitignored: inputs (cached), outputs and scratch
DATA = OUT / "data"

# How the child finds this module and the project (``tests.references`` is not installed).
_CHILD = (
    "import sys; sys.path[:0] = [{bench!r}, {repo!r}]; "
    "import common; common.child_main(sys.argv[1:])"
)

Record = dict[str, Any]


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size so far in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024.0


#: The team's probe of a host's speed, beside the checkout: quoted with every figure, since
#: hosts of one kind differ up to 2x.
HOSTPROBE = REPO.parent / "shared" / "bench" / "hostprobe.py"


def hostprobe() -> Record:
    """The host probe's figures now (empty where the probe is not beside the checkout)."""
    if not HOSTPROBE.is_file():
        return {}
    done = subprocess.run(
        [sys.executable, str(HOSTPROBE)], capture_output=True, text=True, cwd=BENCH_DIR
    )
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()}


def describe_probe(probe: Mapping[str, Any]) -> str:
    """``"loop 0.42 s, import prefect 2.6 s, zlib 46 ms, numpy 8.9 ms, write 0.17 s"``."""
    if not probe or "error" in probe:
        return "host probe not available"
    return (
        f"loop {probe['python_loop_s']} s, import prefect {probe['import_prefect_s']} s, "
        f"zlib {probe['zlib_decode_ms']} ms, numpy {probe['numpy_2048_ms']} ms, "
        f"write {probe['write_64mb_s']} s"
    )


def machine() -> Record:
    """Facts that explain the numbers: the date, cores, load, Python and the host probe."""
    return {
        "case": "machine",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "hostprobe": hostprobe(),
    }


def emit(record: Mapping[str, Any]) -> None:
    """Print one JSON object on its own line (the benchmark's machine-readable output)."""
    print(json.dumps(record, default=str), flush=True)


def child_main(argv: Sequence[str]) -> None:
    """Entry point in the child: ``module func kwargs_json result_path``."""
    module_name, func_name, kwargs_json, result_path = argv
    module = __import__(module_name)
    # The bench module is imported (cases import the libraries they need themselves).
    baseline = peak_rss_mb()
    start = time.perf_counter()
    result = getattr(module, func_name)(**json.loads(kwargs_json))
    result = dict(result)
    result.setdefault("child_seconds", round(time.perf_counter() - start, 3))
    result["baseline_rss_mb"] = round(baseline, 1)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    # Largest waited-for descendant (spawned workers, the ephemeral Prefect server).
    result["peak_rss_children_mb"] = round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1)
    result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    Path(result_path).write_text(json.dumps(result, default=str))


def run_in_subprocess(
    module: str,
    func: str,
    kwargs: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    unset_env: Sequence[str] = (),
    timeout: float | None = None,
) -> Record:
    """Run ``module.func(**kwargs)`` (a module of this folder) in a fresh interpreter.

    ``func`` must return a JSON-able dict; the child adds its peak RSS and baseline RSS.
    ``env`` entries are added to the child's environment, ``unset_env`` removed from it.
    """
    OUT.mkdir(parents=True, exist_ok=True)
    result_path = OUT / f".result_{os.getpid()}_{time.monotonic_ns()}.json"
    child_env = {**os.environ, **(env or {})}
    for name in unset_env:
        child_env.pop(name, None)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), child_env.get("PYTHONPATH", "")) if p
    )
    code = _CHILD.format(bench=str(BENCH_DIR), repo=str(REPO))
    args = [module, func, json.dumps(dict(kwargs or {})), str(result_path)]
    load_start = os.getloadavg()[0]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            env=child_env,
            stdout=sys.stderr,  # keep our stdout for JSON lines only
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0 or not result_path.is_file():
            raise RuntimeError(f"benchmark child {module}.{func} failed (exit {proc.returncode})")
        result = json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)
    result["loadavg_1m_start"] = round(load_start, 2)
    return result


def run_with_scratch(module: str, func: str, input_path: str, scratch: str) -> Record:
    """:func:`run_in_subprocess` with an ``out_dir`` scratch folder removed afterwards."""
    out_dir = OUT / scratch
    try:
        result = run_in_subprocess(
            module, func, {"input_path": input_path, "out_dir": str(out_dir)}
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    result.pop("child_seconds", None)
    return result


def ms_per_frame(fn: Callable[[], Any], n_frames: int, repeats: int = 1) -> tuple[float, float]:
    """Best-of-``repeats`` (wall, CPU) time of ``fn()`` (which does ``n_frames``), ms per frame.

    The machine is shared: wall time counts the moments the process waits for a core, CPU time
    (``time.process_time``) does not, and for the single-threaded array functions it is the
    steadier measure of the work. The best pass is the least disturbed one.
    """
    best_wall = best_cpu = float("inf")
    for _ in range(max(1, repeats)):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return 1000.0 * best_wall / n_frames, 1000.0 * best_cpu / n_frames


def ensure_synthetic(name: str, **kwargs: Any) -> str:
    """Path of a cached synthetic OME-TIFF under ``out/data/<name>``, made when missing.

    The data is deterministic (same seed, same frames), so it is kept between runs; a
    ``params.json`` written last marks a complete set and records the parameters. Generation
    runs in a subprocess so its memory never inflates the caller.
    """
    folder = DATA / name
    params_file = folder / "params.json"
    wanted = {"base_name": name, "write_labels": False, **kwargs}
    if params_file.is_file() and json.loads(params_file.read_text()) == wanted:
        return str(folder / f"{name}.ome.tif")
    params_file.unlink(missing_ok=True)
    print(f"[bench] generating synthetic data {name} {kwargs} ...", file=sys.stderr, flush=True)
    result = run_in_subprocess("common", "_make_synthetic", {"out_dir": str(folder), **wanted})
    params_file.write_text(json.dumps(wanted))
    print(f"[bench]   done in {result['child_seconds']:.1f} s", file=sys.stderr, flush=True)
    return result["path"]


def _make_synthetic(out_dir: str, **kwargs: Any) -> Record:
    """Child side of :func:`ensure_synthetic`."""
    from pyama_lib.synthetic.cells import HardCases
    from pyama_lib.synthetic.generator import make_synthetic

    hard = HardCases() if kwargs.pop("hard", False) else None  # JSON-able as a flag
    info = make_synthetic(out_dir, **kwargs, hard=hard)
    return {"path": str(info.path)}


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    """``met`` or how far off the target is, e.g. ``missed by 12%``."""
    met = value >= target if higher_is_better else value <= target
    if met:
        return "met"
    off = (target - value) / target if higher_is_better else (value - target) / target
    return f"missed by {100 * off:.0f}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def shown_verdict(record: Mapping[str, Any]) -> str:
    """The verdict for the table; targets are set for the full sizes, so quick runs say so."""
    if record.get("quick"):
        return f"n/a at quick sizes ({record['verdict']})"
    return str(record["verdict"])
