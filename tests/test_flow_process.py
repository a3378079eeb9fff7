"""The processing flow through real Prefect (temporary API), on a real synthetic acquisition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.cli.main import main as cli_main
from flows.process import process_acquisition
from flows.support.reporting import FovsFailedError
from pyama_lib.core.errors import PyamaError, RunLockedError
from pyama_lib.io import open_acquisition
from pyama_lib.io.lock import OutputLock
from pyama_lib.io.results_yaml import load_results
from pyama_lib.io.store import FovStore
from pyama_lib.io.traces import read_traces_csv, read_traces_parquet, traces_csv_path
from pyama_lib.pipeline.run_record import load_run_yaml
from pyama_lib.processing.background import correct_frame
from pyama_lib.processing.extraction import extract_traces
from pyama_lib.processing.segmentation import segment_frame
from pyama_lib.processing.tracking import track_masks
from pyama_lib.synthetic.generator import make_synthetic
from tests.conftest import assert_group_exits

REPO = Path(__file__).resolve().parents[1]
FL = [1, 2]
ARRAYS = ["pc_ch_0", "fl_ch_1", "fl_ch_2", "seg_ch_0", "seg_labeled_ch_0"] + [
    "fl_corrected_ch_1",
    "fl_corrected_ch_2",
]


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("acq")
    info = make_synthetic(out, n_fovs=3, n_frames=32, size=128, n_cells=4, seed=3, n_fl=2)
    return info.path


@pytest.fixture(scope="module")
def reference_run(prefect_api, acquisition, tmp_path_factory):
    """One uninterrupted run, 2 thread workers (the process runner is exercised by the crash
    test: each process pool costs seconds of worker start-up)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = process_acquisition(
        str(acquisition), str(out), pc=0, fl=FL, n_workers=2, runner="thread"
    )
    return out, summary


def _all_traces(out: Path, base: str) -> dict[tuple[int, int], pd.DataFrame]:
    return {
        (fov, ch): read_traces_csv(traces_csv_path(out, base, fov, ch))
        for fov in range(3)
        for ch in FL
    }


def test_every_output_exists_and_agrees(reference_run, acquisition):
    out, summary = reference_run
    base = summary.base_name
    assert summary.fovs_done == [0, 1, 2] and not summary.fovs_failed
    for fov in range(3):
        store = FovStore(out, base, fov)
        assert all(store.is_complete(name) for name in ARRAYS), store.array_names()
    csv = pd.concat(
        [df.assign(channel=ch) for (_, ch), df in _all_traces(out, base).items()]
    ).sort_values(["fov", "channel", "frame", "cell"], ignore_index=True)
    parquet = read_traces_parquet(out / "traces.parquet").sort_values(
        ["fov", "channel", "frame", "cell"], ignore_index=True
    )
    assert len(csv) > 0 and len(csv) == len(parquet)
    assert sorted(csv.columns) == sorted(parquet.columns)
    pd.testing.assert_frame_equal(csv[parquet.columns], parquet, check_dtype=False, atol=1e-6)
    # every cell of the table is in the summary
    for f in summary.fovs:
        for ch in FL:
            assert f.cells[ch] == csv[(csv.fov == f.fov) & (csv.channel == ch)].cell.nunique()
    results = load_results(out)
    assert sorted(results.results_paths) == [0, 1, 2]
    for fov, entry in results.results_paths.items():
        paths = [entry.pc[1], entry.seg[1], entry.seg_labeled[1]]
        paths += [p for _, p in entry.fl + entry.fl_corrected + entry.traces_csv]
        assert len(paths) == 3 + 3 * len(FL)
        assert all(Path(p).exists() and f"fov_{fov:03d}" in str(p) for p in paths)
        assert [c for c, _ in entry.traces_csv] == FL
        assert [c for c, _ in entry.fl_corrected] == FL
    runs = load_run_yaml(out)
    assert runs[-1].status == "completed" and runs[-1].input["size"] == acquisition.stat().st_size
    corrected = {ch: f"fl_corrected_ch_{ch}" for ch in FL}
    assert runs[-1].summary["fl_sources"] == {fov: corrected for fov in range(3)}


