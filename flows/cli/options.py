"""Options shared by several commands, and their checks.

Everything that can be checked without Prefect is checked here, before Prefect or a worker
starts: a typo is reported in about a second, before anything is written.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import yaml

from flows.support.runners import RUNNERS
from pyama_lib.core.errors import ParamsError
from pyama_lib.core.selection import STAGES, Channels, check_counts, select_stages
from pyama_lib.pipeline.presets import PRESETS


def add_processing_arguments(p: argparse.ArgumentParser) -> None:
    """The options every processing run takes: ``pyama process`` and ``run``, and the runs
    ``pyama serve`` starts (:func:`processing_options` reads them)."""
    p.add_argument("--pc", type=int, default=0, help="phase-contrast channel (default 0)")
    p.add_argument(
        "--fl",
        type=fl_channel,
        action="append",
        help="fluorescence channel; repeat for more (default 1; none for a one-channel "
        "acquisition); 'none': phase contrast only (segmentation and tracks, no traces)",
    )
    p.add_argument("--workers", type=int, default=2, help="parallel workers (default 2)")
    p.add_argument("--batch-size", type=int, default=2, help="FOVs in flight at once (default 2)")
    p.add_argument("--runner", choices=RUNNERS, default="process", help="task runner")
    p.add_argument("--params", type=Path, help="YAML file of per-stage parameter overrides")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        help="named options beyond PyAMA (accurate); --params values win over the preset's",
    )


def processing_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :func:`add_processing_arguments` as flow keyword arguments, checked
    (counts, the parameters file) without Prefect."""
    from pyama_lib.pipeline.presets import preset, with_overrides
    from pyama_lib.pipeline.processing_params import parse_params

    check_counts(
        batch_size=args.batch_size, n_workers=args.workers, retries=getattr(args, "retries", None)
    )
    return {
        "pc": args.pc,
        "fl": parse_fl(args.fl),
        "batch_size": args.batch_size,
        "n_workers": args.workers,
        "runner": args.runner,
        "params": parse_params(
            with_overrides(
                preset(args.preset) if args.preset else {}, load_params_file(args.params)
            )
        ),
    }


def fl_channel(text: str) -> int | None:
    """One ``--fl`` value: a channel number, or None for ``none`` (no fluorescence)."""
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no channel: give a channel number, or none for phase contrast only"
        ) from None


def parse_fl(values: list[int | None] | None) -> list[int] | None:
    """The ``--fl`` values as the flows' ``fl``: None when not given (the acquisition's
    default: channel 1, none when it has a single channel), [] for ``--fl none``.

    Examples
    --------
    >>> parse_fl(None), parse_fl([None]), parse_fl([1, 2])
    (None, [], [1, 2])
    """
    if values is None:
        return None
    channels = [c for c in values if c is not None]
    if channels and len(channels) < len(values):
        raise ParamsError(
            f"--fl none and --fl {', '.join(map(str, channels))} contradict: give channels, "
            "or none for phase contrast only"
        )
    return channels


