"""The ``pyama`` command: ``pyama synth``, ``pyama info`` (more subcommands plug in below).

A subcommand is a ``register(subparsers)`` function that adds its parser and sets
``func=run(args) -> int`` as default; add it to :data:`COMMANDS`. Heavy imports happen inside
``run`` so ``pyama --help`` stays instant. A :class:`~pyama_lib.errors.PyamaError` becomes one
paragraph on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyama_lib.errors import PyamaError

EXIT_ERROR = 2

Subparsers = Any  # argparse's _SubParsersAction is private


def _register_synth(sub: Subparsers) -> None:
    p = sub.add_parser("synth", help="write a synthetic OME-TIFF acquisition with ground truth")
    p.add_argument("out", type=Path, help="folder to create and write into")
    p.add_argument("--fovs", type=int, default=2, help="fields of view (default 2)")
    p.add_argument("--frames", type=int, default=40, help="frames per FOV (default 40)")
    p.add_argument("--size", type=int, default=256, help="image side in px (default 256)")
    p.add_argument("--cells", type=int, default=16, help="cells per FOV (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--fl-channels", type=int, default=1, help="fluorescence channels (1)")
    p.add_argument("--interval", type=float, default=10.0, help="minutes between frames (10)")
    p.add_argument("--no-labels", action="store_true", help="skip the truth label stacks")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from pyama_lib.synthetic import make_synthetic

    info = make_synthetic(
        args.out,
        n_fovs=args.fovs,
        n_frames=args.frames,
        size=args.size,
        n_cells=args.cells,
        seed=args.seed,
        n_fl=args.fl_channels,
        interval_min=args.interval,
        write_labels=not args.no_labels,
    )
    _print_acquisition(info.path)
    print(f"truth cells:  {info.cells_csv}")
    print(f"truth traces: {info.traces_csv}")
    print(f"truth labels: {info.labels_path or '(skipped)'}")
    return 0


def _register_info(sub: Subparsers) -> None:
    p = sub.add_parser("info", help="print an acquisition's metadata (ND2 or OME-TIFF)")
    p.add_argument("path", type=Path, help="the .nd2 / .ome.tif file")
    p.add_argument("--interval", type=float, default=None, help="OME-TIFF without DeltaT: min")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    options = {} if args.interval is None else {"interval_min": args.interval}
    _print_acquisition(args.path, **options)
    return 0


def _print_acquisition(path: Path, **options: Any) -> None:
    from pyama_lib.io.acquisition import open_acquisition

    with open_acquisition(path, **options) as acq:
        channels = ", ".join(f"{i}={name}" for i, name in enumerate(acq.channel_names))
        print(f"path:     {acq.path}")
        print(f"format:   {type(acq).__name__}")
        print(f"fovs:     {acq.n_fovs}")
        print(f"frames:   {acq.n_frames}")
        print(f"channels: {acq.n_channels} ({channels})")
        print(f"shape:    {acq.height} x {acq.width}")
        print(f"dtype:    {acq.dtype}")
        print(f"times:    {describe_times(acq.frame_times(0))} (FOV 0)")


def describe_times(times_min: np.ndarray) -> str:
    """``"0-390 min, every 10 min"`` for regular times, else the range and the median step."""
    if times_min.size == 0:
        return "none"
    first, last = float(times_min[0]), float(times_min[-1])
    if times_min.size == 1:
        return f"{first:g} min"
    steps = np.diff(times_min)
    if np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9):
        return f"{first:g}-{last:g} min, every {float(steps[0]):g} min"
    return f"{first:g}-{last:g} min, irregular (median step {float(np.median(steps)):g} min)"


COMMANDS: list[Callable[[Subparsers], None]] = [_register_synth, _register_info]


def build_parser(
    commands: Sequence[Callable[[Subparsers], None]] = COMMANDS,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyama", description="PyAMA Flow: single-cell time-lapse microscopy pipeline."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in commands:
        register(sub)
    return parser


def main(
    argv: Sequence[str] | None = None,
    commands: Sequence[Callable[[Subparsers], None]] = COMMANDS,
) -> int:
    """Run the ``pyama`` command line; returns the exit status (0 ok, 2 usage or input error).

    The console script (``flows.cli``) passes the Prefect-backed commands in ``commands``;
    this package itself stays free of Prefect.
    """
    parser = build_parser(commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; return, don't exit
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return int(args.func(args))
    except (PyamaError, OSError) as exc:
        # One line, unwrapped: paths stay whole for copy-paste and grep.
        print(f"pyama {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