def test_run_publishes_artifacts(reference_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    # Keys name the acquisition, so the dashboard's artifact list tells acquisitions apart.
    keys = ["synthetic-process-progress", "synthetic-process-summary", "synthetic-process-outputs"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)),
            sort=ArtifactSort.CREATED_DESC,
        )
    by_key = {}
    for artifact in found:  # newest first: the reference run's, which ran last
        by_key.setdefault(artifact.key, artifact)
    assert set(by_key) == set(keys)
    progress = by_key["synthetic-process-progress"]
    assert progress.type == "progress" and progress.data == 100
    assert by_key["synthetic-process-summary"].type == "table"
    assert str(reference_run[0]) in by_key["synthetic-process-outputs"].data


@pytest.mark.parametrize("fov", [0, 1, 2])
def test_traces_equal_library_stages_called_directly(reference_run, acquisition, fov):
    out, summary = reference_run
    with open_acquisition(acquisition) as acq:
        pc = [acq.frame(fov, 0, t) for t in range(acq.n_frames)]
        fl = {ch: [acq.frame(fov, ch, t) for t in range(acq.n_frames)] for ch in FL}
        times = acq.frame_times(fov)
    seg = [segment_frame(f) for f in pc]
    labels = track_masks(np.stack(seg))
    for ch in FL:
        corrected = [correct_frame(f, s) for f, s in zip(fl[ch], seg, strict=True)]
        expected = extract_traces(labels, corrected, times, fov)
        got = read_traces_csv(traces_csv_path(out, summary.base_name, fov, ch))
        assert len(expected) > 0
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, atol=5e-7)


def test_rerun_skips_everything(reference_run, acquisition):
    """...and removes the temp files a killed run left (they are never taken for results)."""
    out, _ = reference_run
    csv = next((out / "fov_001").glob("*_traces_ch_1.csv"))
    leftovers = [
        csv.with_name(f".{csv.name}.{'a' * 32}.tmp"),
        out / "traces.parquet" / "fov=1" / "channel=1" / f".part-0.parquet.{'b' * 32}.tmp",
        out / f".processing_results.yaml.{'c' * 32}.tmp",
    ]
    kept = out / ".notes.tmp"  # not a temp file of ours
    for path in [*leftovers, kept]:
        path.write_text("half written")
        os.utime(path, (time.time() - 60, time.time() - 60))
    summary = process_acquisition(str(acquisition), str(out), fl=FL, runner="thread")
    assert summary.fovs_skipped == [0, 1, 2]
    assert set(load_run_yaml(out)[-1].timings[0].values()) == {"skipped"}
    assert not any(p.exists() for p in leftovers) and kept.exists()
    kept.unlink()


def test_tracks_tables_follow_the_traces_and_a_deleted_one_is_redone(reference_run, acquisition):
    from pyama_lib.io.tracks import tracks_csv_path

    out, summary = reference_run
    for (fov, ch), traces in _all_traces(out, summary.base_name).items():
        path = tracks_csv_path(out, summary.base_name, fov, ch)
        tracks = pd.read_csv(path)
        pd.testing.assert_frame_equal(tracks, pd.read_parquet(path.with_suffix(".parquet")))
        assert list(tracks.columns[:4]) == ["track_id", "t", "y", "x"]  # napari's order
        expected = traces.sort_values(["cell", "frame"])[["cell", "frame", "position_y"]]
        assert tracks["track_id"].tolist() == expected["cell"].tolist()
        assert tracks["t"].tolist() == expected["frame"].tolist()
        assert tracks["y"].tolist() == expected["position_y"].tolist()
        assert len(tracks) == len(traces) and tracks["intensity_total"].notna().all()
    gone = tracks_csv_path(out, summary.base_name, 1, FL[0]).with_suffix(".parquet")
    gone.unlink()
    process_acquisition(str(acquisition), str(out), fl=FL, runner="thread")
    timings = load_run_yaml(out)[-1].timings
    assert gone.is_file() and timings[1]["extract"] != "skipped"
    assert timings[0]["extract"] == timings[2]["extract"] == "skipped"


