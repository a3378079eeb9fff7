"""``pyama merge``, ``pyama fit`` and ``pyama run``: the analysis half from the shell.

As with ``pyama process``, everything that can be checked without Prefect (files, samples,
model, parameters) is checked first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.options import (
    add_fit_arguments,
    add_process_arguments,
    parse_fit_values,
    parse_stages,
    process_options,
)
from flows.cli.process import progress_bar
from flows.cli.session import (
    prefect_session,
    start_api_server,
    start_api_server_during,
    stops_on_sigterm,
)
from pyama_lib.core.errors import ParamsError


def register_merge(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge FOVs into samples: PyAMA's analysis CSVs and a tidy Parquet table",
        description="Group the FOVs of a processing output into samples and write, per "
        "sample, fluorescence channel and feature, <sample>_<feature>_ch_<c>.csv (PyAMA's "
        "format) plus merged.parquet.",
    )
    p.add_argument("results", type=Path, help="output folder (or its processing_results.yaml)")
    p.add_argument("--samples", type=Path, help="samples YAML (default: all FOVs, one sample)")
    p.add_argument("-o", "--output", type=Path, help="merge folder (default RESULTS/merged)")
    p.add_argument(
        "--features",
        default="intensity_total,area",
        help="comma-separated trace columns to merge (default intensity_total,area)",
    )
    p.add_argument(
        "--long", action="store_true", help="later PyAMA's long CSVs (time, fov, cell, value)"
    )
    p.set_defaults(func=run_merge)


@stops_on_sigterm
def run_merge(args: argparse.Namespace) -> int:
    from pyama_lib.analysis.merge_inputs import available_fovs
    from pyama_lib.io.results_yaml import load_results
    from pyama_lib.io.samples import check_fovs, load_samples
    from pyama_lib.pipeline.phase_only import check_has_traces

    results = load_results(args.results)  # a missing or corrupt file: exit 2, before Prefect
    check_has_traces(results, args.results, "merge")  # phase contrast only: exit 2 too
    if args.samples is not None:
        check_fovs(load_samples(args.samples), available_fovs(results), str(args.samples))
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    if not features:
        raise ParamsError(f"--features {args.features!r} names no feature")
    with prefect_session(start_api_server(), "flows.merge"):
        from flows.merge import merge_samples_flow

        summary = merge_samples_flow(
            str(args.results),
            str(args.samples) if args.samples else None,
            str(args.output) if args.output else None,
            features=features,
            long_format=args.long,
        )
    print(summary)
    for figure in summary.figures:
        print(f"figure:  {figure}")
    return 0


def register_fit(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a gene-expression model to every cell of analysis CSVs",
        description="Fit a model to every cell column of an analysis CSV, or of every "
        "analysis CSV in a folder; writes <stem>_fitted.csv (PyAMA's columns), a Parquet "
        "twin and QC figures beside each.",
    )
    p.add_argument("path", type=Path, help="an analysis CSV or a folder of them")
    add_fit_arguments(p)
    p.add_argument(
        "--feature",
        help="of a folder, fit the CSVs of this feature, e.g. area (default: the intensities)",
    )
    p.add_argument("--workers", type=int, default=2, help="parallel workers (default 2)")
    p.set_defaults(func=run_fit)


@stops_on_sigterm
def run_fit(args: argparse.Namespace) -> int:
    from flows.fit import check_fit_options, choose_fit_csvs
    from pyama_lib.core.selection import check_counts

    params, bounds = parse_fit_values(args.param, args.bound)
    check_fit_options(args.model, params, bounds)
    check_counts(n_workers=args.workers)
    choose_fit_csvs(args.path, args.feature)
    with prefect_session(start_api_server(), "flows.fit"):
        from flows.fit import fit_traces_flow

        summary = fit_traces_flow(
            str(args.path),
            args.model,
            params or None,
            bounds or None,
            n_workers=args.workers,
            feature=args.feature,
            thorough=args.thorough,
        )
    print(summary)
    return 0


def register_run(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole pipeline: process, merge into samples, fit",
        description="Process an acquisition, merge its FOVs into samples (OUTPUT/merged) and "
        "fit a model to every cell's intensity_total trace, with QC figures.",
    )
    add_process_arguments(p)
    p.add_argument("--samples", type=Path, help="samples YAML (default: all FOVs, one sample)")
    add_fit_arguments(p)
    p.set_defaults(func=run_pipeline)


@stops_on_sigterm
def run_pipeline(args: argparse.Namespace) -> int:
    from flows.fit import check_fit_options
    from pyama_lib.io.samples import load_samples

    parse_stages(args.stages)  # the cheap checks before the server starts
    fit_params, fit_bounds = parse_fit_values(args.param, args.bound)
    check_fit_options(args.model, fit_params, fit_bounds)
    if args.samples is not None:
        load_samples(args.samples)
    server, options = start_api_server_during(lambda: process_options(args))
    with prefect_session(server, "flows.pipeline", process_workers=args.runner == "process"):
        from flows.pipeline import pyama_pipeline_flow

        with progress_bar():
            summary = pyama_pipeline_flow(
                str(args.input),
                str(args.output),
                samples_yaml=str(args.samples) if args.samples else None,
                model=args.model,
                fit_params=fit_params or None,
                fit_bounds=fit_bounds or None,
                fit_thorough=args.thorough,
                **options,
            )
    print(summary)
    print("\nfigures:")
    for figure in summary.figures:
        print(f"  {figure}")
    return 0
