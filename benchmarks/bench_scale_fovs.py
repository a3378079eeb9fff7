"""Many FOVs (issue 25, ``scale``): ``pyama process`` on 10, 100 and 1000 small FOVs.

Inputs: one multi-series OME-TIFF per size, N FOVs × 8 frames × 128², phase contrast and one
fluorescence channel, 4 cells per FOV (cached); ``extraction: {min_frames: 4}`` (PyAMA keeps
cells tracked over 30 frames), so every stage does real work. Each size runs as a person types
it (a fresh process, 2 workers, batch 2, INFO logs) on the temporary API server (this
benchmark's ``PREFECT_HOME``, kept across sizes, smallest first), then again over the complete
output: a no-op re-run, every task finds its outputs complete. The largest size runs again on a
real ``prefect server start`` (SQLite, 127.0.0.1), the dashboard's queries timed meanwhile.

Definitions (S = 5 stages, w = 2 workers, N FOVs):

- ``stage_sum_s``: Σ run.yaml's per-FOV per-stage seconds (wall in the stage worker: store I/O,
  and any wait for a core the flow or the server holds).
- ``before_flow_s`` + ``flow_s`` + ``after_flow_s`` = wall, split where Prefect logs the flow
  run's beginning and end (start-up; the flow run; flushing logs and events, server stop, exit).
- ``fixed_s`` F: the 1-FOV command's wall minus its stage sum (one FOV's stages run one after
  another), median of 3.
- ``orch_ms``, orchestration per FOV-stage: (wall − F − stage_sum / w) / (N·S), what the stage
  work spread perfectly over w workers does not explain: the task engine, logs, events and
  artifact updates to the API, CPU the flow and the server take from the stage workers (2
  cores here), idle workers, start-up and exit work that grows with N. ``flow_orch_ms``: the
  same within the flow run, (flow_s − stage_sum / w) / (N·S); ``marginal_orch_ms``: between
  two sizes, free of F, Δ(wall − stage_sum / w) / (ΔN·S); ``noop_flow_ms``: the no-op re-run's
  flow_s / (N·S), orchestration without stage work (the flow run's own steps included).
- Peak RSS (``VmHWM``) and CPU seconds per process from /proc every 0.2 s: the flow (the
  ``pyama`` process), the API server, stage workers; ``tree_rss_mb``: ``wait4``'s ``ru_maxrss``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import yaml
from common import OUT, Record, ensure_synthetic, shown_verdict, verdict

SIZES, QUICK_SIZES = (10, 100, 1000), (4, 20)
FRAMES = {"n_frames": 8, "size": 128, "n_cells": 4}
STAGES, WORKERS = 5, 2  # the five stages; `pyama process`'s default --workers
TARGET_ORCH_MS, TARGET_RSS_MB = 20.0, 500.0
GUIDE_API_S = 1.0  # a dashboard query slower than this makes the page sluggish (our guide)
PARAMS = "extraction:\n  min_frames: 4\n"
BIN = Path(sys.executable).parent


def _input(n_fovs: int) -> str:
    return ensure_synthetic(f"fovs_{n_fovs}x8f_128", n_fovs=n_fovs, **FRAMES)


def _db_bytes(home: Path) -> int:
    """Size of Prefect's SQLite database in ``home`` (with its write-ahead log)."""
    return sum(f.stat().st_size for f in home.glob("prefect.db*"))


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A child's environment: Prefect's state in ``home`` and ``extra``; without
    ``PREFECT_API_URL`` in ``extra`` the command starts its temporary server."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    return {**env, **extra}