def add_process_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``pyama process`` (``pyama run`` takes them too)."""
    p.add_argument("input", help="the acquisition: a file (.nd2, .ome.tif, .czi, ...) or a folder")
    p.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    add_processing_arguments(p)
    p.add_argument("--fovs", help='FOVs to process, e.g. "0-3, 7" (default all)')
    p.add_argument("--fov-start", type=int, default=-1, help="first FOV (-1: the first)")
    p.add_argument("--fov-end", type=int, default=-1, help="last FOV, inclusive (-1: the last)")
    p.add_argument("--dask-address", help="scheduler of an existing Dask cluster, tcp://host:8786")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    p.add_argument("--retries", type=int, help="retries per task (default 2)")
    add_reader_arguments(p)


def add_reader_arguments(p: argparse.ArgumentParser) -> None:
    """How to read the input (``pyama process``, ``pyama run`` and ``pyama info``)."""
    p.add_argument(
        "--times",
        choices=("nominal", "measured"),
        default="nominal",
        help="ND2 frame times: nominal (PyAMA) or measured time stamps",
    )
    p.add_argument(
        "--interval",
        type=float,
        metavar="MINUTES",
        help="inputs without frame times: minutes between frames (default: 1, PyAMA's)",
    )
    p.add_argument(
        "--pattern",
        help="TIFF sequence folder whose names no built-in scheme reads: the names with {t}, "
        "{p}, {c}, {z} where the indices are and * for anything, e.g. 'run_{p}_t{t}_{c}.tif'",
    )
    p.add_argument(
        "--axes",
        help="multi-page TIFF that does not say its axes: their order, e.g. TCYX",
    )


def checked_interval(minutes: float) -> float:
    """``--interval``, refused unless more than 0 minutes."""
    if not minutes > 0:
        raise ParamsError(f"--interval must be more than 0 minutes, got {minutes:g}")
    return minutes


def reader_options(args: argparse.Namespace) -> dict[str, Any]:
    """The reader's options among ``args``: only those given, so each format sees its own."""
    options: dict[str, Any] = {}
    if args.times != "nominal":
        options["times"] = args.times
    if args.interval is not None:
        options["interval_min"] = checked_interval(args.interval)
    for name in ("pattern", "axes"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def process_options(args: argparse.Namespace) -> dict[str, Any]:
    """``process_acquisition``'s keyword arguments from ``args``, checked without Prefect
    (the input, channels, FOVs and output folder included)."""
    from pyama_lib.pipeline.plan import plan_jobs

    stages = parse_stages(args.stages)
    options: dict[str, Any] = {
        **processing_options(args),
        "fov_start": args.fov_start,
        "fov_end": args.fov_end,
        "fovs": args.fovs,
        "dask_address": args.dask_address,
        "stages": stages,
        "reader_options": reader_options(args),
    }
    plan_jobs(
        args.input,
        args.output,
        Channels(pc=options["pc"], fl=tuple(options["fl"] or ())),
        fov_start=args.fov_start,
        fov_end=args.fov_end,
        fovs=args.fovs,
        params=options["params"],
        reader_options=options["reader_options"],
        default_fl=options["fl"] is None,
    )
    return options


def load_params_file(path: Path | None) -> dict[str, Any]:
    """The sections of a ``--params`` YAML file ({} without one)."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ParamsError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); save "
            "the parameters file as UTF-8"
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path}: cannot read parameters: {exc}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections like 'segmentation:'")
    return data


def parse_stages(text: str | None) -> list[str] | None:
    """``"segment, copy"`` -> ``["copy", "segment"]`` (pipeline order); None (all stages) when
    not given.

    Spaces around names and empty items are dropped. An unknown name, or a value naming no
    stage at all (it would otherwise mean "all stages"), is refused before anything starts.

    Examples
    --------
    >>> parse_stages("segment, copy")
    ['copy', 'segment']
    """
    if text is None:
        return None
    stages = [s.strip() for s in text.split(",") if s.strip()]
    if not stages:
        raise ParamsError(f"--stages {text!r} names no stage; give some of {','.join(STAGES)}")
    try:
        return select_stages(stages)
    except ParamsError as exc:
        raise ParamsError(f"--stages {text!r}: {exc}") from None


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a fit: ``pyama fit`` and ``pyama run`` (:func:`parse_fit_values`)."""
    p.add_argument("--model", default="maturation", help="model to fit (default maturation)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="initial value of a parameter, e.g. ktl=500; repeat for more",
    )
    p.add_argument(
        "--bound",
        action="append",
        default=[],
        metavar="NAME=MIN,MAX",
        help="bounds of a parameter, e.g. km=0.1,5; repeat for more",
    )
    p.add_argument(
        "--thorough",
        action="store_true",
        help="more starts per cell: R² never below PyAMA's on the benchmark, ~3x the fit time",
    )


def parse_fit_values(
    params: list[str], bounds: list[str]
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """``["ktl=500"]``, ``["km=0.1,5"]`` -> ``{"ktl": 500.0}``, ``{"km": (0.1, 5.0)}``.

    Examples
    --------
    >>> parse_fit_values(["ktl=500"], ["km=0.1,5"])
    ({'ktl': 500.0}, {'km': (0.1, 5.0)})
    """

    def split(text: str, option: str) -> tuple[str, str]:
        name, sep, value = text.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ParamsError(f"{option} {text!r}: write NAME=VALUE, e.g. {option} ktl=500")
        return name.strip(), value.strip()

    values: dict[str, float] = {}
    for text in params:
        name, value = split(text, "--param")
        try:
            values[name] = float(value)
        except ValueError:
            raise ParamsError(f"--param {text!r}: {value!r} is not a number") from None
    limits: dict[str, tuple[float, float]] = {}
    for text in bounds:
        name, value = split(text, "--bound")
        parts = value.split(",")
        try:
            low, high = (float(v) for v in parts)
        except ValueError:
            raise ParamsError(f"--bound {text!r}: write NAME=MIN,MAX, e.g. km=0.1,5") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ParamsError(f"--bound {text!r}: bounds must be finite numbers")
        limits[name] = (low, high)
    return values, limits
