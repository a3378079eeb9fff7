"""``pyama process --runner dask`` on a real cluster: a ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1 (random ports, through a scheduler file), the command as a person types
it, and every answer read back from the outputs and the Prefect API.

A worker SIGKILLed in the middle of a stage costs the run nothing but time; a stage that kills
every worker it lands on fails only its FOV, after the scheduler's allowed-failures; workers
that cannot write the output folder stop the run before any stage. All processes are stopped
by process group at the end, also when a test fails. Marked ``cluster``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.client.orchestration import get_client

from flows.process import process_acquisition
from pyama_lib.pipeline.run_record import RunRecord, load_run_yaml
from pyama_lib.synthetic.generator import make_synthetic
from tests import probes
from tests.processes import Processes, prefect_server_env, wait_for

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent
N_FOVS, N_FRAMES, N_CELLS = 3, 32, 4


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory, prefect_api) -> dict[str, Any]:
    """A synthetic acquisition and the default runner's traces of it."""
    root = tmp_path_factory.mktemp("scale-out")
    info = make_synthetic(
        root / "in", n_fovs=N_FOVS, n_frames=N_FRAMES, size=128, n_cells=N_CELLS, write_labels=False
    )
    reference = root / "reference"
    assert process_acquisition(str(info.path), str(reference)).fovs_done == [0, 1, 2]
    return {"path": info.path, "reference": reference}


class Cluster:
    """A Dask scheduler and its workers, each a separate process of its own session."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes = Processes(folder)
        self.scheduler_file = folder / "scheduler.json"

    def start_scheduler(self, env: dict[str, str] | None = None, extra: list[str] = ()) -> str:
        args = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0"]
        args += ["--no-dashboard", "--scheduler-file", str(self.scheduler_file), *extra]
        self.processes.start("scheduler", args, {**os.environ, **(env or {})})
        wait_for("the scheduler file", self.scheduler_file.is_file, timeout=30, every=0.1)
        return json.loads(self.scheduler_file.read_text())["address"]

    def start_worker(
        self,
        env: dict[str, str],
        nanny: bool = False,
        wrap: list[str] | None = None,
        extra: list[str] = (),
    ) -> subprocess.Popen:
        args = [str(BIN / "dask"), "worker", "--scheduler-file", str(self.scheduler_file)]
        args += ["--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", *extra]
        args += ["--nanny" if nanny else "--no-nanny"]
        # INFO: the stages' logs are what the test reads back from the API
        env = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO", **env}
        return self.processes.start("worker", [*(wrap or []), *args], env)

    def wait_for_workers(self, address: str, n: int) -> dict[str, int]:
        """The workers' process ids by address, once ``n`` have registered."""
        import distributed

        with distributed.Client(address, timeout=30) as client:
            client.wait_for_workers(n, timeout=60)
            return client.run(os.getpid)

    def logs(self) -> str:
        return "\n".join(self.processes.log(p) for p, _ in self.processes.started)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.processes.stop_all()


def _api_env() -> dict[str, str]:
    """The command's environment: this session's Prefect API, so the test can read the run."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYAMA_FAULT": ""}


def _process(
    path: Path, out: Path, address: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    args = [str(BIN / "pyama"), "process", str(path), "-o", str(out), "--runner", "dask"]
    return subprocess.Popen(
        [*args, "--dask-address", address],
        env={**_api_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 150) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"pyama process did not finish in {timeout:g} s:\n{out}\n{err}")
    return proc.returncode, out + err


def _traces(out: Path, fov: int) -> pd.DataFrame:
    return pd.read_csv(out / f"fov_{fov:03d}" / f"synthetic_fov_{fov:03d}_traces_ch_1.csv")


def _flow_run(out: Path) -> tuple[RunRecord, list[Any], list[Any]]:
    """The run's last run.yaml entry, and its flow run's task runs and logs from the API."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    record = load_run_yaml(out)[-1]
    run_id = record.settings["flow_run_id"]
    with get_client(sync_client=True) as client:
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        task_runs = client.read_task_runs(flow_run_filter=runs)
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return record, task_runs, logs


