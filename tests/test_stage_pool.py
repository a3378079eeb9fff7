"""The stage pool: stages run in worker processes, a dead worker's pool is replaced."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pyama_lib.core.errors import FovOutOfRangeError
from pyama_lib.core.selection import Channels
from pyama_lib.io.store import FovStore
from pyama_lib.pipeline.faults import ENV_VAR
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.pool import (
    StagePool,
    WorkerDiedError,
    execute_in_pool,
    execute_stage,
    stage_pool,
    unguarded_main_call,
)
from pyama_lib.pipeline.stages import run_stage
from pyama_lib.synthetic.generator import make_synthetic


@pytest.fixture(scope="module")
def acq_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("acq")
    return make_synthetic(out, n_fovs=2, n_frames=6, size=96, n_cells=2, n_fl=1, seed=7).path


def _jobs(acq_path, out):
    return plan_jobs(str(acq_path), str(out), Channels(pc=0, fl=(1,))).jobs


def test_pool_runs_stages_like_the_calling_thread(acq_path, tmp_path):
    here, there = _jobs(acq_path, tmp_path / "here"), _jobs(acq_path, tmp_path / "pool")
    for stage in ("copy", "segment"):
        run_stage(stage, here[0])
    with stage_pool(2):
        results = [execute_stage(stage, there[0]) for stage in ("copy", "segment")]
    assert [r.written for r in results] == [["pc_ch_0", "fl_ch_1"], ["seg_ch_0"]]
    seg = [
        FovStore(tmp_path / d, here[0].base_name, 0).open_array("seg_ch_0")[:]
        for d in ("here", "pool")
    ]
    np.testing.assert_array_equal(seg[0], seg[1])
    # without an open pool, stages run where they are called
    assert execute_stage("copy", there[0]).was_skipped


def test_other_work_runs_in_the_workers_and_here_without_a_pool():
    from pyama_lib.analysis.fitting import fit_chunk_table
    from pyama_lib.synthetic.cells import maturation_traces

    t, y, _ = maturation_traces(6, 40, 1)
    here = fit_chunk_table(t, y, 10, "maturation")
    with stage_pool(2):
        pids = {execute_in_pool("probe", "a pid", os.getpid) for _ in range(4)}
        there = execute_in_pool("cells", "a fit", fit_chunk_table, t, y, 10, "maturation")
        with pytest.raises(ValueError, match="invalid literal"):
            execute_in_pool("probe", "a bad int", int, "x")
    assert os.getpid() not in pids
    assert execute_in_pool("probe", "a pid", os.getpid) == os.getpid()
    assert there["cell_id"].tolist() == list(range(10, 16))
    pd.testing.assert_frame_equal(there, here)  # the same numbers, bit for bit


def test_errors_from_a_worker_arrive_unchanged(acq_path, tmp_path):
    job = _jobs(acq_path, tmp_path)[0]
    bad = replace(job, fov=5)  # a FOV the file does not have
    with stage_pool(1), pytest.raises(FovOutOfRangeError, match="5"):
        execute_stage("copy", bad)


def test_a_dead_worker_is_replaced_and_its_stage_runs_again(acq_path, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "copy:1:crash")  # the worker copying FOV 1 exits (OOM-like)
    jobs = _jobs(acq_path, tmp_path)
    with stage_pool(1):
        assert execute_stage("copy", jobs[1]).written == ["pc_ch_0", "fl_ch_1"]
        assert (tmp_path / ".pyama-fault-copy-1-crash").exists()
        assert execute_stage("copy", jobs[0]).written == ["pc_ch_0", "fl_ch_1"]
    assert os.environ[ENV_VAR] == "copy:1:crash"  # the parent process itself never exited


def test_a_stage_that_kills_its_worker_fails_alone_and_spares_the_others(
    acq_path, tmp_path, monkeypatch
):
    # FOV 0 sleeps 30 s in its first attempt; FOV 1's copy kills its worker every time.
    monkeypatch.setenv(ENV_VAR, "copy:0:slow,copy:1:crash-always")
    jobs = _jobs(acq_path, tmp_path)
    with stage_pool(2) as pool, ThreadPoolExecutor(2) as threads:
        started = time.monotonic()
        innocent = threads.submit(pool.run, "copy", jobs[0])
        while not (tmp_path / ".pyama-fault-copy-0-slow").exists():  # FOV 0 is in a worker
            time.sleep(0.02)
        culprit = threads.submit(pool.run, "copy", jobs[1])
        # FOV 0's worker was killed with the pool; it ran again (alone) and did not sleep
        assert innocent.result().written == ["pc_ch_0", "fl_ch_1"]
        assert time.monotonic() - started < 20
        with pytest.raises(WorkerDiedError, match=r"fov_001.*copy on its own.*out of memory"):
            culprit.result()
        assert execute_stage("segment", jobs[0]).written == ["seg_ch_0"]  # the pool works on


def test_a_broken_pool_is_replaced_only_once_its_old_workers_are_gone(
    acq_path, tmp_path, monkeypatch
):
    """One writer per array: FOV 0's worker, terminated with the broken pool, takes 3 s to
    exit (it is finishing a write); the new pool must not start, and FOV 0's stage must not
    run again, before that worker is gone."""
    monkeypatch.setenv(ENV_VAR, "copy:0:stubborn:3,copy:1:crash")
    jobs = _jobs(acq_path, tmp_path)
    fired = tmp_path / ".pyama-fault-copy-0-stubborn"
    old_worker_alive_at_restart: list[bool] = []

    class WatchedPool(StagePool):
        def _start(self):
            if fired.exists():  # a replacement: is FOV 0's old worker still there?
                try:
                    os.kill(int(fired.read_text()), 0)
                    old_worker_alive_at_restart.append(True)
                except ProcessLookupError:
                    old_worker_alive_at_restart.append(False)
            return super()._start()

    pool = WatchedPool(2)
    try:
        with ThreadPoolExecutor(2) as threads:
            first = threads.submit(pool.run, "copy", jobs[0])
            while not fired.exists():  # FOV 0 is in a worker
                time.sleep(0.02)
            second = threads.submit(pool.run, "copy", jobs[1])
            assert first.result().written == ["pc_ch_0", "fl_ch_1"]
            assert second.result().written == ["pc_ch_0", "fl_ch_1"]
    finally:
        pool.close()
    assert old_worker_alive_at_restart == [False]


def test_unguarded_main_call_finds_the_script_line_outside_the_main_guard(tmp_path):
    script = tmp_path / "analysis.py"
    script.write_text(
        "from pyama_lib.pipeline.pool import unguarded_main_call\n"
        "def run():\n"
        "    return unguarded_main_call()\n"
        "print('top', run())\n"
        "if __name__ == '__main__':\n"
        "    print('guarded', run())\n"
        "if '__main__' == __name__:\n"
        "    print('reversed', unguarded_main_call())\n"
        "if __name__ != '__main__':\n"
        "    pass\n"
        "else:\n"
        "    print('else branch', run())\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # The else branch of a negated test is not recognised: a false alarm only costs speed.
    assert out == [
        f"top {script}:4",
        "guarded None",
        "reversed None",
        f"else branch {script}:12",
    ]
    # No main script (python -c, notebooks) and this test process (pytest's guarded entry)
    snippet = (
        "from pyama_lib.pipeline.pool import unguarded_main_call; print(unguarded_main_call())"
    )
    assert subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, check=True
    ).stdout.split() == ["None"]
    assert unguarded_main_call() is None