def _proc(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:  # gone meanwhile
        return ""


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        found.append(p := todo.pop())
        for task in Path(f"/proc/{p}/task").glob("*"):
            todo += [int(c) for c in _proc(p, f"task/{task.name}/children").split()]
    return found


class _Watch(threading.Thread):
    """Peak RSS and CPU seconds of process trees by role, sampled from /proc every 0.2 s."""

    def __init__(self, roots: dict[int, str]) -> None:
        super().__init__(daemon=True)
        self.roots, self.stop = roots, threading.Event()
        self.role: dict[int, str] = {}
        self.peak_mb: dict[str, float] = {}
        self.cpu_s: dict[int, float] = {}
        self.cpu0: dict[int, float] = {}  # a watched server's CPU before this command

    def _classify(self, pid: int, root: int) -> str:
        cmdline = _proc(pid, "cmdline")  # empty for a zombie: keep what it was
        if pid == root or self.roots[root] != "flow":
            self.role[pid] = self.roots[root]
        elif cmdline or pid not in self.role:
            self.role[pid] = "server" if "flows.cli.session" in cmdline else "worker"
        return self.role[pid]

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.stop.wait(0.2):
            for root in self.roots:
                for pid in _descendants(root):
                    role = self._classify(pid, root)
                    for line in _proc(pid, "status").splitlines():
                        if line.startswith("VmHWM:"):
                            mb = int(line.split()[1]) / 1024
                            self.peak_mb[role] = max(self.peak_mb.get(role, 0.0), mb)
                    stat = _proc(pid, "stat").rpartition(")")[2].split()
                    if len(stat) > 12:
                        self.cpu_s[pid] = (int(stat[11]) + int(stat[12])) / tick
                        if self.roots[root] != "flow":
                            self.cpu0.setdefault(pid, self.cpu_s[pid])

    def cpu_by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, seconds in self.cpu_s.items():
            seconds -= self.cpu0.get(pid, 0.0)
            out[self.role[pid]] = round(out.get(self.role[pid], 0.0) + seconds, 1)
        return out


def _command(path: str, out: Path, env: dict[str, str], params: Path, **roots: int) -> Record:
    """One ``pyama process`` into ``out``: wall and its phases, RSS, CPU, progress, outputs.
    ``roots`` are other process trees to watch (``server=pid``)."""
    args = [str(BIN / "pyama"), "process", path, "-o", str(out), "--params", str(params)]
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress: list[float] = []
    flow = {"begin": 0.0, "end": 0.0}  # when Prefect logs the flow run's beginning and end
    tail: deque[str] = deque(maxlen=20)

    def read() -> None:
        for raw in proc.stderr:  # type: ignore[union-attr]
            line, now = raw.decode(errors="replace"), time.perf_counter() - start
            if line.startswith("progress "):
                progress.append(now)
            elif "Beginning flow run" in line:
                flow["begin"] = now
            elif "Flow run" in line and "Finished in state" in line:
                flow["end"] = now
            tail.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    watch = _Watch({proc.pid: "flow", **{pid: role for role, pid in roots.items()}})
    watch.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    watch.stop.set()
    watch.join()
    reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"pyama process exited {proc.returncode}: {''.join(tail)}")
    run = yaml.load((out / "run.yaml").read_text(), Loader=yaml.CSafeLoader)["runs"][-1]
    seconds = [(st, s) for stages in run["timings"].values() for st, s in stages.items()]
    done = [(st, s) for st, s in seconds if not isinstance(s, str)]  # not "skipped"
    by_stage: dict[str, float] = {}
    for stage, s in done:
        by_stage[stage] = by_stage.get(stage, 0.0) + s
    gaps = [b - a for a, b in zip(progress, progress[1:], strict=False)]
    return {
        "wall_s": round(wall, 2),
        "before_flow_s": round(flow["begin"], 2),
        "flow_s": round(flow["end"] - flow["begin"], 2),
        "after_flow_s": round(wall - flow["end"], 2),
        "stage_sum_s": round(sum(by_stage.values()), 2),
        "stage_sum_by_stage_s": {stage: round(s, 1) for stage, s in by_stage.items()},
        "fov_stages": len(seconds),
        "flow_run_id": run["settings"]["flow_run_id"],
        "rss_mb": {role: round(mb, 1) for role, mb in sorted(watch.peak_mb.items())},
        "tree_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": watch.cpu_by_role(),
        "results_yaml_bytes": (out / "processing_results.yaml").stat().st_size,
        "run_yaml_bytes": (out / "run.yaml").stat().st_size,
        "progress_lines": len(progress),
        "first_progress_s": round(progress[0], 2) if progress else None,
        "max_progress_gap_s": round(max(gaps), 2) if gaps else None,
    }


