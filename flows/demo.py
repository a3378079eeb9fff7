"""``make demo``: a synthetic acquisition through the whole pipeline (process, merge, fit).

Runs on the embedded (ephemeral) Prefect API: nothing to start first. Writes under ``.demo/``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(".demo"), help="demo folder (.demo)")
    parser.add_argument("--fovs", type=int, default=4)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from flows.pipeline import pyama_pipeline_flow
    from pyama_lib.pipeline.pool import prestart
    from pyama_lib.synthetic import make_synthetic

    if args.out.exists():
        shutil.rmtree(args.out)
    start = time.perf_counter()
    info = make_synthetic(
        args.out / "acquisition",
        n_fovs=args.fovs,
        n_frames=args.frames,
        size=args.size,
        n_cells=16,
        seed=1,
        n_fl=2,
    )
    print(
        f"synthetic acquisition: {info.path} ({args.fovs} FOVs x {args.frames} frames, "
        f"{args.size}x{args.size}, channels {', '.join(info.channel_names)})"
    )
    samples = args.out / "samples.yaml"
    half = max(1, args.fovs // 2) - 1
    samples.write_text(
        f"samples:\n  - {{name: treated, fovs: '0-{half}'}}\n"
        f"  - {{name: control, fovs: '{half + 1}-{args.fovs - 1}'}}\n"
        if args.fovs > 1
        else "samples:\n  - {name: all, fovs: '0'}\n"
    )
    prestart()
    pipeline = pyama_pipeline_flow(
        str(info.path),
        str(args.out / "output"),
        str(samples),
        pc=0,
        fl=[1, 2],
        n_workers=args.workers,
        batch_size=args.workers,
    )
    summary = pipeline.process
    print()
    print(pipeline)
    traces = pd.read_parquet(summary.parquet_dir)
    truth = pd.read_csv(info.cells_csv)
    expressing = truth[truth["expresses"]].groupby("fov")["cell"].nunique().sum()
    found = traces.groupby(["fov", "channel"])["cell"].nunique().sum()
    n_true = truth.groupby("fov")["cell"].nunique().sum()
    print(
        f"\n{found} cell traces ({len(traces)} rows) found; ground truth has {n_true} cells "
        f"per channel, {expressing} of them expressing"
    )
    print(f"\nwhere to look ({time.perf_counter() - start:.0f} s in all):")
    print(f"  PyAMA results file  {summary.results_yaml}")
    print(f"  traces CSV per FOV  {Path(summary.output_dir)}/fov_XXX/*_traces_ch_*.csv")
    print(f"  traces Parquet      {summary.parquet_dir}")
    print(f"  provenance          {summary.run_yaml}")
    print(f"  samples (merged)    {pipeline.merge.output_dir}")
    print("  QC figures")
    for figure in pipeline.figures:
        print(f"    {figure}")
    print("  Prefect dashboard   see README: start `prefect server start` and set PREFECT_API_URL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
