"""``pyama synth``, ``info``, ``score`` and ``view``: the commands that need no Prefect.

Heavy imports happen inside each command, so ``pyama --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from flows.cli.options import add_reader_arguments, reader_options

Subparsers = Any  # argparse's _SubParsersAction is private


def register_synth(sub: Subparsers) -> None:
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
    p.add_argument(
        "--hard",
        action="store_true",
        help="add cells that arrive late, leave, are faint or small (for `pyama score`)",
    )
    p.add_argument(
        "--brightness",
        type=float,
        default=1.0,
        help="factor on the cells' fluorescence (default 1, a dim reporter; 5 a bright one)",
    )
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from pyama_lib.synthetic.cells import HardCases
    from pyama_lib.synthetic.generator import make_synthetic

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
        hard=HardCases() if args.hard else None,
        brightness=args.brightness,
    )
    _print_acquisition(info.path)
    print(f"truth cells:  {info.cells_csv}")
    print(f"truth traces: {info.traces_csv}")
    print(f"truth labels: {info.labels_path or '(skipped)'}")
    return 0


def register_info(sub: Subparsers) -> None:
    p = sub.add_parser("info", help="print an acquisition's metadata and how it was read")
    p.add_argument("path", type=Path, help="the acquisition: a file or a TIFF sequence folder")
    add_reader_arguments(p)
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    _print_acquisition(args.path, **reader_options(args))
    return 0


def _print_acquisition(path: Path, **options: Any) -> None:
    from pyama_lib.io import open_acquisition

    with open_acquisition(path, **options) as acq:
        channels = ", ".join(f"{i}={name}" for i, name in enumerate(acq.channel_names))
        print(f"path:     {acq.path}")
        print(f"format:   {acq.format_name} ({type(acq).__name__})")
        print(f"fovs:     {acq.n_fovs}")
        print(f"frames:   {acq.n_frames}")
        print(f"channels: {acq.n_channels} ({channels})")
        print(f"shape:    {acq.height} x {acq.width}")
        print(f"dtype:    {acq.dtype}")
        print(f"times:    {describe_times(acq.frame_times(0))} (FOV 0)")
        for line in acq.describe():
            print(line)
        if acq.times_note:
            print(f"note:     {acq.times_note.removeprefix(f'{acq.path}: ')}")


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


def register_score(sub: Subparsers) -> None:
    p = sub.add_parser("score", help="compare an output's traces with a synthetic ground truth")
    p.add_argument("output", type=Path, help="the processed output folder")
    p.add_argument("--truth", type=Path, required=True, help="the folder `pyama synth` wrote")
    p.add_argument("--channel", type=int, default=1, help="fluorescence channel (default 1)")
    p.add_argument(
        "--feature", default="intensity_total", help="the traces' intensity column to score"
    )
    p.set_defaults(func=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    import json

    from pyama_lib.io.atomic import atomic_write_text
    from pyama_lib.synthetic.scoring import score_output

    score = score_output(args.output, args.truth, args.channel, args.feature)
    err = score.intensity_error
    rows = [
        ("true cells / traces", f"{score.n_true_cells} / {score.n_traces}"),
        ("recall / precision", f"{score.recall:.3f} / {score.precision:.3f}"),
        ("purity / coverage", f"{score.purity:.3f} / {score.coverage:.3f}"),
        ("id switches", str(score.id_switches)),
        ("|intensity error| median / p90", f"{err['median_abs']:.1%} / {err['p90_abs']:.1%}"),
        ("signed error median / at the border", f"{err['signed_median']:+.1%} / "
         f"{err['border_signed_median']:+.1%}"),
        ("missed cells", ", ".join(f"{kind} {n}" for kind, n in score.misses.items())),
    ]  # fmt: skip
    for what, value in rows:
        print(f"{what:<36} {value}")
    suffix = "" if args.feature == "intensity_total" else f"_{args.feature}"
    path = args.output / f"score_ch_{args.channel}{suffix}.json"
    text = json.dumps(_json_safe(score.as_dict()), indent=2, allow_nan=False)
    atomic_write_text(path, text + "\n")
    print(f"score: {path}")
    return 0


def _json_safe(value: Any) -> Any:
    """NaN (no point to compute a number from) as JSON's null: strict parsers refuse NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def register_view(sub: Subparsers) -> None:
    p = sub.add_parser(
        "view", help="open a processed FOV in napari: images, labels, tracks ([view] extra)"
    )
    p.add_argument("output", type=Path, help="the processed output folder")
    p.add_argument("--fov", type=int, default=0, help="FOV index (default 0)")
    p.add_argument(
        "--channel", type=int, help="fluorescence channel whose tracks to show (default: first)"
    )
    p.add_argument(
        "--screenshot", type=Path, metavar="PNG", help="render to this PNG instead of a window"
    )
    p.add_argument("--frame", type=int, help="the frame to show first")
    p.add_argument(
        "--no-curation",
        action="store_true",
        help="only the layers: no panel of traces and cells to mark good or bad",
    )
    p.set_defaults(func=_run_view)


def _run_view(args: argparse.Namespace) -> int:
    from pyama_lib.core.errors import ParamsError, ResultsFileError
    from pyama_lib.pipeline.phase_only import NO_TRACES_TO_CURATE, is_phase_only_output
    from pyama_lib.view.curation_state import load_curation
    from pyama_lib.view.layers import fov_layers, show

    view = fov_layers(args.output, args.fov, args.channel)
    curation = None
    if not args.no_curation:
        try:
            curation = load_curation(args.output, args.fov)
        except (ParamsError, ResultsFileError) as exc:
            # the images are worth showing without the traces (e.g. before extraction)
            why = NO_TRACES_TO_CURATE if is_phase_only_output(args.output) else exc
            print(f"pyama view: warning: no curation panel: {why}", file=sys.stderr)
        for warning in curation.warnings if curation else []:
            print(f"pyama view: warning: {warning}", file=sys.stderr)
    shot = show(view, screenshot=args.screenshot, frame=args.frame, curation=curation)
    if shot is not None:
        print(f"screenshot: {shot}")
    return 0