def _fixed(env: dict[str, str], params: Path, out: Path, **roots: int) -> float:
    """F: median of 3 runs on the 1-FOV input, after an untimed one (database, page cache)."""
    fixed = []
    for _ in range(4):
        shutil.rmtree(out, ignore_errors=True)
        one = _command(_input(1), out, env, params, **roots)
        fixed.append(one["wall_s"] - one["stage_sum_s"])
    shutil.rmtree(out, ignore_errors=True)
    return statistics.median(fixed[1:])


def _time_pages(http: Any, fid: str) -> dict[str, float]:
    """Seconds of each query the dashboard's flow-run page makes (first pages of 50)."""
    by_flow = {"flow_runs": {"id": {"any_": [fid]}}}
    logs = {"logs": {"flow_run_id": {"any_": [fid]}}, "limit": 50}
    calls = {
        "flow_run": ("GET", f"/flow_runs/{fid}", None),
        "task_run_count": ("POST", "/task_runs/count", by_flow),
        "task_runs_page": ("POST", "/task_runs/filter", {**by_flow, "limit": 50}),
        "graph": ("GET", f"/flow_runs/{fid}/graph-v2", None),
        "logs_page": ("POST", "/logs/filter", logs),
    }
    seconds = {}
    for name, (method, url, body) in calls.items():
        start = time.perf_counter()
        http.request(method, url, json=body).raise_for_status()
        seconds[name] = time.perf_counter() - start
    return seconds


def _poll_pages(url: str, stop: threading.Event, samples: list[dict[str, float]]) -> None:
    """Time the flow-run page's queries of the running flow run every 10 s until ``stop``."""
    import httpx

    running = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
    with httpx.Client(base_url=url, timeout=120) as http:
        fid = None
        while not stop.wait(10.0):
            if fid is None and (found := http.post("/flow_runs/filter", json=running).json()):
                fid = found[0]["id"]
            if fid is not None:
                samples.append(_time_pages(http, fid))


def _after(url: str, fid: str, expected: int) -> Record:
    """Once the command is done: wait until every task run is stored (≤ 120 s), then the page
    queries (median of 3) and a client reading every task run, 200 a request."""
    import httpx

    by_flow = {"flow_runs": {"id": {"any_": [fid]}}}
    with httpx.Client(base_url=url, timeout=300) as http:
        start = time.perf_counter()
        while (n := http.post("/task_runs/count", json=by_flow).json()) < expected:
            if time.perf_counter() - start > 120:
                break
            time.sleep(1)
        lag = time.perf_counter() - start
        pages = [_time_pages(http, fid) for _ in range(3)]
        start, read, got = time.perf_counter(), 0, 200
        while got == 200:  # a full page: there may be more
            body = {**by_flow, "limit": 200, "offset": read}
            got = len(http.post("/task_runs/filter", json=body).raise_for_status().json())
            read += got
        read_s = time.perf_counter() - start
    return {
        "task_runs": n,
        "task_runs_stored_after_s": round(lag, 1),
        "api_after_s": {q: round(statistics.median(p[q] for p in pages), 3) for q in pages[0]},
        "read_all_task_runs_s": round(read_s, 2),
        "read_all_task_runs_n": read,
    }


