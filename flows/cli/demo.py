"""``pyama demo`` (``make demo``): a synthetic acquisition through the whole pipeline.

Writes a synthetic acquisition with ground truth, processes it, merges its FOVs into two
samples and fits every cell, then says where to look. Needs nothing started first; writes
under ``.demo/`` (replaced on every run).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from flows.cli.session import prefect_session, start_api_server_during, stops_on_sigterm
from pyama_lib.core.selection import check_counts


def register_demo(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="a synthetic acquisition through process, merge and fit, to see what comes out",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--out", type=Path, default=Path(".demo"), help="demo folder (.demo)")
    p.add_argument("--fovs", type=int, default=4, help="FOVs (default 4)")
    p.add_argument("--frames", type=int, default=40, help="frames per FOV (default 40)")
    p.add_argument("--size", type=int, default=256, help="image side in px (default 256)")
    p.add_argument("--workers", type=int, default=2, help="parallel workers (default 2)")
    p.set_defaults(func=run_demo)


@stops_on_sigterm
def run_demo(args: argparse.Namespace) -> int:
    check_counts(n_workers=args.workers)
    start = time.perf_counter()
    server, info = start_api_server_during(lambda: _acquisition(args))
    with prefect_session(server, "flows.pipeline", process_workers=True):
        from flows.pipeline import pyama_pipeline_flow

        pipeline = pyama_pipeline_flow(
            str(info.path),
            str(args.out / "output"),
            str(_samples_file(args)),
            pc=0,
            fl=[1, 2],
            n_workers=args.workers,
            batch_size=args.workers,
        )
    _report(pipeline, info, time.perf_counter() - start)
    return 0


def _acquisition(args: argparse.Namespace) -> Any:
    from pyama_lib.synthetic.generator import make_synthetic

    if args.out.exists():
        shutil.rmtree(args.out)
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
    return info


def _samples_file(args: argparse.Namespace) -> Path:
    """Two samples, the first half of the FOVs and the rest (one sample of a single FOV)."""
    samples = args.out / "samples.yaml"
    half = max(1, args.fovs // 2) - 1
    samples.write_text(
        f"samples:\n  - {{name: treated, fovs: '0-{half}'}}\n"
        f"  - {{name: control, fovs: '{half + 1}-{args.fovs - 1}'}}\n"
        if args.fovs > 1
        else "samples:\n  - {name: all, fovs: '0'}\n"
    )
    return samples


def _report(pipeline: Any, info: Any, seconds: float) -> None:
    import pandas as pd

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
    print(f"\nwhere to look ({seconds:.0f} s in all):")
    print(f"  PyAMA results file  {summary.results_yaml}")
    print(f"  traces CSV per FOV  {Path(summary.output_dir)}/fov_XXX/*_traces_ch_*.csv")
    print(f"  traces Parquet      {summary.parquet_dir}")
    print(f"  provenance          {summary.run_yaml}")
    print(f"  samples (merged)    {pipeline.merge.output_dir}")
    print("  QC figures")
    for figure in pipeline.figures:
        print(f"    {figure}")
    print("  Prefect dashboard   start `prefect server start`, set PREFECT_API_URL, run again")
    print('                      (docs/processing.md, "Watching runs in the Prefect dashboard")')