@pytest.mark.long
def test_a_worker_killed_mid_stage_costs_only_time(acquisition, cluster, tmp_path) -> None:
    address = cluster.start_scheduler()
    # fov_001's correct stage pauses for 30 s, once: the test kills the worker in it (its
    # nanny starts a new one)
    for _ in range(2):
        cluster.start_worker({"PYAMA_FAULT": "correct:1:slow:30"}, nanny=True)
    pids = cluster.wait_for_workers(address, 2)
    out = tmp_path / "out"
    proc = _process(acquisition["path"], out, address)
    paused = out / ".pyama-fault-correct-1-slow"  # holds the pid of the worker in the pause
    wait_for("a worker in fov_001's correct stage", paused.is_file, timeout=90, every=0.1)
    victim = int(wait_for("the paused worker's pid", lambda: paused.read_text(), timeout=5))
    assert victim in pids.values()
    # A worker sends its logs in batches every 2 s, and a SIGKILL takes the unsent batch
    # with it: the victim may have finished, say, fov_000's extract just before this pause.
    # The logs it had sent must arrive, hence the wait past one batch before the kill.
    time.sleep(3.0)
    os.kill(victim, signal.SIGKILL)

    status, output = _finish(proc)
    assert status == 0, output
    assert "Traceback" not in output
    for fov in range(N_FOVS):  # the same traces as the default runner's, nothing doubled
        by_dask = _traces(out, fov)
        assert by_dask["cell"].nunique() == N_CELLS and len(by_dask) == N_CELLS * N_FRAMES
        pd.testing.assert_frame_equal(by_dask, _traces(acquisition["reference"], fov))
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "traces.parquet").sort_values(["fov", "cell", "frame"]),
        pd.read_parquet(acquisition["reference"] / "traces.parquet").sort_values(
            ["fov", "cell", "frame"]
        ),
        check_like=True,
    )
    record, task_runs, logs = _flow_run(out)
    assert record.status == "completed"
    # one task run per FOV stage, all completed: the redone stage kept its task run
    names = sorted(t.name for t in task_runs)
    assert len(names) == 5 * N_FOVS and len(set(names)) == len(names)
    assert {t.state_type.value for t in task_runs} == {"COMPLETED"}
    redone = next(t for t in task_runs if t.name == "correct fov_001")
    with get_client(sync_client=True) as client:
        history = [state.type.value for state in client.read_task_run_states(redone.id)]
    assert history.count("RUNNING") == 2  # started by the killed worker, finished by the other
    messages = [log.message for log in logs]
    # the last stage's logs came from the workers and reached the API before it stopped
    assert sum("extract fov_" in m and "wrote traces_ch_1" in m for m in messages) == N_FOVS
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (every frame-sized
    # temporary faulted in anew, stages 2-4x slower); the stages' worker keeps freed memory
    import cloudpickle
    import distributed

    cloudpickle.register_pickle_by_value(probes)  # the workers need not import tests/
    with distributed.Client(address, timeout=30) as client:
        faults = client.run(probes.frame_faults)
    survivor = next(w for w, pid in pids.items() if pid != victim)
    # five more frames cost fewer faults than one fresh frame would
    assert faults[survivor] < probes.FRESH_FRAME_FAULTS


@pytest.mark.long
def test_a_stage_that_kills_every_worker_fails_only_its_fov(acquisition, cluster, tmp_path) -> None:
    address = cluster.start_scheduler({"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"})
    for _ in range(2):  # nannies restart the workers that the stage kills
        cluster.start_worker({"PYAMA_FAULT": "segment:1:crash-always"}, nanny=True)
    cluster.wait_for_workers(address, 2)
    out = tmp_path / "out"
    status, output = _finish(_process(acquisition["path"], out, address))
    assert status == 3, output  # some FOVs failed, the others are done
    assert "Traceback" not in output
    assert (
        "fov_001 in segment: ClusterError: the stage killed every Dask worker it ran on, 2 in a "
        "row twice" in output
    )
    for fov in (0, 2):
        pd.testing.assert_frame_equal(_traces(out, fov), _traces(acquisition["reference"], fov))
    assert not (out / "fov_001" / "synthetic_fov_001_traces_ch_1.csv").exists()
    record, task_runs, _ = _flow_run(out)
    assert record.status == "failed"
    # given up by the scheduler, submitted once more, given up again: two crashed task runs
    # (not left "running" by their dead workers)
    lost = [t.state_type.value for t in task_runs if t.name == "segment fov_001"]
    assert lost == ["CRASHED", "CRASHED"]
    states = {t.name: t.state_type.value for t in task_runs if t.name != "segment fov_001"}
    assert "track fov_001" not in states and set(states.values()) == {"COMPLETED"}


def test_workers_that_cannot_write_the_output_stop_the_run_first(
    acquisition, cluster, tmp_path
) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-Urm", "true"], check=False).returncode:
        pytest.skip("needs unprivileged user namespaces (unshare -Urm) for the read-only mount")
    shared = tmp_path / "shared"  # one worker sees this folder read-only, as a share mounted so
    shared.mkdir()
    address = cluster.start_scheduler()
    cluster.start_worker({})
    remount = f'mount --bind {shared} {shared} && mount -o remount,bind,ro {shared} && exec "$@"'
    cluster.start_worker({}, wrap=[unshare, "-Urm", "sh", "-c", remount, "sh"])
    pids = cluster.wait_for_workers(address, 2)
    out = shared / "out"
    status, output = _finish(_process(acquisition["path"], out, address))
    assert status == 2, output
    assert "Traceback" not in output
    assert "1 problem(s) on the Dask cluster" in output
    problems = [line.strip() for line in output.splitlines() if line.startswith("  Dask worker")]
    bad = [line for line in problems if "cannot write into the output folder" in line]
    assert (
        len(problems) == 1
        and len(bad) == 1
        and str(out) in bad[0]
        and "Read-only file system" in bad[0]
    )
    assert any(worker in bad[0] for worker in pids)  # names the worker's address
    # no stage ran: no FOV folder, and the failed run is recorded without stage timings
    assert not list(out.glob("fov_*"))
    record, task_runs, _ = _flow_run(out)
    assert record.status == "failed" and not record.timings
    assert task_runs == []


def test_a_cluster_without_workers_is_named(acquisition, cluster, tmp_path, monkeypatch) -> None:
    import flows.support.cluster
    from pyama_lib.core.errors import ClusterError

    address = cluster.start_scheduler()
    monkeypatch.setattr(flows.support.cluster, "WORKER_WAIT_S", 1.0)  # instead of waiting 30 s
    with pytest.raises(
        ClusterError, match=f"the Dask cluster at {address} has no workers after 1 s"
    ):
        process_acquisition(
            str(acquisition["path"]), str(tmp_path / "out"), runner="dask", dask_address=address
        )
    assert not list((tmp_path / "out").glob("fov_*"))


@pytest.mark.long
def test_ctrl_c_leaves_no_stage_writing_on_the_cluster(acquisition, cluster, tmp_path) -> None:
    """Dask cannot stop a running task: after Ctrl-C the command cancels its stages and waits
    until no worker runs one, so its lock is never released under a stage still writing (a
    re-run started at once would write the same arrays)."""
    import cloudpickle
    import distributed

    address = cluster.start_scheduler()
    cluster.start_worker({"PYAMA_FAULT": "segment:0:slow:8"})  # a long stage, once
    cluster.wait_for_workers(address, 1)
    out = tmp_path / "out"
    proc = _process(acquisition["path"], out, address)
    paused = out / ".pyama-fault-segment-0-slow"
    wait_for("a worker in fov_000's segment stage", paused.is_file, timeout=90, every=0.1)
    proc.send_signal(signal.SIGINT)
    status, output = _finish(proc, timeout=60)
    assert status == 130, output
    assert "waiting for 1 stage(s) still running on the Dask cluster" in output
    cloudpickle.register_pickle_by_value(probes)  # the workers need not import tests/
    with distributed.Client(address, timeout=30) as client:
        running = client.run(probes.running_tasks)
    assert running and all(keys == [] for keys in running.values()), running
    assert not (out / ".pyama.lock").exists()
    assert load_run_yaml(out)[-1].status == "interrupted"


@pytest.mark.long
def test_a_tls_cluster_runs_the_command_and_refuses_a_client_without_its_certificate(
    acquisition, cluster, tmp_path
) -> None:
    """The safe form of docs/scaling.md: scheduler and workers speak TLS with certificates of
    the lab's own CA; the command holds a client certificate through Dask's configuration."""
    import distributed
    from distributed.security import Security

    made = Security.temporary()  # a CA and one certificate it signed, as PEM text
    pem = {"ca": made.tls_ca_file, "cert": made.tls_client_cert, "key": made.tls_client_key}
    files = {}
    for name, text in pem.items():
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(text)
    tls = ["--tls-ca-file", str(files["ca"]), "--tls-cert", str(files["cert"])]
    tls += ["--tls-key", str(files["key"])]
    address = cluster.start_scheduler(extra=["--protocol", "tls", *tls])
    assert address.startswith("tls://")
    cluster.start_worker({}, extra=tls)

    stranger = Security.temporary()  # a certificate the lab's CA did not sign
    with pytest.raises((OSError, TimeoutError)):
        distributed.Client(address, security=stranger, timeout=5)
    with pytest.raises((OSError, TimeoutError)):  # nor in plain TCP
        distributed.Client(address.replace("tls://", "tcp://"), timeout=5)

    client_config = {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(files["ca"]),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(files["cert"]),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(files["key"]),
    }
    out = tmp_path / "out"
    status, output = _finish(_process(acquisition["path"], out, address, client_config))
    assert status == 0, output + cluster.logs()
    for fov in range(N_FOVS):
        pd.testing.assert_frame_equal(_traces(out, fov), _traces(acquisition["reference"], fov))


@pytest.mark.long
def test_a_prefect_server_with_a_password_serves_only_who_gives_it(
    acquisition, cluster, tmp_path
) -> None:
    """docs/scaling.md's Prefect server: with PREFECT_SERVER_API_AUTH_STRING set, the API
    refuses a request without the password and `pyama process` works with
    PREFECT_API_AUTH_STRING."""
    import httpx

    env, url = prefect_server_env(tmp_path / "prefect", PREFECT_SERVER_API_AUTH_STRING="lab:s3cret")
    env.pop("PREFECT_API_URL", None)
    cluster.processes.start("server", [str(BIN / "prefect"), "server", "start"], env)

    def status(auth: tuple[str, str] | None) -> int | None:
        try:
            return httpx.post(f"{url}/flows/filter", json={}, auth=auth, timeout=5).status_code
        except httpx.HTTPError:
            return None

    wait_for("the Prefect server", lambda: status(("lab", "s3cret")) == 200, 90)
    assert status(None) == 401 and status(("lab", "guess")) == 401

    out = tmp_path / "out"
    args = [str(BIN / "pyama"), "process", str(acquisition["path"]), "-o", str(out)]
    client = {**_api_env(), "PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": "lab:s3cret"}
    done = subprocess.run(args + ["--fovs", "0"], env=client, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    pd.testing.assert_frame_equal(_traces(out, 0), _traces(acquisition["reference"], 0))
