"""A command's session with Prefect: the API it talks to, and how its fixed cost is kept low.

Every flow command (``process``, ``merge``, ``fit``, ``run``, ``demo``) needs a Prefect API.
With ``PREFECT_API_URL`` set (a running ``prefect server``, which also gives the dashboard) it
uses that one; so it does, without the variable, when a ``prefect server`` of the same
``PREFECT_HOME`` runs on this machine where ``prefect server start`` puts it
(:func:`running_server_url`). Otherwise it starts a temporary API server of its own
(:class:`ApiServer`): the server Prefect itself would start, run in the same mode (its private
``PREFECT__SERVER_*`` variables, UI off), but in a session of its own, so that Ctrl-C reaches
only the command, which then records the interruption through the server before stopping it.
Prefect's own temporary server shares the command's process group: Ctrl-C killed it at once,
and the flow then retried the dead server instead of ending. On Linux the kernel also stops the
server when the command dies (SIGKILL, OOM). Its database is the one in ``PREFECT_HOME``, kept
between commands.

Start-up strategy. A command's fixed cost is mostly importing (Prefect, its server, scipy,
pandas) and the temporary server's start, on a machine whose cores the stages need. So:

1. The server starts first, as its own process, and the command checks its arguments and the
   input meanwhile (:func:`start_api_server_during`): the checks' imports overlap the start
   (``overlap``).
2. The server imports with Python's cyclic garbage collector off: importing makes a great many
   objects that live as long as the process, which the collector would walk again and again.
   Once the app has started they are frozen (``gc.freeze``), so later collections skip them
   (:func:`create_app`; ``server-gc``). The stage workers' forkserver imports the same way
   (:mod:`pyama_lib.pipeline.preload`; ``worker-gc``).
3. The command imports its flows, and only then starts the stage workers' import, so that
   three processes do not import at once on a small machine (:func:`prefect_session`).
4. The temporary server does nothing a one-command server does not need: no automations (the
   triggers service; ``triggers``), and the flow run sends no heartbeats, which only
   automations read (a sync flow run otherwise waits for its heartbeat thread's next second at
   its end; ``heartbeats``).

Each step is kept because ``make bench`` (case ``startup``) shows it saving time; steps that
stopped paying were removed (the same collector trick in the command's own process, importing
what the flow run needs while waiting for the server, and leaving without the interpreter's
teardown). ``PYAMA_UNTUNED=overlap,...`` turns the steps named in :data:`TUNINGS` off, for that
benchmark only.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import functools
import gc
import http.client
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from pyama_lib.core.errors import Interrupted

T = TypeVar("T")

#: The start-up steps above that ``PYAMA_UNTUNED`` can turn off (benchmarks only).
TUNINGS = ("overlap", "server-gc", "worker-gc", "heartbeats", "triggers")


def tuned(step: str) -> bool:
    """Whether start-up step ``step`` (one of :data:`TUNINGS`) is on: always, unless a
    benchmark turned it off through ``PYAMA_UNTUNED``."""
    return step not in os.environ.get("PYAMA_UNTUNED", "").split(",")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec (Linux): SIGTERM when the command exits.
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the command's exit hook stops it
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


class ApiServer:
    """A started temporary server: :meth:`wait_ready` before the first API call, :meth:`stop`
    at the end. ``url`` is the API address for ``PREFECT_API_URL``."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api"
        triggers = "false" if tuned("triggers") else "true"
        env = {
            # Set the variable to "true" to have automations evaluated all the same.
            "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": triggers,
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        args = ["--factory", f"{__name__}:create_app", "--host", "127.0.0.1"]
        args += ["--port", str(port), "--log-level", "error", "--lifespan", "on"]
        # A file, not a pipe: nobody reads the server's output while it runs, and a full pipe
        # would block it. Its tail explains a server that failed to start.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
        self.process = subprocess.Popen(
            # uvicorn's command line (see _serve); -P: a folder named like a package in the
            # working directory (a user's own flows/) must not shadow ours
            [sys.executable, "-P", "-m", __name__, *args],
            env=env,
            start_new_session=True,  # Ctrl-C's SIGINT reaches the command, not the server
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def wait_ready(self, timeout: float) -> None:
        """Block until the server answers its health check; RuntimeError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                error = self.log.read().decode(errors="replace")
                raise RuntimeError(
                    f"the temporary Prefect API server exited ({self.process.returncode}): "
                    f"{error.strip()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)  # a refused connection is cheap: poll often, start sooner
        self.stop()
        raise RuntimeError(
            f"the temporary Prefect API server did not start within {timeout:g} s; the machine "
            "may be very busy. Run a Prefect server and export PREFECT_API_URL "
            "(docs/processing.md)."
        )

    def abandon(self) -> None:
        """Stop a server that has served nothing yet (the command's checks failed): killed at
        once, as uvicorn would finish its whole start-up before obeying a SIGTERM."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_api_server() -> ApiServer | None:
    """Start a temporary server unless ``PREFECT_API_URL`` names one already, or a ``prefect
    server`` of this ``PREFECT_HOME`` runs on this machine (then None, and it is used)."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    if "prefect.settings" in sys.modules:  # already configured in this process (tests, notebooks)
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            return None
    elif (url := running_server_url()) is not None:
        os.environ["PREFECT_API_URL"] = url  # read when Prefect is imported, here and in workers
        return None
    return ApiServer()


def running_server_url() -> str | None:
    """The API of a ``prefect server`` running where ``prefect server start`` puts it
    (``PREFECT_SERVER_API_HOST``/``_PORT``, by default 127.0.0.1:4200) whose home is this
    command's ``PREFECT_HOME``, else None.

    The home must match: a server of another project (another database) on the default port
    must not receive this command's runs. Asking costs a millisecond when nothing listens.
    """
    host = os.environ.get("PREFECT_SERVER_API_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # listening everywhere: reachable on loopback
        host = "127.0.0.1"
    url = f"http://{host}:{os.environ.get('PREFECT_SERVER_API_PORT') or '4200'}/api"
    try:
        with urllib.request.urlopen(f"{url}/admin/settings", timeout=2) as response:
            home = json.load(response).get("home")
    except (OSError, ValueError, AttributeError, http.client.HTTPException):
        # nothing there, or not a Prefect server (another service on the port)
        return None
    mine = os.environ.get("PREFECT_HOME") or "~/.prefect"
    if not isinstance(home, str) or not _same_folder(home, mine):
        return None
    return url


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def start_api_server_during(check: Callable[[], T]) -> tuple[ApiServer | None, T]:
    """Start the temporary API server (unless one is configured) and run ``check`` while it
    starts (step 1). A failing check stops the server at once."""
    if not tuned("overlap"):
        result = check()
        return start_api_server(), result
    server = start_api_server()
    try:
        return server, check()
    except BaseException:
        if server is not None:
            server.abandon()
        raise


@contextmanager
def prefect_session(
    server: ApiServer | None, flows_module: str, process_workers: bool = False
) -> Iterator[None]:
    """What a flow command needs once its arguments are checked: a Prefect API (``server``,
    the temporary one, or None when one is configured), ``flows_module`` (the command's flows)
    imported and, for the process runner, the stage workers' import started (step 3)."""
    if server is not None:
        atexit.register(server.stop)  # registered before Prefect's own exit hooks: runs last
    importlib.import_module(flows_module)
    if process_workers:
        from pyama_lib.pipeline.pool import prestart

        # Workers stopped mid-stage (Ctrl-C, an OOM kill) leave the pool's queue semaphores
        # to multiprocessing's resource tracker, which unlinks them and then warns about
        # "leaked semaphore objects": nothing is left behind, so its warning is noise for the
        # person at the terminal. The tracker process takes its warning filters from here.
        sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")
        prestart()
    with _prefect_api(server):
        yield


@contextmanager
def _prefect_api(server: ApiServer | None) -> Iterator[None]:
    """Point Prefect at ``server`` for the block, unless a Prefect profile already names a
    server: then that one is used and ``server`` stopped."""
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
    updates: dict[Any, Any] = {PREFECT_API_URL: server.url}
    if tuned("heartbeats"):
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None  # step 4
    with temporary_settings(updates=updates):
        yield


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted("SIGTERM", 128 + signal.SIGTERM)


def stops_on_sigterm(run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A command that SIGTERM (a service manager's stop) ends like Ctrl-C: the run is recorded
    as interrupted, exit status 143."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
        try:
            return run(args)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapped


def create_app() -> Any:
    """Prefect's server app (``prefect.server.api.server:create_app``), its garbage collector
    back on once its start-up is done (step 2; see :func:`_serve`)."""
    from prefect.server.api.server import create_app as prefect_app

    app = prefect_app()
    start_up = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with start_up(app) as state:
            if tuned("server-gc"):
                gc.freeze()
            gc.enable()
            yield state

    app.router.lifespan_context = lifespan
    return app


def _serve() -> None:
    """The server process: uvicorn's command line (``python -m uvicorn`` as ever), with the
    garbage collector off until the app has started (step 2)."""
    if tuned("server-gc"):
        gc.disable()
    from uvicorn.main import main

    main(prog_name="uvicorn")


if __name__ == "__main__":
    _serve()
