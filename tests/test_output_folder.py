"""What an output folder holds: one acquisition, complete markers keyed on its identity, a
usable processing_results.yaml, and traces that say what they measured (no Prefect)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pyama_lib.core.errors import OutputDirError, ResultsFileError
from pyama_lib.core.selection import STAGES, Channels
from pyama_lib.io.identity import input_identity
from pyama_lib.io.results_yaml import RESULTS_FILE_NAME
from pyama_lib.io.store import FovStore
from pyama_lib.io.traces import (
    SOURCE_METADATA_KEY,
    read_partition_metadata,
    read_traces_csv,
    traces_csv_path,
)
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.run_record import RunRecord, write_run_yaml
from pyama_lib.pipeline.stages import run_stage
from pyama_lib.synthetic.generator import make_synthetic

CH = Channels(pc=0, fl=(1,))


def _acq(folder: Path, seed: int, base_name: str = "synthetic") -> Path:
    info = make_synthetic(
        folder,
        n_fovs=1,
        n_frames=32,
        size=128,
        n_cells=4,
        seed=seed,
        base_name=base_name,
        write_labels=False,
    )
    return info.path


def _process(acq: Path, out: Path, stages=STAGES) -> dict:
    """The stages of FOV 0, then the run's record, as the flow leaves them."""
    plan = plan_jobs(acq, out, CH)
    results = {s: run_stage(s, plan.jobs[0]) for s in stages}
    write_run_yaml(RunRecord(input=plan.input, status="completed"), out)
    return results


def _traces(out: Path) -> pd.DataFrame:
    return read_traces_csv(traces_csv_path(out, "synthetic", 0, 1))


def test_a_reexported_acquisition_is_copied_again_and_gives_its_own_traces(tmp_path):
    """Same name, same shape, new pixels (a re-export): every stage reruns from the copy, and
    the traces equal a fresh run on the new file, not the old file's."""
    acq = _acq(tmp_path / "acq", seed=1)
    out = tmp_path / "out"
    _process(acq, out)
    old = _traces(out)
    _acq(tmp_path / "acq", seed=2)  # replaced in place, same name and shape

    again = _process(acq, out)
    assert all(r.written for r in again.values())  # copy included: nothing stale is kept
    fresh = tmp_path / "fresh"
    _process(acq, fresh)
    pd.testing.assert_frame_equal(_traces(out), _traces(fresh))
    assert not _traces(out).equals(old)


def test_the_copy_marker_names_the_input_and_the_code_version(tmp_path):
    acq = _acq(tmp_path / "acq", seed=1)
    out = tmp_path / "out"
    _process(acq, out, stages=["copy"])
    marker = FovStore(out, "synthetic", 0).completion("pc_ch_0")["params"]
    assert set(marker) == {"params", "version", "input", "inputs"}
    import pyama_lib

    assert marker["version"] == pyama_lib.__version__
    assert marker["input"] == plan_jobs(acq, out, CH).jobs[0].input_key


def test_a_second_acquisition_is_refused_in_a_folder_holding_another(tmp_path):
    a = _acq(tmp_path / "a", seed=1)
    b = _acq(tmp_path / "b", seed=2, base_name="other")
    out = tmp_path / "out"
    _process(a, out)
    before = _traces(out)
    with pytest.raises(OutputDirError, match=r"holds the results of another acquisition") as err:
        plan_jobs(b, out, CH)
    message = str(err.value)
    assert str(a) in message and "run.yaml" in message and str(b) in message
    assert "its own output folder" in message
    pd.testing.assert_frame_equal(_traces(out), before)  # A's traces untouched


def test_same_name_elsewhere_with_other_content_is_another_acquisition(tmp_path):
    a = _acq(tmp_path / "day1", seed=1)
    b = _acq(tmp_path / "day2", seed=2)  # also synthetic.ome.tif
    out = tmp_path / "out"
    _process(a, out)
    with pytest.raises(OutputDirError, match="another acquisition"):
        plan_jobs(b, out, CH)


def test_a_moved_acquisition_still_owns_its_folder(tmp_path):
    a = _acq(tmp_path / "acq", seed=1)
    out = tmp_path / "out"
    _process(a, out)
    moved = tmp_path / "moved" / a.name
    moved.parent.mkdir()
    shutil.move(a, moved)
    again = _process(moved, out)
    assert all(r.was_skipped for r in again.values())  # same content: nothing redone


def test_stores_of_another_acquisition_refuse_even_without_a_run_record(tmp_path):
    a = _acq(tmp_path / "a", seed=1, base_name="first")
    out = tmp_path / "out"
    run_stage("copy", plan_jobs(a, out, CH).jobs[0])
    assert not (out / "run.yaml").exists()
    b = _acq(tmp_path / "b", seed=2, base_name="second")
    with pytest.raises(OutputDirError, match="acquisition\\(s\\) named first"):
        plan_jobs(b, out, CH)


def test_a_corrupt_results_file_fails_planning_before_any_work(tmp_path):
    acq = _acq(tmp_path / "acq", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / RESULTS_FILE_NAME).write_text("results_paths: [unclosed\n")
    with pytest.raises(ResultsFileError, match=RESULTS_FILE_NAME):
        plan_jobs(acq, out, CH)
    assert sorted(p.name for p in out.iterdir()) == [RESULTS_FILE_NAME]


