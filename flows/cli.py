"""``pyama process``: run the processing flow from the shell.

Everything that can be checked without Prefect is checked first (stage names, parameters, the
input, channels, FOVs and the output folder), so a typo is reported in about a second, before
Prefect starts. Exit statuses (:mod:`pyama_lib.cli`): 0 done; 2 bad input, nothing written;
3 some FOVs failed (after the summary table of the FOVs that did finish); 130/143 interrupted
by Ctrl-C/SIGTERM; 1 an internal error, with the traceback in a log file. A live progress bar
(FOVs × stages) on a terminal; plain log lines when stderr is not a TTY.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import yaml

from flows.api_server import ApiServer, start_api_server
from flows.progress import PROGRESS_LOGGER
from flows.runners import RUNNERS
from pyama_lib.cli import COMMANDS, EXIT_SIGTERM
from pyama_lib.cli import main as lib_main
from pyama_lib.config import (
    DEFAULT_FL,
    PRESETS,
    STAGES,
    Channels,
    check_counts,
    select_stages,
)
from pyama_lib.errors import Interrupted, ParamsError

if TYPE_CHECKING:
    from flows.reporting import ProcessSummary

T = TypeVar("T")


def register_process(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "process",
        help="segment, correct, track and extract an acquisition into per-cell traces",
        description="Process an ND2 or OME-TIFF acquisition into per-cell traces (Zarr store, "
        "PyAMA traces CSVs, processing_results.yaml, traces.parquet, run.yaml).",
    )
    add_process_arguments(p)
    p.set_defaults(func=run_process)


def add_processing_arguments(p: argparse.ArgumentParser) -> None:
    """The options every processing run takes: ``pyama process`` and ``run``, and the runs
    ``pyama serve`` starts (:func:`processing_options` reads them)."""
    p.add_argument("--pc", type=int, default=0, help="phase-contrast channel (default 0)")
    p.add_argument(
        "--fl", type=int, action="append", help="fluorescence channel; repeat for more (default 1)"
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
    from pyama_lib.pipeline.params import parse_params, preset, with_overrides

    check_counts(
        batch_size=args.batch_size, n_workers=args.workers, retries=getattr(args, "retries", None)
    )
    return {
        "pc": args.pc,
        "fl": args.fl or list(DEFAULT_FL),
        "batch_size": args.batch_size,
        "n_workers": args.workers,
        "runner": args.runner,
        "params": parse_params(
            with_overrides(
                preset(args.preset) if args.preset else {}, load_params_file(args.params)
            )
        ),
    }


def add_process_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``pyama process`` (``pyama run`` takes them too)."""
    p.add_argument("input", help="the .nd2 or .ome.tif acquisition")
    p.add_argument("-o", "--output", required=True, help="output folder (created if needed)")
    add_processing_arguments(p)
    p.add_argument("--fovs", help='FOVs to process, e.g. "0-3, 7" (default all)')
    p.add_argument("--fov-start", type=int, default=-1, help="first FOV (-1: the first)")
    p.add_argument("--fov-end", type=int, default=-1, help="last FOV, inclusive (-1: the last)")
    p.add_argument("--dask-address", help="scheduler of an existing Dask cluster, tcp://host:8786")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    p.add_argument("--retries", type=int, help="retries per task (default 2)")
    p.add_argument(
        "--times",
        choices=("nominal", "measured"),
        default="nominal",
        help="ND2 frame times: nominal (PyAMA) or measured time stamps",
    )


def load_params_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
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


def _print_summary(summary: ProcessSummary) -> None:
    print(summary)
    print(f"\nresults: {summary.results_yaml}\ntraces:  {summary.parquet_dir}")
    print(f"record:  {summary.run_yaml}")


