"""A temporary Prefect API server for one command, in its own session.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server as a child process in the
command's process group. Ctrl-C in a terminal sends SIGINT to that whole group: the server died
at once while the flow went on, and Prefect then retried the dead server every 7 s instead of
exiting (measured: still running after 30 s). Started here instead, the server has a session of
its own, so Ctrl-C reaches only the command, which records the interruption through the server
and then stops it. On Linux the kernel also stops it when the command dies (SIGKILL, OOM).

The server is the one Prefect itself starts (``prefect.server.api.server:create_app`` under
uvicorn, in Prefect's ephemeral mode: UI off, only the services that record runs), launched by
:func:`_serve`, which only keeps Python's garbage collector off while it starts; starting it
does not import Prefect, so it overlaps the command's validation. Its database is the one in
``PREFECT_HOME``, kept between commands: migrations run once, later starts only check them.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


def _die_with_parent() -> None:
    # Runs in the child between fork and exec (Linux): SIGTERM when the command exits.
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: Prefect's own atexit-style stop remains
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


class ApiServer:
    """A started server: :meth:`wait_ready` before the first API call, :meth:`stop` at the end.

    ``url`` is the API address for ``PREFECT_API_URL``.
    """

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api"
        env = {
            # Automations (the triggers and actions services) are not evaluated on a server
            # that lives for one command: their start (a second API app) was 0.2 s of its 3 s.
            # Flow and task runs, logs, artifacts and events are recorded as ever (the event
            # persister and task run recorder run). Set the variable to "true" to keep them.
            "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
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
            time.sleep(0.02)  # a refused connection costs ~0.1 ms: poll often, start sooner
        self.stop()
        raise RuntimeError(
            f"the temporary Prefect API server did not start within {timeout:g} s; the machine "
            "may be very busy. Run a Prefect server (README) and export PREFECT_API_URL."
        )

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
    """Start a temporary server unless ``PREFECT_API_URL`` names one already (then None)."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    if "prefect.settings" in sys.modules:  # already configured in this process (tests, notebooks)
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            return None
    return ApiServer()


def create_app() -> Any:
    """Prefect's server app (``prefect.server.api.server:create_app``), its garbage collector
    back on once its start-up is done (see :func:`_serve`)."""
    from prefect.server.api.server import create_app as prefect_app

    app = prefect_app()
    start_up = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with start_up(app) as state:
            # What start-up made is the server's for good (modules, the app, its routes):
            # frozen, later collections skip it, which keeps them short while stages run.
            gc.freeze()
            gc.enable()
            yield state

    app.router.lifespan_context = lifespan
    return app


def _serve() -> None:
    """The server process: uvicorn's command line (``python -m uvicorn`` as ever), with
    Python's cyclic garbage collector off until the app has started.

    The server's start is what every command waits for, and it is almost all imports and
    building the app (3 s of CPU); importing allocates a great many objects that live as long
    as the process, and the collector walked them all again and again: 16% of that time
    (0.37 s of 2.35 s measured). Start-up leaves little garbage, so nothing grows meanwhile.
    """
    gc.disable()
    from uvicorn.main import main

    main(prog_name="uvicorn")


if __name__ == "__main__":
    _serve()
