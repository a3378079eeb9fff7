"""Ctrl-C and SIGTERM during ``pyama process``: one line, the run recorded as interrupted, no
process left behind, exit status 130/143; the same command then resumes. Real subprocesses,
signalled the way a terminal (the whole process group) and a service manager (the pid) do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyama_lib.pipeline.run_record import load_run_yaml
from pyama_lib.synthetic.generator import make_synthetic
from tests.conftest import assert_group_exits

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("acq")
    return make_synthetic(out, n_fovs=2, n_frames=32, size=128, n_cells=4, seed=3).path


def _start(acquisition: Path, out: Path, runner: str, env: dict[str, str]) -> subprocess.Popen:
    def as_a_terminal_job() -> None:  # a foreground job gets SIGINT's default action
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "process", str(acquisition), "-o", str(out)]
        + ["--runner", runner],
        cwd=REPO,
        env={**os.environ, "PYAMA_FAULT": "segment:1:slow:60", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=as_a_terminal_job,
    )


def _interrupt(proc: subprocess.Popen, out: Path, signum: int, whole_group: bool) -> float:
    """Wait until FOV 1's segment stalls and FOV 0 is done, signal, return seconds until the
    command exited."""
    fired = out / ".pyama-fault-segment-1-slow"
    fov0_done = out / "fov_000" / "synthetic_fov_000_traces_ch_1.csv"
    deadline = time.monotonic() + 120
    while not (fired.exists() and fov0_done.exists()) and proc.poll() is None:
        assert time.monotonic() < deadline, "timeout"
        time.sleep(0.1)
    assert fired.exists(), proc.communicate()[1]
    time.sleep(0.3)
    sent = time.monotonic()
    if whole_group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the interrupted command had not exited after 30 s")
    return time.monotonic() - sent


def test_ctrl_c_with_the_temporary_server(acquisition, tmp_path):
    """No PREFECT_API_URL: the command starts Prefect's temporary server itself. Ctrl-C reaches
    the whole group; the server (in its own session) survives long enough for the flow run to
    be recorded as crashed, then goes."""
    assert "PREFECT_API_URL" not in os.environ  # conftest removes it: the command starts one
    out = tmp_path / "out"
    proc = _start(acquisition, out, "process", {"PREFECT_HOME": str(tmp_path / "prefect")})
    elapsed = _interrupt(proc, out, signal.SIGINT, whole_group=True)
    stderr = proc.stderr.read()
    assert proc.returncode == 130, stderr
    assert "pyama process: interrupted (Ctrl-C); run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "Warning" not in stderr
    assert elapsed < 15
    assert_group_exits(proc.pid, "processes of the interrupted run")
    record = load_run_yaml(out)[-1]
    assert record.status == "interrupted" and record.finished is not None
    # The server had a session of its own: no server (uvicorn, under flows.cli.session) with
    # this run's PREFECT_HOME is left.
    left = subprocess.run(
        ["pgrep", "-f", "uvicorn|flows.cli.session"], capture_output=True, text=True
    ).stdout
    for pid in left.split():
        environ = Path(f"/proc/{pid}/environ")
        if environ.exists():
            assert str(tmp_path) not in environ.read_bytes().decode(errors="replace")


def test_sigterm_to_the_command_then_the_same_command_resumes(prefect_api, acquisition, tmp_path):
    from prefect.settings import PREFECT_API_URL

    out = tmp_path / "out"
    env = {"PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = _start(acquisition, out, "process", env)
    elapsed = _interrupt(proc, out, signal.SIGTERM, whole_group=False)
    stderr = proc.stderr.read()
    assert proc.returncode == 143, stderr
    assert "pyama process: interrupted (SIGTERM); run the same command again" in stderr
    assert "Traceback" not in stderr and elapsed < 15
    assert_group_exits(proc.pid, "processes of the interrupted run")
    (record,) = load_run_yaml(out)
    assert record.status == "interrupted"
    assert record.summary["reason"].startswith("interrupted")

    again = _start(acquisition, out, "process", {**env, "PYAMA_FAULT": ""})
    _, stderr = again.communicate(timeout=180)
    assert again.returncode == 0, stderr
    runs = load_run_yaml(out)
    assert [r.status for r in runs] == ["interrupted", "completed"]
    assert set(runs[-1].timings[0].values()) == {"skipped"}  # FOV 0 had finished
