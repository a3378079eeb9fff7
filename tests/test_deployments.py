"""The inbox service end to end: a real ``prefect server`` on loopback, ``pyama serve`` and
``pyama watch`` as separate processes, acquisitions written into the inbox, and every answer
read back through the Prefect API.

All processes are started in sessions of their own and stopped by process group at the end,
also when a test fails. Marked ``deployments``: ``pytest -m deployments`` runs these alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pyama_lib.pipeline.run_record import load_run_yaml
from pyama_lib.synthetic.generator import make_synthetic
from tests.processes import Processes, prefect_server_env, wait_for

pytestmark = [pytest.mark.deployments, pytest.mark.long]

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
ACQUISITION = "process-new-acquisition/on-acquisition-finished"
SWEEP = "sweep-inbox/inbox-sweep"


class _RetryUnavailable(httpx.HTTPTransport):
    """Send a request again while the server answers 503, as Prefect's own client does: the
    server says so when SQLite is locked by another writer."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(10):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(1.0)
        return response


class Api:
    """The few REST calls the tests make (httpx, so this test process keeps its own Prefect
    settings)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=20, transport=_RetryUnavailable())

    def deployment(self, name: str) -> dict[str, Any] | None:
        response = self.http.get(f"/deployments/name/{name}")
        return response.json() if response.status_code == 200 else None

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        found = self.deployment(deployment)
        if found is None:
            return []
        body = {"deployments": {"id": {"any_": [found["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return self.http.post("/flow_runs/filter", json=body).json()

    def runs_for(self, deployment: str, path: str | Path) -> list[dict[str, Any]]:
        return [r for r in self.runs(deployment) if r["parameters"].get("path") == str(path)]

    def emit(self, path: str) -> None:
        event = {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": "pyama.acquisition.finished",
            "resource": {"prefect.resource.id": f"pyama.acquisition.{path}"},
            "payload": {"path": path},
        }
        self.http.post("/events", json=[event]).raise_for_status()

    def start_run(self, deployment: str, parameters: dict[str, Any]) -> httpx.Response:
        found = self.deployment(deployment)
        assert found is not None, deployment
        return self.http.post(
            f"/deployments/{found['id']}/create_flow_run", json={"parameters": parameters}
        )


def final(runs: list[dict[str, Any]], n: int) -> list[dict[str, Any]] | None:
    done = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
    return done if len(done) >= n else None


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A Prefect server and ``pyama serve`` over two inbox folders."""
    root = tmp_path_factory.mktemp("service")
    env, url = prefect_server_env(
        root / "prefect",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_LOGGING_LEVEL="INFO",
        XDG_STATE_HOME=str(root / "state"),
    )
    env["PREFECT_API_URL"] = url
    procs = Processes(root)
    inboxes = [root / "inbox", root / "inbox-sweep"]
    for folder in inboxes:
        folder.mkdir()
    try:
        procs.start("server", [str(BIN / "prefect"), "server", "start"], env)
        api = Api(url)

        def healthy() -> bool:
            try:
                return api.http.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the Prefect server", healthy, 90)
        serve = [str(BIN / "pyama"), "serve", "--output-root", str(root / "out")]
        serve += ["--inbox", str(inboxes[0]), "--inbox", str(inboxes[1])]
        serve += ["--runner", "thread", "--workers", "1", "--schedule", "off"]
        serve += ["--quiet-seconds", "2", "--max-concurrent", "4"]
        procs.start("serve", serve, env)
        wait_for("the deployments", lambda: api.deployment(SWEEP), 60)
        source = make_synthetic(root / "src", n_fovs=1, n_frames=6, size=96, n_cells=4, seed=3)
        yield {
            "root": root,
            "env": env,
            "api": api,
            "procs": procs,
            "inbox": inboxes[0],
            "sweep_inbox": inboxes[1],
            "out": root / "out",
            "source": source.path,
        }
    finally:
        procs.stop_all()


def write_in_pieces(source: Path, target: Path, pieces: int = 4, pause: float = 0.5) -> None:
    data = source.read_bytes()
    step = len(data) // pieces + 1
    with target.open("wb") as fh:
        for start in range(0, len(data), step):
            fh.write(data[start : start + step])
            fh.flush()
            time.sleep(pause)


def announcements(log: str) -> list[str]:
    return [line.split()[1] for line in log.splitlines() if line.startswith("announced ")]