def test_raw_fallback_is_warned_and_recorded_in_the_traces(tmp_path):
    acq = _acq(tmp_path / "acq", seed=1)
    out = tmp_path / "out"
    results = _process(acq, out, stages=["copy", "segment", "track", "extract"])
    extract = results["extract"]
    assert extract.info["sources"] == {1: "fl_ch_1"}
    (warning,) = extract.warnings
    assert "fl_corrected_ch_1 does not exist" in warning and "raw fluorescence" in warning
    dataset = out / "traces.parquet"
    assert read_partition_metadata(dataset, 0, 1) == {SOURCE_METADATA_KEY: "fl_ch_1"}

    # Once correction has run, extraction measures the corrected stack and says so.
    plan = plan_jobs(acq, out, CH)
    run_stage("correct", plan.jobs[0])
    redone = run_stage("extract", plan.jobs[0])
    assert redone.written and not redone.warnings
    assert redone.info["sources"] == {1: "fl_corrected_ch_1"}
    assert read_partition_metadata(dataset, 0, 1)[SOURCE_METADATA_KEY] == "fl_corrected_ch_1"


def test_input_identity_recorded_is_the_plans(tmp_path):
    acq = _acq(tmp_path / "acq", seed=1)
    plan = plan_jobs(acq, tmp_path / "out", CH)
    assert plan.input == input_identity(acq)
    assert yaml.safe_load(yaml.safe_dump(plan.describe()))["channels"] == {"pc": 0, "fl": [1]}


def test_a_stale_corrected_stack_is_not_measured(tmp_path):
    """Re-exported in place, then processed without the correct stage (as its own error
    message suggests): extraction must not measure the old file's corrected pixels."""
    acq = _acq(tmp_path / "acq", seed=1)
    out = tmp_path / "out"
    _process(acq, out)
    _acq(tmp_path / "acq", seed=2)
    results = _process(acq, out, stages=["copy", "segment", "track", "extract"])
    assert results["extract"].info["sources"] == {1: "fl_ch_1"}
    assert "fl_corrected_ch_1 is stale" in results["extract"].warnings[0]
    fresh = tmp_path / "fresh"
    _process(acq, fresh, stages=["copy", "segment", "track", "extract"])
    pd.testing.assert_frame_equal(_traces(out), _traces(fresh))


def test_an_owner_recorded_on_windows_or_by_hand_is_understood(tmp_path):
    acq = _acq(tmp_path / "acq", seed=1)
    out = tmp_path / "out"
    _process(acq, out)
    identity = input_identity(acq)
    # The same file, recorded by a run on a Windows PC that mounts the share as Z:
    windows = {**identity, "path": "Z:\\lab\\acq\\synthetic.ome.tif"}
    (out / "run.yaml").unlink()
    write_run_yaml(RunRecord(input=windows, status="completed"), out)
    plan_jobs(acq, out, CH)  # same name and content: accepted
    # An entry without size/fingerprint (older or hand-edited): unknown, the stores decide
    write_run_yaml(RunRecord(input={"path": "/elsewhere/other.nd2"}, status="completed"), out)
    plan_jobs(acq, out, CH)


def test_channels_contradicting_the_folder_are_refused_before_any_work(tmp_path):
    acq = _acq(tmp_path / "acq", seed=1)
    out = tmp_path / "out"
    plan = plan_jobs(acq, out, CH)
    from pyama_lib.io.results_yaml import update_results_file
    from pyama_lib.pipeline.stages import results_entries

    run_stage("copy", plan.jobs[0])
    update_results_file(results_entries(plan, [0]))
    with pytest.raises(ResultsFileError, match=r"processed with phase contrast 0 and fluor"):
        plan_jobs(acq, out, Channels(pc=1, fl=(0,)))
    # Another phase-contrast channel alone: the folder's FOVs were segmented on channel 0.
    with pytest.raises(ResultsFileError, match=r"phase contrast 2 is not the folder's 0"):
        plan_jobs(acq, out, Channels(pc=2, fl=(1,)))


def test_a_negative_fov_bound_other_than_minus_one_is_refused(tmp_path):
    from pyama_lib.core.errors import FovOutOfRangeError

    acq = _acq(tmp_path / "acq", seed=1)
    with pytest.raises(FovOutOfRangeError, match="fov_start must be a FOV index or -1"):
        plan_jobs(acq, tmp_path / "out", CH, fov_start=-5)


def test_a_relative_output_folder_is_recorded_absolute(tmp_path, monkeypatch):
    """`pyama process x -o out` from any working folder: the results file must name files
    that exist (it recorded out/out/... once)."""
    from pyama_lib.io.results_yaml import load_results, update_results_file
    from pyama_lib.pipeline.stages import results_entries

    acq = _acq(tmp_path / "acq", seed=1)
    monkeypatch.chdir(tmp_path)
    plan = plan_jobs(acq, "out", CH)
    assert Path(plan.output_dir) == tmp_path / "out"
    for s in STAGES:
        run_stage(s, plan.jobs[0])
    update_results_file(results_entries(plan, [0]))
    monkeypatch.chdir(tmp_path / "acq")  # read from elsewhere
    entry = load_results(tmp_path / "out").results_paths[0]
    assert all(p.exists() for _, p in entry.traces_csv) and entry.seg[1].exists()
