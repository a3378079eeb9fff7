"""Test configuration: Prefect state in a temporary folder, no telemetry, shared test data."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

# Set before anything imports prefect: its settings are read once at import time.
_PREFECT_HOME = tempfile.mkdtemp(prefix="pyama-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (as CI has it); PYAMA_SHARED overrides.
SHARED = Path(os.environ.get("PYAMA_SHARED", REPO.parent / "shared"))
ND2_DIR = SHARED / "data" / "nd2"


@pytest.fixture(scope="session")
def nd2_dir() -> Path:
    if not ND2_DIR.is_dir():
        pytest.fail(f"shared ND2 test data not found at {ND2_DIR}; set PYAMA_SHARED")
    return ND2_DIR


@pytest.fixture
def fresh_index_cache(monkeypatch: pytest.MonkeyPatch):
    """An empty per-process index cache of the readers, which also caches files and folders
    written just now (no settle time)."""
    from pyama_lib.io.readers import index_cache

    monkeypatch.setattr(index_cache, "SETTLE_SECONDS", 0.0)
    index_cache.clear_index_cache()
    yield
    index_cache.clear_index_cache()


@pytest.fixture(scope="session")
def formats_dir() -> Path:
    """shared/data/formats: real files of other formats (CZI, LIF, ...), read in place."""
    formats = SHARED / "data" / "formats"
    if not formats.is_dir():
        pytest.fail(f"shared format test data not found at {formats}; set PYAMA_SHARED")
    return formats


@pytest.fixture(scope="session")
def prefect_api():
    """A real, temporary Prefect API for the session (about 9 s to start, so not autouse:
    library tests do not pay it). It sets PREFECT_API_URL, so process workers share it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


def assert_group_exits(pgid: int, what: str, seconds: float = 10) -> None:
    """Fail unless every process of group ``pgid`` is gone within ``seconds`` (then kill them,
    so a failing test leaves nothing behind)."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)  # raises once no process of the group is left
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)
        pytest.fail(f"{what} outlived the run by {seconds:g} s")
    except ProcessLookupError:
        pass
