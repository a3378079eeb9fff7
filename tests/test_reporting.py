"""Run-level reporting (flows.support.reporting) on real stage results, outside any flow run."""

from __future__ import annotations

import pickle
import time
from datetime import datetime
from pathlib import Path

import pytest

from flows.support.reporting import FovsFailedError, failed_fov, start_run_record, write_run_outputs
from pyama_lib.core.errors import InputDataError
from pyama_lib.core.selection import STAGES, Channels
from pyama_lib.io.plain import iso_time
from pyama_lib.io.results_yaml import load_results
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.run_record import load_run_yaml
from pyama_lib.pipeline.stages import run_stage
from pyama_lib.synthetic.generator import make_synthetic

SETTINGS = {
    "runner": "process",
    "n_workers": 2,
    "batch_size": 1,
    "retries": 0,
    "reader_options": {"times": "measured"},
}


@pytest.fixture(scope="module")
def acq(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("acq")
    return make_synthetic(out, n_fovs=2, n_frames=32, size=128, n_cells=4, n_fl=1, seed=5).path


def test_failed_fov_keeps_completed_timings_and_the_record_its_start(acq, tmp_path):
    """FOV 0 completes; FOV 1 fails in correct after copy and segment. run.yaml keeps the
    timings of FOV 1's two completed stages, says why it failed, and dates the run from its
    start, not from when the record was written."""
    started = time.time() - 90  # the run began 90 s before its outputs are written
    plan = plan_jobs(acq, tmp_path, Channels(pc=0, fl=[1]))
    ok = [run_stage(s, plan.jobs[0]).as_dict() for s in STAGES]
    completed = [run_stage(s, plan.jobs[1]).as_dict() for s in ("copy", "segment")]
    # A dilation wider than the frame masks every pixel: correct fails on its data, for real.
    masked = plan_jobs(
        acq,
        tmp_path,
        Channels(pc=0, fl=[1]),
        fovs=[1],
        params={"background": {"dilation_size": 301}},
    ).jobs[0]
    with pytest.raises(InputDataError) as failure:
        run_stage("correct", masked)
    results = {0: ok, 1: failed_fov("correct", failure.value, completed)}

    record = start_run_record(plan, list(STAGES), started, SETTINGS)
    (running,) = load_run_yaml(tmp_path)  # the entry exists while the run is in progress
    assert running.status == "running" and running.finished is None
    assert running.input == plan.input and running.parameters["fovs"] == [0, 1]
    summary = write_run_outputs(plan, results, record, started=started)

    assert summary.fovs_done == [0] and summary.fovs_failed == [1]
    assert summary.wall_seconds >= 90
    (record,) = load_run_yaml(tmp_path)
    assert record.status == "failed"
    assert record.started == iso_time(started)
    finished, begun = (datetime.fromisoformat(t) for t in (record.finished, record.started))
    assert 89 <= (finished - begun).total_seconds() < 120
    assert record.settings == SETTINGS  # no flow_run_id: this is not a Prefect flow run
    assert record.timings[1] == {r["stage"]: round(r["seconds"], 3) for r in completed}
    assert list(record.timings[1]) == ["copy", "segment"]
    assert list(record.timings[0]) == list(STAGES)
    assert record.summary["errors"] == {1: summary.errors[1]}
    assert summary.errors[1].startswith("correct: InputDataError: ")
    assert "no background pixel" in summary.errors[1]
    assert sorted(load_results(tmp_path).results_paths) == [0]  # the failed FOV is not listed


def test_failed_fovs_raise_an_error_carrying_the_summary(acq, tmp_path):
    plan = plan_jobs(acq, tmp_path, Channels(pc=0, fl=[1]), fovs=[0])
    results = {0: failed_fov("segment", OSError("disk full"))}
    started = time.time()
    summary = write_run_outputs(
        plan, results, start_run_record(plan, list(STAGES), started), started
    )
    with pytest.raises(FovsFailedError, match=r"1 FOV\(s\) failed: fov_000 in segment") as info:
        summary.raise_if_failed()
    assert info.value.summary is summary
    assert load_run_yaml(tmp_path)[-1].timings == {}  # nothing completed, nothing timed
    # Errors cross processes pickled (a persisted state, a remote runner): the summary too.
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert copy.summary.fovs_failed == [0] and copy.summary.run_yaml == summary.run_yaml


def test_assumed_frame_times_are_said_in_run_yaml_and_by_pyama_info(tmp_path, capsys):
    import numpy as np
    import tifffile

    from flows.cli.main import main as cli_main

    path = tmp_path / "bare.ome.tif"
    frames = np.random.default_rng(0).integers(0, 4000, (3, 2, 32, 32), dtype=np.uint16)
    tifffile.imwrite(path, frames, metadata={"axes": "TCYX"})
    plan = plan_jobs(path, tmp_path / "out", Channels(pc=0, fl=[1]))
    start_run_record(plan, list(STAGES), time.time(), SETTINGS)
    (record,) = load_run_yaml(tmp_path / "out")
    assert record.warnings == [
        f"{path}: the file records no frame times (no OME DeltaT or TimeIncrement); frame t is "
        "taken at t x 1 min (PyAMA's fallback). Give the real interval with --interval MINUTES "
        "(pyama process, pyama info)"
    ]
    assert cli_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "times:    0-2 min, every 1 min (FOV 0)" in out
    assert "note:     the file records no frame times" in out
    assert cli_main(["info", str(path), "--interval", "10"]) == 0
    out = capsys.readouterr().out
    assert "times:    0-20 min, every 10 min (FOV 0)" in out
    assert "frame t is taken at t x 10 min, the interval given" in out


def test_each_fov_names_the_run_whose_parameters_made_it(acq, tmp_path):
    """FOV 0 processed with PyAMA's parameters, FOV 1 later with others: the results file says
    which run made each FOV, and that run's run.yaml entry has its parameters."""
    import yaml

    made = {}
    for fov, params in ((0, None), (1, {"tracking": {"max_gap": 2}})):
        plan = plan_jobs(acq, tmp_path, Channels(pc=0, fl=[1]), fovs=[fov], params=params)
        results = {fov: [run_stage(s, plan.jobs[0]).as_dict() for s in STAGES]}
        record = start_run_record(plan, list(STAGES), time.time(), SETTINGS)
        write_run_outputs(plan, results, record, started=time.time())
        made[fov] = record.run_id
    written = yaml.safe_load((tmp_path / "processing_results.yaml").read_text())
    assert written["run_of_fov"] == made
    runs = {r.run_id: r for r in load_run_yaml(tmp_path)}
    assert runs[made[0]].parameters["params"]["tracking"]["max_gap"] != 2
    assert runs[made[1]].parameters["params"]["tracking"]["max_gap"] == 2
    assert sorted(load_results(tmp_path).results_paths) == [0, 1]  # PyAMA's part unchanged
