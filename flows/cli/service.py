"""``pyama serve`` and ``pyama watch``: the inbox service and the acquisition watcher.

Both talk to a running Prefect server (``PREFECT_API_URL``): the deployments, their runs and the
events must outlive any one command, so the temporary server of ``pyama process`` will not do.
Everything is checked before anything starts: the folders, the samples file, the model, the
processing options and that the server answers; a mistake exits with status 2 and one line.
"""

from __future__ import annotations

import argparse
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from flows.cli.options import add_processing_arguments, checked_interval, processing_options
from flows.cli.session import stops_on_sigterm
from pyama_lib.core.errors import OutputDirError, ParamsError

SERVER_HELP = (
    "start one with `prefect server start` (it listens on 127.0.0.1:4200) and "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api` in this shell"
)


def check_server() -> str:
    """The API URL of the running Prefect server; ParamsError when none is set or answers."""
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        raise ParamsError(f"PREFECT_API_URL is not set; {SERVER_HELP}")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            if response.status == 200:
                return url
    except (urllib.error.URLError, OSError) as exc:
        raise ParamsError(f"no Prefect server answers at {url} ({exc}); {SERVER_HELP}") from None
    raise ParamsError(f"the Prefect server at {url} is not healthy; {SERVER_HELP}")


def _folders(paths: list[Path], what: str) -> list[str]:
    folders = []
    for path in paths:
        resolved = path.expanduser().resolve()
        if not resolved.is_dir():
            raise OutputDirError(path, f"{what} folder not found; check the path and the mount")
        folders.append(str(resolved))
    return folders


def _check_apart(inbox: list[str], output_root: Path) -> None:
    """Refuse inbox folders inside one another or overlapping the output root, and a working
    directory inside an inbox (Python would import modules from it into every run)."""
    folders = [Path(f) for f in inbox]
    for i, a in enumerate(folders):
        for b in [*folders[i + 1 :], output_root]:
            if a.is_relative_to(b) or b.is_relative_to(a):
                raise OutputDirError(a, f"overlaps {b}; give folders apart from one another")
    cwd = Path.cwd().resolve()
    if any(cwd.is_relative_to(f) for f in folders):
        raise OutputDirError(
            cwd,
            "is inside the inbox: start pyama serve from another folder (the runs import "
            "Python modules from their working directory, and anyone can write to an inbox)",
        )


def _writable_root(path: Path) -> str:
    root = path.expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(root, f"cannot create the output root: {exc.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise OutputDirError(root, "the output root is not writable by this user")
    return str(root)


def register_serve(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="process acquisitions by themselves: on an event, and an inbox sweep on a schedule",
        description="Serve the deployments 'process-new-acquisition/on-acquisition-finished' "
        "(started by the event pyama.acquisition.finished, e.g. from `pyama watch`) and "
        "'sweep-inbox/inbox-sweep' (on a schedule) until stopped. Needs PREFECT_API_URL.",
    )
    p.add_argument(
        "--inbox", type=Path, action="append", required=True, help="inbox folder; repeat for more"
    )
    p.add_argument(
        "--output-root",
        type=Path,
        required=True,
        help="outputs go to OUTPUT_ROOT/<sub-folders>/<name>",
    )
    p.add_argument(
        "--samples", type=Path, help="samples YAML: process, merge and fit (default: process only)"
    )
    p.add_argument("--model", default="maturation", help="model fitted with --samples")
    p.add_argument(
        "--schedule", default="*/10 * * * *", help="inbox sweep: cron, or interval like 10m; 'off'"
    )
    p.add_argument(
        "--quiet-seconds",
        type=float,
        default=60.0,
        help="sweep: unchanged this long = complete (60)",
    )
    p.add_argument(
        "--max-concurrent", type=int, default=1, help="acquisitions processed at once (1)"
    )
    add_processing_arguments(p)  # each acquisition's run
    p.add_argument(
        "--interval",
        type=float,
        metavar="MINUTES",
        help="inputs without frame times: minutes between frames (default: 1, PyAMA's)",
    )
    p.set_defaults(func=run_serve)


def serve_settings(args: argparse.Namespace) -> Any:
    """The :class:`~deployments.serve.ServeSettings` from ``args``, every part checked."""
    from deployments.serve import ServeSettings, parse_schedule
    from flows.fit import check_fit_options
    from pyama_lib.io.samples import load_samples

    processing = processing_options(args)
    if args.max_concurrent < 1:
        raise ParamsError(f"--max-concurrent must be at least 1; given: {args.max_concurrent}")
    if args.quiet_seconds < 0:
        raise ParamsError(f"--quiet-seconds must be 0 or more; given: {args.quiet_seconds:g}")
    parse_schedule(args.schedule)
    check_fit_options(args.model, None, None)
    if args.interval is not None:
        processing["interval_min"] = checked_interval(args.interval)
    # The deployment's defaults: the parameters only when a file or a preset gave them (else
    # the flow's own defaults, PyAMA's).
    params = processing.pop("params")
    if args.params is not None or args.preset is not None:
        processing["params"] = params.model_dump(mode="json")
    if args.samples is not None:
        load_samples(args.samples)
        processing["samples_yaml"] = str(args.samples.expanduser().resolve())
        processing["model"] = args.model
    inbox = _folders(args.inbox, "inbox")
    _check_apart(inbox, args.output_root.expanduser().resolve())
    return ServeSettings(
        inbox=inbox,
        output_root=_writable_root(args.output_root),
        schedule=args.schedule,
        quiet_seconds=args.quiet_seconds,
        max_concurrent=args.max_concurrent,
        processing=processing,
    )


def run_serve(args: argparse.Namespace) -> int:
    # No stops_on_sigterm: Prefect's runner handles SIGTERM itself (it cancels the runs in
    # flight and returns), so serve ends with status 0 as a stopped service should.
    settings = serve_settings(args)
    check_server()
    from deployments.serve import serve_inbox

    serve_inbox(settings)
    return 0


def register_watch(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "watch",
        help="announce each acquisition in a folder once it is complete (for `pyama serve`)",
        description="Emit the event pyama.acquisition.finished for every ND2 / OME-TIFF in DIR "
        "that has stopped changing for --quiet-seconds and opens cleanly; each version once, "
        "also across restarts. Needs PREFECT_API_URL.",
    )
    p.add_argument("dir", type=Path, nargs="+", help="folder(s) to watch, sub-folders included")
    p.add_argument(
        "--quiet-seconds", type=float, default=30.0, help="unchanged this long = complete (30)"
    )
    p.add_argument(
        "--poll", action="store_true", help="poll instead of change events (SMB/NFS: automatic)"
    )
    p.add_argument("--poll-seconds", type=float, default=5.0, help="polling interval (5)")
    p.add_argument(
        "--state", type=Path, help="the ledger of announced files (default under ~/.local/state)"
    )
    p.set_defaults(func=run_watch)


@stops_on_sigterm
def run_watch(args: argparse.Namespace) -> int:
    from deployments.watch import Watcher, default_ledger
    from pyama_lib.service.ledger import AnnouncedLedger

    if args.quiet_seconds < 0 or args.poll_seconds <= 0:
        raise ParamsError("--quiet-seconds must be 0 or more and --poll-seconds more than 0")
    folders = _folders(args.dir, "watched")
    ledger = AnnouncedLedger(args.state or default_ledger(folders))
    url = check_server()
    from deployments.events import announce

    print(f"announcing to {url}; ledger {ledger.path} ({len(ledger)} announced before)", flush=True)
    watcher = Watcher(
        folders,
        ledger,
        announce,
        quiet_seconds=args.quiet_seconds,
        poll=True if args.poll else None,
        poll_seconds=args.poll_seconds,
        log=lambda line: print(line, flush=True),
    )
    watcher.run(threading.Event())  # until Ctrl-C or SIGTERM (exit status 130 / 143)
    return 0