def test_a_finished_acquisition_is_processed_once_and_outside_paths_are_refused(service):
    api, procs, inbox, out = service["api"], service["procs"], service["inbox"], service["out"]
    watch = [str(BIN / "pyama"), "watch", str(inbox), "--quiet-seconds", "1.5"]
    watcher = procs.start("watch", watch, service["env"])
    wait_for("the watcher", lambda: "not yet announced" in procs.log(watcher), 30)

    target = inbox / "exp1.ome.tif"
    write_in_pieces(service["source"], target)  # grows for about 2 s, then stops
    runs = wait_for("the triggered run", lambda: final(api.runs_for(ACQUISITION, target), 1), 90)
    time.sleep(2)  # a second run, if one were made, would show by now
    runs = api.runs_for(ACQUISITION, target)
    assert [r["state_type"] for r in runs] == ["COMPLETED"], procs.log(watcher)
    assert runs[0]["created_by"]["type"] == "AUTOMATION"  # started by the event trigger
    assert runs[0]["name"] == "exp1.ome.tif"
    folder = out / "exp1"
    for name in ("processing_results.yaml", "run.yaml", "inbox.yaml", "traces.parquet"):
        assert (folder / name).exists(), name
    assert announcements(procs.log(watcher)) == [str(target)]

    # An event naming a file outside the inbox, directly, through `..`, or through a symlink
    # in the inbox: each run refuses it before reading anything, and writes nothing.
    outside = service["root"] / "outside.ome.tif"
    shutil.copy(service["source"], outside)
    link = inbox / "link.ome.tif"
    link.symlink_to(outside)
    paths = [str(outside), f"{inbox}/../outside.ome.tif", str(link)]
    for path in paths:
        api.emit(path)
    refused = wait_for(
        "the refused runs",
        lambda: final([r for p in paths for r in api.runs_for(ACQUISITION, p)], 3),
        60,
    )
    for run in refused:
        assert run["state_type"] in ("FAILED", "CRASHED"), run["state"]  # unknown parameter
        assert "outside the inbox" in run["state"]["message"], run["state"]
    assert (
        "resolves to"
        in next(r for r in refused if r["parameters"]["path"] == str(link))["state"]["message"]
    )
    assert sorted(p.name for p in out.iterdir()) == ["exp1"]  # nothing written for them
    wait_for("the watcher's refusal", lambda: "not announced" in procs.log(watcher), 10)

    # A restarted watcher announces nothing new; an event delivered again finds it done.
    procs.stop(watcher)
    again = procs.start("watch", watch, service["env"])
    wait_for("the restarted watcher", lambda: "not yet announced" in procs.log(again), 30)
    api.emit(str(target))
    runs = wait_for("the repeated run", lambda: final(api.runs_for(ACQUISITION, target), 2), 60)
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"]
    assert announcements(procs.log(again)) == []
    assert len(api.runs_for(ACQUISITION, target)) == 2
    assert len(load_run_yaml(folder)) == 1  # the repeated run processed nothing
    procs.stop(again)


def test_the_dashboard_refuses_bad_parameters_before_a_run_starts(service):
    api = service["api"]
    path = str(service["inbox"] / "exp1.ome.tif")
    for bad in ({"n_workers": 0}, {"runner": "gpu"}, {"params": {"tracking": {"max_gap": 1.5}}}):
        response = api.start_run(ACQUISITION, {"path": path, **bad})
        assert response.status_code in (409, 422), (bad, response.text)
    deployed = api.deployment(ACQUISITION)
    assert deployed["global_concurrency_limit"]["limit"] == 4  # --max-concurrent
    schema = deployed["parameter_openapi_schema"]
    assert {"path", "samples_yaml", "n_workers", "runner", "params"} <= set(schema["properties"])
    # the folders are the service's, not a run's to choose
    assert not {"inbox", "output_root"} & set(schema["properties"])
    # A run given an inbox of its own still refuses a file outside the configured one.
    source = service["source"]
    response = api.start_run(ACQUISITION, {"path": str(source), "inbox": [str(source.parent)]})
    if response.status_code == 201:  # Prefect may take it; the run itself must not
        run = wait_for("the run", lambda: final(api.runs_for(ACQUISITION, source), 1), 60)[0]
        assert run["state_type"] in ("FAILED", "CRASHED"), run["state"]  # unknown parameter
        assert not (service["out"] / source.stem.split(".")[0]).exists()
    else:
        assert response.status_code in (409, 422), response.text


