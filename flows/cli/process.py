"""``pyama process``: an acquisition into per-cell traces, with a progress bar.

Every argument is checked before Prefect starts (:func:`~flows.cli.options.process_options`).
A live progress bar (FOVs × stages) on a terminal; plain ``progress i/n`` lines when stderr is
not a TTY.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from flows.cli.options import add_process_arguments, parse_stages, process_options
from flows.cli.session import prefect_session, start_api_server_during, stops_on_sigterm
from flows.support.progress import PROGRESS_LOGGER

if TYPE_CHECKING:
    from flows.support.reporting import ProcessSummary


def register_process(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "process",
        help="segment, correct, track and extract an acquisition into per-cell traces",
        description="Process an ND2 or OME-TIFF acquisition into per-cell traces (Zarr store, "
        "PyAMA traces CSVs, processing_results.yaml, traces.parquet, run.yaml).",
    )
    add_process_arguments(p)
    p.set_defaults(func=run_process)


@stops_on_sigterm
def run_process(args: argparse.Namespace) -> int:
    parse_stages(args.stages)  # a typo is refused before anything starts
    server, options = start_api_server_during(lambda: process_options(args))
    workers = args.runner == "process"
    with prefect_session(server, "flows.process", process_workers=workers):
        from flows.process import process_acquisition
        from flows.support.reporting import FovsFailedError

        try:
            with progress_bar():
                summary = process_acquisition(
                    str(args.input), str(args.output), retries=args.retries, **options
                )
        except FovsFailedError as exc:
            # The other FOVs are done: show them, then the error paragraph and exit
            # status 3 (flows.cli.main reports the re-raised error).
            _print_summary(exc.summary)
            raise
    _print_summary(summary)
    return 0


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