class _ProgressHandler(logging.Handler):
    """Renders the flow's ``pyama.progress`` records as a bar (TTY) or as log lines."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.tty = stream.isatty()

    def emit(self, record: logging.LogRecord) -> None:
        done, total = record.pyama_progress  # type: ignore[attr-defined]
        if self.tty:
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "." * (width - filled)
            end = "\n" if done >= total else ""
            self.stream.write(f"\r[{bar}] {done}/{total} FOV stages {record.getMessage()}{end}")
        else:
            self.stream.write(f"progress {done}/{total}: {record.getMessage()}\n")
        self.stream.flush()


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted("SIGTERM", EXIT_SIGTERM)


@contextmanager
def _prefect_api(server: ApiServer | None) -> Iterator[None]:
    """Point Prefect at ``server`` (started by :func:`run_process`) for the block, unless a
    Prefect profile already names a server: then that one is used and ``server`` stopped."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if server is None:
        yield
        return
    if PREFECT_API_URL.value():
        server.stop()
        yield
        return
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    server.wait_ready(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    os.environ["PREFECT_API_URL"] = server.url  # for worker processes (Dask) as well
    # No flow-run heartbeats on the temporary server: only automations act on them (marking
    # a run crashed when they stop), and this server evaluates none (see ApiServer) and dies
    # with the command. A sync flow run joins its heartbeat thread when it ends, and that
    # thread sleeps in 1 s steps: 0-1 s (0.42 s in a traced run) at the end of every
    # command.
    updates = {PREFECT_API_URL: server.url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    with temporary_settings(updates=updates):
        yield


def stops_on_sigterm(run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A command that SIGTERM ends like Ctrl-C: recorded as interrupted, exit status 143."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
        try:
            return run(args)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapped


def start_api_server_during(check: Callable[[], T]) -> tuple[ApiServer | None, T]:
    """Start the temporary API server (unless one is configured), then run ``check``: reading
    the input and loading the stages' parameters (0.7 s, mostly imports) overlap the server's
    3 s start instead of preceding it. A failing check stops the server at once."""
    server = start_api_server()
    try:
        return server, check()
    except BaseException:
        if server is not None:
            server.stop()
        raise


@contextmanager
def prefect_session(
    server: ApiServer | None, flows_module: str, process_workers: bool = False
) -> Iterator[None]:
    """What a flow command needs once its arguments are checked: a Prefect API (``server``,
    the temporary one in its own session from :func:`start_api_server`, see
    :mod:`flows.api_server`; None when one is configured), ``flows_module`` (the command's
    flows) imported and, for the process runner, the stage workers' import started while the
    server finishes its start."""
    # The server comes up while Prefect and the workers load; it stops when the command exits.
    if server is not None:
        atexit.register(server.stop)  # registered before Prefect's own exit hooks: runs last
    # Prefect's flow machinery (0.3-0.5 s) loads while the server is still starting.
    importlib.import_module(flows_module)
    if process_workers:
        from pyama_lib.pipeline.pool import prestart

        # Workers stopped mid-stage (Ctrl-C, an OOM kill) leave the pool's queue semaphores
        # to multiprocessing's resource tracker, which unlinks them and then warns about
        # "leaked semaphore objects": nothing is left behind, so its warning is noise for the
        # person at the terminal. The tracker process takes its warning filters from here.
        sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")
        # The workers' import starts only now: the server's start (its imports, 3 s of CPU)
        # is what the command waits for, and on 2 cores three processes importing at once
        # slowed it by 0.4 s. This command is waiting for the server from here on (1 s or
        # more), and the forkserver's import (1 s) finishes well before the first stage.
        prestart()
    if server is not None:
        # What Prefect imports only once the flow run starts, just after the server is ready
        # (0.1-0.2 s there): loaded now, while this command waits for the server anyway.
        for module in _FLOW_START_IMPORTS:
            importlib.import_module(module)
    # The imports are done (see importing_without_gc): what they made lives as long as the
    # command, and later collections skip it.
    gc.freeze()
    gc.enable()
    with _prefect_api(server):
        yield


def process_options(args: argparse.Namespace) -> dict[str, Any]:
    """``process_acquisition``'s keyword arguments from ``args``, checked without Prefect:
    a typo in any of them is reported before Prefect or a worker starts."""
    from pyama_lib.pipeline.plan import plan_jobs

    stages = parse_stages(args.stages)
    options: dict[str, Any] = {
        **processing_options(args),
        "fov_start": args.fov_start,
        "fov_end": args.fov_end,
        "fovs": args.fovs,
        "dask_address": args.dask_address,
        "stages": stages,
        "reader_options": {"times": args.times} if args.times != "nominal" else {},
    }
    plan_jobs(
        args.input,
        args.output,
        Channels(pc=options["pc"], fl=tuple(options["fl"])),
        fov_start=args.fov_start,
        fov_end=args.fov_end,
        fovs=args.fovs,
        params=options["params"],
        reader_options=options["reader_options"],
    )
    return options


@contextmanager
def progress_bar() -> Iterator[None]:
    """The flow's stage progress as a bar on stderr (see :class:`_ProgressHandler`)."""
    handler = _ProgressHandler(sys.stderr)
    logger = logging.getLogger(PROGRESS_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the bar replaces the log line; Prefect's console would repeat it
    try:
        yield
    finally:
        logger.removeHandler(handler)


# Prefect's flow engine, and FastAPI's JSON encoder, which it takes the flow run's parameters
# through (Flow.serialize_parameters).
_FLOW_START_IMPORTS = ("prefect.flow_engine", "fastapi.encoders")


@contextmanager
def importing_without_gc() -> Iterator[None]:
    """No cyclic garbage collection while a command imports its stack (pyama_lib, scipy,
    pandas, Prefect): the collector walked the ever-growing heap of module objects again and
    again, 20% of the imports' CPU (1.7 -> 1.4 s), which the API server's start shares the 2
    cores with. :func:`prefect_session` turns it on again once the imports are done; so does
    leaving the block (an error before that)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@stops_on_sigterm
def run_process(args: argparse.Namespace) -> int:
    parse_stages(args.stages)  # a typo is refused before anything starts
    with importing_without_gc():
        server, options = start_api_server_during(lambda: process_options(args))
        workers = args.runner == "process"
        with prefect_session(server, "flows.process", process_workers=workers):
            from flows.process import process_acquisition
            from flows.reporting import FovsFailedError

            try:
                with progress_bar():
                    summary = process_acquisition(
                        str(args.input), str(args.output), retries=args.retries, **options
                    )
            except FovsFailedError as exc:
                # The other FOVs are done: show them, then the error paragraph and exit
                # status 3 (pyama_lib.cli.main reports the re-raised error).
                _print_summary(exc.summary)
                raise
    _print_summary(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``pyama`` command line: the library's commands plus the flows' (process, merge,
    fit, run); returns the exit status."""
    from deployments.cli import register_serve, register_watch  # the entry point wires all
    from flows.cli_analysis import register_fit, register_merge, register_run

    commands = [register_process, register_merge, register_fit, register_run]
    return lib_main(argv, [*COMMANDS, *commands, register_serve, register_watch])


def _leave_now(status: list[int]) -> None:
    """The last exit hook: every other one has run (Prefect's flushes, the temporary server's
    stop; threads were joined before the hooks), so the interpreter's teardown of its modules,
    0.5 s of every command, is skipped."""
    logging.shutdown()  # its own hook was registered first, so it would run after this one
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status[0])


def console_main() -> None:
    """The ``pyama`` console script."""
    status = [1]  # an exception escaping main() is reported by the interpreter, status 1
    atexit.register(_leave_now, status)  # before any other hook of the command: runs last
    status[0] = main()
    sys.exit(status[0])


if __name__ == "__main__":
    console_main()