def test_the_sweep_processes_complete_acquisitions_once(service):
    api, inbox, out = service["api"], service["sweep_inbox"], service["out"]
    finished = [inbox / "a.ome.tif", inbox / "day2" / "b.ome.tif"]
    cancelled, failed = inbox / "c.ome.tif", inbox / "d.ome.tif"
    for path in [*finished, cancelled, failed]:
        path.parent.mkdir(exist_ok=True)
        shutil.copy(service["source"], path)
        old = time.time() - 60  # finished a minute ago
        os.utime(path, (old, old))
    growing = inbox / "growing.ome.tif"
    growing.write_bytes(service["source"].read_bytes()[:50_000])  # still being written
    # Earlier runs for this version of c (cancelled: `pyama serve` was stopped) and of d
    # (failed): the sweep hands c over again, but leaves d for a person.
    later = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1).isoformat()
    for path, state in ((cancelled, "CANCELLED"), (failed, "FAILED")):
        body = {
            "parameters": {"path": str(path)},
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
        }
        found = api.deployment(ACQUISITION)
        run = api.http.post(f"/deployments/{found['id']}/create_flow_run", json=body).json()
        forced = {"state": {"type": state}, "force": True}
        api.http.post(f"/flow_runs/{run['id']}/set_state", json=forced).raise_for_status()

    def sweep() -> dict[str, Any]:
        before = len(api.runs(SWEEP))
        assert api.start_run(SWEEP, {}).status_code == 201
        return wait_for("the sweep", lambda: final(api.runs(SWEEP), before + 1), 60)[-1]

    assert sweep()["state_type"] == "COMPLETED"
    expected = [*finished, cancelled]

    def swept() -> list[dict[str, Any]] | None:  # a, b, c's cancelled run and c's new one
        runs = [r for p in expected for r in api.runs_for(ACQUISITION, p)]
        return runs if len(runs) == 4 and final(runs, 4) else None

    runs = wait_for("the swept acquisitions", swept, 90)
    states = sorted((Path(r["parameters"]["path"]).name, r["state_type"]) for r in runs)
    assert states == [
        ("a.ome.tif", "COMPLETED"),
        ("b.ome.tif", "COMPLETED"),
        ("c.ome.tif", "CANCELLED"),
        ("c.ome.tif", "COMPLETED"),
    ], states
    assert (out / "a" / "inbox.yaml").exists() and (out / "day2" / "b" / "inbox.yaml").exists()
    assert [r["state_type"] for r in api.runs_for(ACQUISITION, failed)] == ["FAILED"]
    assert api.runs_for(ACQUISITION, growing) == []
    assert not (out / "growing").exists()

    total = len(api.runs(ACQUISITION))
    assert sweep()["state_type"] == "COMPLETED"
    time.sleep(2)
    assert len(api.runs(ACQUISITION)) == total  # the second sweep handed nothing over

    # A new version of a copied in with its older time (cp -p, rsync -a): a's completed run
    # started after that time, but it took another version; the sweep hands the new one over.
    replaced = finished[0]
    replaced.unlink()
    shutil.copy(service["source"], replaced)
    older = time.time() - 120
    os.utime(replaced, (older, older))
    assert sweep()["state_type"] == "COMPLETED"
    runs = wait_for(
        "the new version's run", lambda: final(api.runs_for(ACQUISITION, replaced), 2), 90
    )
    assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"]
    record = yaml.safe_load((out / "a" / "inbox.yaml").read_text())
    assert record["mtime_ns"] == replaced.stat().st_mtime_ns