def test_injected_oserror_is_retried(prefect_api, acquisition, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("PYAMA_FAULT", "segment:0")
    summary = process_acquisition(
        str(acquisition), str(tmp_path / "out"), fl=[1], fovs="0", runner="thread"
    )
    assert summary.fovs_done == [0]
    assert (tmp_path / "out" / ".pyama-fault-segment-0-oserror").exists()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    segment = [r for r in runs if r.name == "segment fov_000" and r.run_count == 2]
    assert segment and segment[0].state.is_completed()


def test_crashed_worker_process_is_recovered(prefect_api, reference_run, acquisition, tmp_path):
    """Default runner (stage pool): a worker killed mid-task breaks the pool; it is replaced,
    the stages it broke run again, the run finishes with the same traces as an uninterrupted
    run, and the command exits (Prefect's process pool once hung at exit here)."""
    out = tmp_path / "out"
    proc = _run_cli(
        str(acquisition),
        "-o",
        str(out),
        "--fl",
        "1",
        "--fovs",
        "0-1",
        env={"PYAMA_FAULT": "segment:1:crash"},
    )
    try:
        _, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:  # hung: kill it and its workers, then fail below
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr
    assert (out / ".pyama-fault-segment-1-crash").exists()
    assert load_run_yaml(out)[-1].status == "completed"
    ref_out, summary = reference_run
    for fov in (0, 1):
        pd.testing.assert_frame_equal(
            read_traces_csv(traces_csv_path(out, summary.base_name, fov, 1)),
            read_traces_csv(traces_csv_path(ref_out, summary.base_name, fov, 1)),
        )


def test_a_fov_that_kills_its_worker_fails_alone(
    prefect_api, reference_run, acquisition, tmp_path, monkeypatch
):
    """FOV 1's segment kills its worker every time (say, a FOV too large for memory): FOV 1
    fails with a clear message and no retries; FOV 0, broken with the pool or not, finishes.
    With ``retries=0`` even an I/O error (retried by default, see
    test_injected_oserror_is_retried) is not retried: one attempt, the FOV fails."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterName,
    )

    def task_runs(out: Path, name: str) -> list:
        """The task runs called ``name`` of the flow run that wrote out/run.yaml last."""
        flow_run_id = UUID(str(load_run_yaml(out)[-1].settings["flow_run_id"]))
        with get_client(sync_client=True) as client:
            return client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]),
                    name=TaskRunFilterName(any_=[name]),
                )
            )

    monkeypatch.setenv("PYAMA_FAULT", "segment:1:crash-always")
    out = tmp_path / "out"
    with pytest.raises(PyamaError, match=r"fov_001 in segment.*most likely out of memory"):
        process_acquisition(str(acquisition), str(out), fl=[1], fovs="0-1")
    assert load_run_yaml(out)[-1].status == "failed"
    assert sorted(load_results(out).results_paths) == [0]
    ref_out, ref = reference_run
    pd.testing.assert_frame_equal(
        read_traces_csv(traces_csv_path(out, ref.base_name, 0, 1)),
        read_traces_csv(traces_csv_path(ref_out, ref.base_name, 0, 1)),
    )
    assert not traces_csv_path(out, ref.base_name, 1, 1).exists()
    # No retries: the tasks' default is 2, but a worker that died alone is not retried
    # (a retried one would show run_count 3 here).
    (segment_1,) = task_runs(out, "segment fov_001")
    assert segment_1.run_count == 1 and segment_1.state.is_failed()
    assert not task_runs(out, "correct fov_001")  # the failed FOV's later stages never ran
    (segment_0,) = task_runs(out, "segment fov_000")
    assert segment_0.state.is_completed()

    # Retries off: an OSError once (which the default retries would get past) fails the FOV.
    monkeypatch.setenv("PYAMA_FAULT", "segment:1")
    no_retries = tmp_path / "no-retries"
    with pytest.raises(FovsFailedError, match=r"fov_001 in segment.*injected fault"):
        process_acquisition(
            str(acquisition), str(no_retries), fl=[1], fovs="1", runner="thread", retries=0
        )
    assert (no_retries / ".pyama-fault-segment-1-oserror").exists()
    record = load_run_yaml(no_retries)[-1]
    assert record.status == "failed" and record.settings["retries"] == 0
    (attempt,) = task_runs(no_retries, "segment fov_001")
    assert attempt.run_count == 1 and attempt.state.is_failed()


def test_second_run_on_locked_output_is_refused(prefect_api, acquisition, tmp_path):
    out = tmp_path / "out"
    with OutputLock(out), pytest.raises(RunLockedError, match=str(os.getpid())):
        process_acquisition(str(acquisition), str(out), fl=[1], fovs="0", runner="thread")
    assert not FovStore(out, "synthetic", 0).array_names()


def test_a_reexport_with_fewer_fovs_leaves_none_of_the_old_ones_in_the_results(
    prefect_api, tmp_path
):
    """3 FOVs processed; the same path re-exported with 2 FOVs of new content and processed:
    the old file's FOVs are moved aside (0 and 1 are then computed afresh), and its FOV 2 is
    not listed, not in the Parquet dataset, not merged."""
    from pyama_lib.analysis.merge import merge_samples
    from pyama_lib.io.samples import Sample

    def export(n_fovs: int, seed: int) -> Path:
        info = make_synthetic(
            tmp_path / "acq", n_fovs=n_fovs, n_frames=8, size=128, n_cells=4, seed=seed
        )
        return info.path

    out = tmp_path / "out"
    short = {"extraction": {"min_frames": 2}}  # 8 frames: PyAMA's 30 would keep no cell
    process_acquisition(str(export(3, seed=1)), str(out), fl=[1], runner="thread", params=short)
    acq = export(2, seed=2)
    summary = process_acquisition(str(acq), str(out), fl=[1], runner="thread", params=short)
    assert summary.fovs_done == [0, 1]
    assert sorted(load_results(out).results_paths) == [0, 1]
    assert set(read_traces_parquet(out / "traces.parquet").fov) == {0, 1}
    (aside,) = (out / "superseded").iterdir()
    assert sorted(p.name for p in aside.iterdir()) == [
        "fov_000",
        "fov_001",
        "fov_002",
        "traces.parquet",
    ]
    assert not (out / "fov_002").exists()
    warning = load_run_yaml(out)[-1].warnings[-1]
    assert "FOV(s) [0, 1, 2] were computed from another version" in warning
    assert str(aside) in warning
    merged = merge_samples(out, [Sample("all", [0, 1])], tmp_path / "merged")
    assert set(pd.read_parquet(merged.parquet).fov) == {0, 1}
    with pytest.raises(PyamaError, match="2"):
        merge_samples(out, [Sample("all", [0, 1, 2])], tmp_path / "merged")


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    # The session's test API (held in Prefect settings, not the environment): the subprocess
    # would otherwise start a temporary server of its own.
    api = {"PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "process", *args],
        cwd=REPO,
        env={**os.environ, **api, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: SIGKILL reaches the workers too
    )


def _run_cli_until_track_1_stalls(out: Path, *args: str) -> subprocess.Popen:
    """Start ``pyama process`` with FOV 1's track stage stalled (30 s), return once it is."""
    proc = _run_cli(*args, env={"PYAMA_FAULT": "track:1:slow"})
    fired = out / ".pyama-fault-track-1-slow"
    deadline = time.monotonic() + 120
    while not fired.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fired.exists(), proc.communicate()[1] if proc.poll() is not None else "timeout"
    return proc


def test_sigkill_of_the_flow_process_leaves_no_worker_behind(
    prefect_api, reference_run, acquisition, tmp_path
):
    """The OOM killer takes the flow's process only (not its process group): the stage workers
    and their forkserver exit with it instead of writing on, and a re-run resumes."""
    out = tmp_path / "out"
    args = [str(acquisition), "-o", str(out), "--fl", "1", "--fovs", "0-1"]
    proc = _run_cli_until_track_1_stalls(out, *args)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The record was written when the run started: a killed run still says what it was doing.
    (killed,) = load_run_yaml(out)
    assert killed.status == "running" and killed.finished is None
    assert killed.parameters["fovs"] == [0, 1] and killed.input["path"] == str(acquisition)
    assert_group_exits(proc.pid, "worker processes of the killed run")
    again = _run_cli(*args)
    _, stderr = again.communicate(timeout=180)
    assert again.returncode == 0, stderr
    ref_out, ref = reference_run
    for fov in (0, 1):
        pd.testing.assert_frame_equal(
            read_traces_csv(traces_csv_path(out, ref.base_name, fov, 1)),
            read_traces_csv(traces_csv_path(ref_out, ref.base_name, fov, 1)),
        )


def test_sigkill_then_rerun_resumes(prefect_api, reference_run, acquisition, tmp_path):
    out = tmp_path / "out"
    args = [str(acquisition), "-o", str(out), "--fl", "1", "--fl", "2", "--batch-size", "1"]
    args += ["--runner", "thread"]
    proc = _run_cli_until_track_1_stalls(out, *args)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / ".pyama.lock").exists()  # left behind by the killed run

    again = _run_cli(*args)
    stdout, stderr = again.communicate(timeout=180)
    assert again.returncode == 0, stderr
    timings = load_run_yaml(out)[-1].timings
    assert set(timings[0].values()) == {"skipped"}  # FOV 0 had finished
    assert [timings[1][s] for s in ("copy", "segment", "correct")] == ["skipped"] * 3
    assert all(isinstance(timings[1][s], float) for s in ("track", "extract"))  # redone
    assert all(isinstance(v, float) for v in timings[2].values())  # never started
    ref_out, summary = reference_run
    for key, df in _all_traces(out, summary.base_name).items():
        pd.testing.assert_frame_equal(df, _all_traces(ref_out, summary.base_name)[key])


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing", "no such file"),
        ("corrupt", "synthetic-bad.ome.tif"),
        ("fovs", "outside the acquisition"),
        ("channel", "channel 7 is out of range"),
        ("unwritable", "afile"),
        ("batch", "batch_size must be at least 1, got 0"),
    ],
)
def test_bad_input_exits_nonzero_with_clear_message(
    prefect_api, acquisition, tmp_path, capsys, case, needle
):
    src, out = str(acquisition), tmp_path / "out"
    extra: list[str] = []
    if case == "missing":
        src = str(tmp_path / "nope.nd2")
    elif case == "corrupt":
        bad = tmp_path / "synthetic-bad.ome.tif"
        bad.write_bytes(acquisition.read_bytes()[:5000])
        src = str(bad)
    elif case == "fovs":
        extra = ["--fovs", "2-9"]
    elif case == "channel":
        extra = ["--fl", "7"]
    elif case == "batch":
        extra = ["--batch-size", "0"]
    else:
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    code = cli_main(["process", src, "-o", str(out), "--runner", "thread", *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("zarr.json"))


def test_failed_fov_is_reported_and_not_recorded(prefect_api, nd2_dir, tmp_path, capsys):
    """cluster.nd2 (31×38 px): masked cells leave no background pixel, so background
    correction fails for its FOV; the command prints the summary table, says which FOV, stage
    and way out, and exits 3 (partly failed, not bad input) without recording the FOV as
    processed."""
    out = tmp_path / "out"
    code = cli_main(
        ["process", str(nd2_dir / "cluster.nd2"), "-o", str(out), "--fl", "1", "--runner", "thread"]
    )
    stdout, err = capsys.readouterr()
    assert code == 3
    assert stdout.splitlines()[2].split() == ["0", "-", "failed", "0", "0"]
    assert "0 done, 0 skipped, 1 failed in" in stdout
    assert f"record:  {out / 'run.yaml'}" in stdout
    assert "1 FOV(s) failed: fov_000 in correct: InputDataError" in err
    assert "--stages copy,segment,track,extract" in err
    assert load_results(out).results_paths == {}
    assert load_run_yaml(out)[-1].status == "failed"
    assert not FovStore(out, "cluster", 0).is_complete("fl_corrected_ch_1")


def test_failed_fov_error_carries_the_summary_out_of_the_flow(prefect_api, nd2_dir, tmp_path):
    """From Python, the flow's failure reaches the caller as FovsFailedError with the summary,
    and run.yaml names the (failed) Prefect flow run it came from."""
    from prefect.client.orchestration import get_client

    out = tmp_path / "out"
    with pytest.raises(FovsFailedError, match="fov_000 in correct") as info:
        process_acquisition(str(nd2_dir / "cluster.nd2"), str(out), fl=[1], runner="thread")
    summary = info.value.summary
    assert summary.fovs_failed == [0] and summary.fovs_done == []
    assert summary.errors[0].startswith("correct: InputDataError: ")
    assert summary.run_yaml == str(out / "run.yaml")
    record = load_run_yaml(out)[-1]
    assert record.status == "failed" and record.summary["errors"] == summary.errors
    assert list(record.timings[0]) == ["copy", "segment"]  # done before correct failed
    assert record.settings["runner"] == "thread" and record.settings["n_workers"] == 2
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(record.settings["flow_run_id"])
    assert flow_run.state.is_failed() and flow_run.parameters["output_dir"] == str(out)


def test_cli_stages_with_spaces(prefect_api, acquisition, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["process", str(acquisition), "-o", str(out), "--fl", "1", "--fovs", "0"]
    code = cli_main([*args, "--runner", "thread", "--stages", " segment ,copy,, "])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    record = load_run_yaml(out)[-1]
    assert record.parameters["stages"] == ["copy", "segment"]  # pipeline order
    assert list(record.timings[0]) == ["copy", "segment"]
    assert FovStore(out, "synthetic", 0).is_complete("seg_ch_0")
    assert not FovStore(out, "synthetic", 0).is_complete("seg_labeled_ch_0")
    assert "1 done, 0 skipped, 0 failed" in stdout