def _start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` (SQLite in ``home``, 127.0.0.1), in a session of its own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _env(home, PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    with (home / "server.log").open("wb") as log:
        args = [str(BIN / "prefect"), "server", "start"]
        server = subprocess.Popen(args, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return server, url
        time.sleep(0.5)
    _stop(server)
    raise RuntimeError(f"prefect server did not start; see {home / 'server.log'}")


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (ours: its own session), SIGKILL after 20 s."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def run(quick: bool = False) -> list[Record]:
    """One record per size on the temporary server, one for the largest on a real server."""
    sizes = QUICK_SIZES if quick else SIZES
    for n in (1, *sizes):
        _input(n)  # generated before anything is timed
    OUT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="scale_fovs_", dir=OUT))
    params, out = scratch / "params.yaml", scratch / "out"
    params.write_text(PARAMS)
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    base = {"case": "scale", "part": "fovs", "date": date, "quick": quick, **FRAMES}
    records: list[Record] = []
    try:
        home = scratch / "prefect_home"
        env = _env(home)  # the temporary server, as a first-time user has it
        fixed = _fixed(env, params, out)
        for n in sizes:
            print(f"[bench] scale: {n} FOVs, temporary API server", file=sys.stderr, flush=True)
            before = _db_bytes(home)
            rec = {**base, "api": "temporary", "n_fovs": n, **_command(_input(n), out, env, params)}
            rec["db_growth_bytes"] = _db_bytes(home) - before
            db_url = f"file:{home / 'prefect.db'}?mode=ro"
            with contextlib.closing(sqlite3.connect(db_url, uri=True)) as db:
                sql, fid = "select count(*) from task_run where flow_run_id = ?", rec["flow_run_id"]
                rec["task_runs"] = db.execute(sql, (fid,)).fetchone()[0]
            noop = _command(_input(n), out, env, params)
            rec["noop"] = {k: noop[k] for k in ("wall_s", "flow_s", "rss_mb", "cpu_s")}
            rec["noop_flow_ms"] = round(1000 * noop["flow_s"] / (n * STAGES), 1)
            rec["run_yaml_bytes_after_noop"] = noop["run_yaml_bytes"]
            records.append({**rec, "fixed_s": round(fixed, 2)})
            shutil.rmtree(out, ignore_errors=True)
        records.append(_real_server(base, sizes[-1], params, out, scratch / "server_home"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _figures(records)
    return records


def _real_server(base: Record, n: int, params: Path, out: Path, home: Path) -> Record:
    print(f"[bench] scale: {n} FOVs, prefect server", file=sys.stderr, flush=True)
    home.mkdir()
    server, url = _start_server(home)
    try:
        env = _env(home, PREFECT_API_URL=url)
        fixed = _fixed(env, params, out, server=server.pid)
        stop, during = threading.Event(), []
        dashboard = threading.Thread(target=_poll_pages, args=(url, stop, during), daemon=True)
        dashboard.start()
        before = _db_bytes(home)
        try:
            rec = _command(_input(n), out, env, params, server=server.pid)
        finally:
            stop.set()
            dashboard.join()
        rec = {**base, "api": "prefect server", "n_fovs": n, **rec}
        rec.update(_after(url, rec["flow_run_id"], rec["fov_stages"]))
        rec["api_during_samples"] = len(during)
        rec["api_during_max_s"] = {
            q: round(max(s[q] for s in during), 3) for q in (during or [{}])[0]
        }
        rec["db_growth_bytes"] = _db_bytes(home) - before  # the run, and the dashboard's reads
        return {**rec, "fixed_s": round(fixed, 2)}
    finally:
        _stop(server)
        shutil.rmtree(out, ignore_errors=True)


def _figures(records: list[Record]) -> None:
    """Per-FOV and per-FOV-stage figures and verdicts (see the module's definitions)."""
    for r in records:
        n, per, fixed = r["n_fovs"], 1000 / (r["n_fovs"] * STAGES), r["fixed_s"]
        r["ms_per_fov"] = round(1000 * r["wall_s"] / n, 1)
        r["ms_per_fov_after_fixed"] = round(1000 * (r["wall_s"] - fixed) / n, 1)
        r["orch_ms"] = round(per * (r["wall_s"] - fixed - r["stage_sum_s"] / WORKERS), 1)
        r["flow_orch_ms"] = round(per * (r["flow_s"] - r["stage_sum_s"] / WORKERS), 1)
    temporary = [r for r in records if r["api"] == "temporary"]
    for a, b in zip(temporary, temporary[1:], strict=False):
        rest = b["wall_s"] - a["wall_s"] - (b["stage_sum_s"] - a["stage_sum_s"]) / WORKERS
        b["marginal_orch_ms"] = round(1000 * rest / ((b["n_fovs"] - a["n_fovs"]) * STAGES), 1)
    for r in records:
        r["verdict_orch"] = verdict(r["orch_ms"], TARGET_ORCH_MS, higher_is_better=False)
        r["verdict_rss"] = verdict(r["rss_mb"].get("flow", 0.0), TARGET_RSS_MB, False)
        if "api_after_s" in r:
            r["slowest_api_s"] = max([*r["api_after_s"].values(), *r["api_during_max_s"].values()])
            r["verdict_api"] = verdict(r["slowest_api_s"], GUIDE_API_S, False)


def table_rows(records: list[Record]) -> list[list[Any]]:
    """Rows of the summary table: case, measurement, value, target, verdict."""
    rows: list[list[Any]] = []
    for r in records:
        if r.get("part") != "fovs":
            continue
        label = f"{r['n_fovs']} FOV × {r['n_frames']}×{r['size']}², {r['api']} API"
        what = (
            f"{label}: wall {r['wall_s']:.1f} s = {r['before_flow_s']:.1f} before the flow run "
            f"+ {r['flow_s']:.1f} + {r['after_flow_s']:.1f} after ({r['ms_per_fov']:.0f} ms/FOV, "
            f"{r['ms_per_fov_after_fixed']:.0f} after F {r['fixed_s']:.1f} s); Σstage "
            f"{r['stage_sum_s']:.1f} s; {r['task_runs']} task runs stored, Prefect database +"
            f"{r['db_growth_bytes'] / 1e6:.0f} MB; orchestration per "
            f"FOV-stage (in the flow run {r['flow_orch_ms']:.1f} ms"
        )
        if "marginal_orch_ms" in r:
            what += f", marginal {r['marginal_orch_ms']:.1f} ms"
        if "noop" in r:
            what += f"; no-op re-run {r['noop']['wall_s']:.1f} s, {r['noop_flow_ms']:.1f} ms"
        value, target = f"{r['orch_ms']:.1f} ms", f"≤ {TARGET_ORCH_MS:g} ms"
        rows.append(["scale", what + ")", value, target, _shown(r, "verdict_orch")])
        rss = r["rss_mb"]
        what = (
            f"{label}: peak RSS of the flow process (server {rss.get('server', 0):.0f} MB, "
            f"largest worker {rss.get('worker', 0):.0f} MB; CPU s {r['cpu_s']}); "
            f"processing_results.yaml {r['results_yaml_bytes'] / 1e3:.0f} kB, run.yaml "
            f"{r['run_yaml_bytes'] / 1e3:.0f} kB; progress: {r['progress_lines']} lines, "
            f"first at {r['first_progress_s']} s, longest gap {r['max_progress_gap_s']} s"
        )
        value, target = f"{rss.get('flow', 0):.0f} MB", f"< {TARGET_RSS_MB:g} MB"
        rows.append(["scale", what, value, target, _shown(r, "verdict_rss")])
        if "api_after_s" in r:
            what = (
                f"{label}: dashboard queries, after the run (median of 3) {r['api_after_s']}, "
                f"slowest during it ({r['api_during_samples']} samples) {r['api_during_max_s']}; "
                f"{r['read_all_task_runs_n']} task runs read in {r['read_all_task_runs_s']} s; "
                f"all stored {r['task_runs_stored_after_s']} s after the command"
            )
            value, target = f"{r['slowest_api_s']:.2f} s", f"≤ {GUIDE_API_S:g} s (guide)"
            rows.append(["scale", what, value, target, _shown(r, "verdict_api")])
    return rows


def _shown(record: Record, key: str) -> str:
    return shown_verdict({**record, "verdict": record[key]})