def test_the_work_pool_form_runs_the_deployments_of_prefect_yaml(service):
    """deployments/prefect.yaml deployed to a process work pool; a `prefect worker` runs them:
    one run started by hand, one by the event."""
    api, procs, root = service["api"], service["procs"], service["root"]
    inbox, out = root / "pool-inbox", root / "pool-out"
    inbox.mkdir()
    env = {**service["env"], "PYAMA_INBOX": str(inbox), "PYAMA_OUTPUT_ROOT": str(out)}
    prefect = str(BIN / "prefect")
    subprocess.run(
        [prefect, "work-pool", "create", "pyama", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
    )
    deploy = [prefect, "--no-prompt", "deploy", "--all", "--prefect-file"]
    subprocess.run(
        [*deploy, "deployments/prefect.yaml"], env=env, cwd=REPO, check=True, capture_output=True
    )
    name = "process-new-acquisition/on-acquisition-finished-worker"
    worker = None
    try:
        deployed = api.deployment(name)
        assert "inbox" not in deployed["parameter_openapi_schema"]["properties"]
        assert deployed["global_concurrency_limit"]["limit"] == 1
        sweep = api.deployment("sweep-inbox/inbox-sweep-worker")
        assert sweep["parameters"]["deployment"] == name
        worker = procs.start("worker", [prefect, "worker", "start", "--pool", "pyama"], env)
        by_hand, by_event = inbox / "p1.ome.tif", inbox / "p2.ome.tif"
        for path in (by_hand, by_event):
            shutil.copy(service["source"], path)
        quick = {"runner": "thread", "n_workers": 1}
        # One after the other: the deployment's limit of 1 would hold a second run back for
        # the server's slot-retry delay (about 30 s).
        assert api.start_run(name, {"path": str(by_hand), **quick}).status_code == 201
        wait_for("the run by hand", lambda: final(api.runs_for(name, by_hand), 1), 120)
        api.emit(str(by_event))
        wait_for("the run by event", lambda: final(api.runs_for(name, by_event), 1), 120)
        runs = [r for p in (by_hand, by_event) for r in api.runs_for(name, p)]
        assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"]
        assert runs[1]["created_by"]["type"] == "AUTOMATION"
        assert all(r["work_pool_name"] == "pyama" for r in runs)
        for stem in ("p1", "p2"):
            assert (out / stem / "inbox.yaml").exists()
    finally:  # the deployments' trigger must not outlive the test, nor its worker
        for each in (name, "sweep-inbox/inbox-sweep-worker"):
            if found := api.deployment(each):
                api.http.delete(f"/deployments/{found['id']}")
        # Its runs are done: in the whole suite it outlived 15 s after SIGTERM (alone, 0.5 s),
        # and nothing of it needs a graceful end.
        if worker is not None:
            procs.stop(worker, grace=3.0)


def test_a_command_leaves_at_once_with_its_run_fully_recorded(service):
    """`pyama process` skips the interpreter's teardown (its last exit hook leaves): the run's
    final state, logs and artifacts must still reach the server first."""
    api, root = service["api"], service["root"]
    out = root / "direct-out"
    cmd = [str(BIN / "pyama"), "process", str(service["source"]), "-o", str(out)]
    cmd += ["--runner", "thread", "--workers", "1"]
    done = subprocess.run(cmd, env=service["env"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    body = {"flows": {"name": {"any_": ["process-acquisition"]}}, "sort": "START_TIME_DESC"}
    run = next(
        r
        for r in api.http.post("/flow_runs/filter", json=body).json()
        if r["parameters"].get("output_dir") == str(out)
    )
    assert run["state_type"] == "COMPLETED"
    logs = {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "sort": "TIMESTAMP_ASC"}
    messages = [entry["message"] for entry in api.http.post("/logs/filter", json=logs).json()]
    assert messages and messages[-1].startswith("Finished in state Completed"), messages[-3:]
    artifacts = {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
    keys = {a["key"] for a in api.http.post("/artifacts/filter", json=artifacts).json()}
    assert {"synthetic-process-summary", "synthetic-process-outputs"} <= keys


def test_a_command_finds_the_running_server_of_its_prefect_home(service, tmp_path):
    """Without PREFECT_API_URL, `pyama process` uses a `prefect server` of the same
    PREFECT_HOME running where `prefect server start` puts it (here its port comes from
    PREFECT_SERVER_API_PORT) instead of starting a temporary one; a command of another
    PREFECT_HOME does not send its run there."""
    api = service["api"]
    env = {k: v for k, v in service["env"].items() if k != "PREFECT_API_URL"}

    def runs_into(out: Path) -> list[dict[str, Any]]:
        body = {"flows": {"name": {"any_": ["process-acquisition"]}}}
        runs = api.http.post("/flow_runs/filter", json=body).json()
        return [r for r in runs if r["parameters"].get("output_dir") == str(out)]

    for home, expected in [(env["PREFECT_HOME"], 1), (str(tmp_path / "other-home"), 0)]:
        out = tmp_path / f"out-{expected}"
        cmd = [str(BIN / "pyama"), "process", str(service["source"]), "-o", str(out)]
        cmd += ["--runner", "thread", "--workers", "1"]
        run_env = {**env, "PREFECT_HOME": home}
        done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert len(runs_into(out)) == expected
        # The same database either way (PREFECT_HOME's); which server took the run, run.yaml says.
        used = load_run_yaml(out)[-1].settings["prefect_api"]
        assert (used == api.url) == bool(expected), used
