"""Subprocesses for the tests that run services (Prefect server, pyama serve/watch, Dask
scheduler and workers): each in a session of its own, its output in a log file, stopped by
process group (SIGTERM, then SIGKILL), also when the test fails."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class Processes:
    """Started subprocesses, each in its own session, with its output in a log file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.folder / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen) -> str:
        path = next(log for p, log in self.started if p is proc)
        return path.read_text(errors="replace")

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):  # children that outlived their leader
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc, _ in reversed(self.started):  # serve and workers before the server
            self.stop(proc)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def prefect_server_env(home: Path, **extra: str) -> tuple[dict[str, str], str]:
    """The environment of a ``prefect server start`` of its own (state in ``home``, a free port
    on 127.0.0.1, no analytics) plus ``extra``, and its API URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra,
    }
    return env, f"http://127.0.0.1:{port}/api"
