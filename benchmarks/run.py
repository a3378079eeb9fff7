"""Run the benchmarks: one JSON object per line on stdout, then a markdown summary table.

Usage::

    .venv/bin/python benchmarks/run.py                 # every case, full sizes (10-20 min)
    .venv/bin/python benchmarks/run.py --quick         # small sizes, a smoke run (< 1 min)
    .venv/bin/python benchmarks/run.py --only stages   # one case (repeatable)

Inputs are synthetic acquisitions cached under ``benchmarks/out/data`` (deterministic, so a
second run skips generating them); every measured case runs in a fresh process. Progress and
the children's logs go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_accuracy  # noqa: E402
import bench_copy  # noqa: E402
import bench_e2e  # noqa: E402
import bench_fit  # noqa: E402
import bench_io  # noqa: E402
import bench_scale  # noqa: E402
import bench_scaling  # noqa: E402
import bench_stages  # noqa: E402
import bench_startup  # noqa: E402
from common import describe_probe, emit, hostprobe, machine, markdown_table  # noqa: E402

CASES = {
    "copy": bench_copy,
    "stages": bench_stages,
    "e2e": bench_e2e,
    "io": bench_io,
    "fit": bench_fit,
    "scaling": bench_scaling,
    "accuracy": bench_accuracy,
    "startup": bench_startup,
    "scale": bench_scale,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", action="append", choices=sorted(CASES), help="run only this case (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    selected = [c for c in CASES if not args.only or c in args.only]

    start = time.perf_counter()
    header = machine()
    emit({**header, "quick": args.quick, "cases": selected})
    rows = []
    for name in selected:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        # The host's speed drifts within a run: each case gets the probe taken just before it.
        probe = hostprobe()
        emit({"case": "hostprobe", "before": name, **probe})
        rows.append([name, f"host probe before the case: {describe_probe(probe)}", "–", "–", "–"])
        case_start = time.perf_counter()
        records = CASES[name].run(quick=args.quick)
        for record in records:
            emit(record)
        rows += CASES[name].table_rows(records)
        print(
            f"[bench] {name} done in {time.perf_counter() - case_start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    total = time.perf_counter() - start
    mode = "quick (smoke sizes)" if args.quick else "full"
    print()
    print(
        f"Benchmarks, {mode}, {header['date']}: {header['cpus']} cores, Python "
        f"{header['python']}, load average at start {header['loadavg_1m']}, "
        f"{total / 60:.1f} min in all."
    )
    print(f"Host probe at the start (../shared/bench/hostprobe.py): {header['hostprobe']}")
    print()
    print(markdown_table(["Case", "Measurement", "Value", "Target", "Verdict"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
