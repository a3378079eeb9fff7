"""processing_results.yaml: PyAMA's layout, moved-folder re-rooting, merging, errors."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pyama_lib.core.errors import InputDataError, ResultsFileError
from pyama_lib.core.selection import Channels
from pyama_lib.io.results_yaml import (
    RESULTS_FILE_NAME,
    FovResults,
    ProcessingResults,
    load_results,
    merge_results,
    save_results,
    update_results_file,
)


def _run(out: Path, fovs: list[int], fl: list[int], tag: str = "") -> ProcessingResults:
    """Results as a process run records them, with real (empty) files on disk."""
    res = ProcessingResults(output_dir=out, channels=Channels(pc=0, fl=list(fl)))
    res.params = {"fov_start": fovs[0], "fov_end": fovs[-1], "min_iou": 0.1}
    for fov in fovs:
        fov_dir = out / f"fov_{fov:03d}"
        zarr = fov_dir / f"exp_fov_{fov:03d}.zarr"
        entry = res.fov(fov)
        entry.put("pc", 0, zarr / "pc_ch_0")
        entry.put("seg", 0, zarr / "seg_ch_0")
        entry.put("seg_labeled", 0, zarr / "seg_labeled_ch_0")
        for ch in fl:
            entry.put("fl", ch, zarr / f"fl_ch_{ch}")
            entry.put("fl_corrected", ch, zarr / f"fl_corrected_ch_{ch}")
            csv = fov_dir / f"exp{tag}_fov_{fov:03d}_traces_ch_{ch}.csv"
            csv.parent.mkdir(parents=True, exist_ok=True)
            csv.write_text("fov\n")
            entry.put("traces_csv", ch, csv)
    return res


def test_round_trip_and_pyama_layout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _run(out, [0, 10], fl=[2, 1])
    res.params["crop"] = (np.int64(3), Path("/x"))  # made YAML-safe on save
    path = save_results(res)
    assert path == out / RESULTS_FILE_NAME
    assert [p.name for p in out.iterdir() if p.is_file()] == [RESULTS_FILE_NAME]  # no temp left

    text = path.read_text()
    data = yaml.safe_load(text)
    assert list(data) == ["output_dir", "channels", "results_paths", "params", "time_units"]
    assert data["output_dir"] == str(out)
    assert data["channels"] == {"pc": 0, "fl": [1, 2]}
    assert list(data["results_paths"]) == ["0", "10"]  # str keys, as PyAMA writes str(fov)
    assert "'10':\n" in text  # ...so YAML quotes them
    fov10 = data["results_paths"]["10"]
    assert list(fov10) == ["pc", "fl", "seg", "seg_labeled", "fl_corrected", "traces_csv"]
    assert fov10["pc"] == [0, str(out / "fov_010" / "exp_fov_010.zarr" / "pc_ch_0")]
    assert fov10["traces_csv"] == [
        [1, str(out / "fov_010" / "exp_fov_010_traces_ch_1.csv")],
        [2, str(out / "fov_010" / "exp_fov_010_traces_ch_2.csv")],
    ]
    assert data["params"]["crop"] == [3, "/x"]
    assert data["time_units"] == "min"

    back = load_results(out)
    res.params["crop"] = [3, "/x"]
    res.channels = Channels(pc=0, fl=(1, 2))  # written sorted
    assert back == res
    assert back.traces_csv(10, 2) == out / "fov_010" / "exp_fov_010_traces_ch_2.csv"
    assert back.traces_csv(10, 3) is None


def test_unset_entries_are_written_like_pyama(tmp_path: Path) -> None:
    res = ProcessingResults(output_dir=tmp_path)
    res.fov(4).put("fl", 1, tmp_path / "fov_004" / "a")
    data = yaml.safe_load(save_results(res).read_text())
    assert data["results_paths"]["4"] == {
        "pc": None,
        "fl": [[1, str(tmp_path / "fov_004" / "a")]],
        "seg": None,
        "seg_labeled": None,
        "fl_corrected": [],
        "traces_csv": [],
    }
    assert data["channels"] == {"pc": None, "fl": []}


def test_moved_folder_is_rerooted(tmp_path: Path) -> None:
    old = tmp_path / "old" / "out"
    save_results(_run(old, [0, 1], fl=[1]))
    new = tmp_path / "elsewhere" / "renamed"
    new.parent.mkdir()
    shutil.move(old, new)

    res = load_results(new / RESULTS_FILE_NAME)
    assert res.output_dir == new
    csv = res.traces_csv(1, 1)
    assert csv == new / "fov_001" / "exp_fov_001_traces_ch_1.csv" and csv.is_file()
    # Zarr arrays sit one level deeper than PyAMA's fov_XXX/file: still under the new root.
    assert res.results_paths[0].pc == (0, new / "fov_000" / "exp_fov_000.zarr" / "pc_ch_0")
    # Saving again records the new location.
    data = yaml.safe_load(save_results(res).read_text())
    assert data["output_dir"] == str(new)
    assert data["results_paths"]["1"]["traces_csv"][0][1] == str(csv)


def test_copied_folder_points_at_the_copy(tmp_path: Path) -> None:
    original = tmp_path / "out"
    save_results(_run(original, [0], fl=[1]))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    # The original still exists; the copy must not read (or later overwrite) its files.
    assert load_results(copy).traces_csv(0, 1) == copy / "fov_000" / "exp_fov_000_traces_ch_1.csv"
    assert load_results(original).traces_csv(0, 1) == (
        original / "fov_000" / "exp_fov_000_traces_ch_1.csv"
    )


def test_pyama_written_file_from_another_machine(tmp_path: Path) -> None:
    # As PyAMA writes it: absolute paths on the acquisition PC, .npy files in fov folders.
    (tmp_path / RESULTS_FILE_NAME).write_text(
        "output_dir: C:\\Users\\lab\\out\n"
        "channels:\n  pc: 0\n  fl:\n  - 1\n"
        "results_paths:\n"
        "  '3':\n"
        "    pc:\n    - 0\n    - C:\\Users\\lab\\out\\fov_003\\exp_fov003_pc_ch_0.npy\n"
        "    fl: []\n"
        "    traces_csv:\n"
        "    - - 1\n      - C:\\Users\\lab\\out\\fov_003\\exp_fov_003_traces_ch_1.csv\n"
        "  5:\n"
        "    seg:\n    - 0\n    - /mnt/other/place/fov_005/exp_fov005_seg_ch_0.npy\n"
        "    fl_background:\n    - - 1\n      - /mnt/other/place/fov_005/bg.npy\n"
        "params: {}\n"
        "time_units: min\n"
        "pyama_version: 0.9\n"
    )
    res = load_results(tmp_path)
    assert res.channels == Channels(pc=0, fl=[1])
    assert res.results_paths[3].pc == (0, tmp_path / "fov_003" / "exp_fov003_pc_ch_0.npy")
    assert res.traces_csv(3, 1) == tmp_path / "fov_003" / "exp_fov_003_traces_ch_1.csv"
    # Not under the recorded output_dir and missing: PyAMA's rule, the last two parts.
    assert res.results_paths[5].seg == (0, tmp_path / "fov_005" / "exp_fov005_seg_ch_0.npy")
    # Keys we do not model survive a load/merge/save cycle.
    assert res.results_paths[5].extra == {"fl_background": [[1, "/mnt/other/place/fov_005/bg.npy"]]}
    merged = merge_results(res, ProcessingResults(output_dir=tmp_path))
    data = yaml.safe_load(save_results(merged).read_text())
    assert data["pyama_version"] == 0.9
    assert data["results_paths"]["5"]["fl_background"] == [[1, "/mnt/other/place/fov_005/bg.npy"]]


def test_merge_unions_fovs_and_channels_and_replaces_same_channel(tmp_path: Path) -> None:
    first = _run(tmp_path, [0, 1], fl=[1])
    first.params["only_in_first"] = True
    second = _run(tmp_path, [1, 2], fl=[2], tag="_rerun")
    second.fov(1).put("traces_csv", 1, tmp_path / "fov_001" / "newer_ch_1.csv")
    second.channels = Channels(pc=None, fl=second.channels.fl)
    second.results_paths[2].pc = None
    first_copy, second_copy = pickle.dumps(first), pickle.dumps(second)

    merged = merge_results(first, second)

    assert pickle.dumps(first) == first_copy and pickle.dumps(second) == second_copy
    assert sorted(merged.results_paths) == [0, 1, 2]
    assert merged.channels == Channels(pc=0, fl=[1, 2])
    assert merged.results_paths[0] == first.results_paths[0]
    fov1 = merged.results_paths[1]
    assert fov1.traces_csv == [
        (1, tmp_path / "fov_001" / "newer_ch_1.csv"),  # same channel: newer path wins
        (2, tmp_path / "fov_001" / "exp_rerun_fov_001_traces_ch_2.csv"),  # new channel added
    ]
    assert [ch for ch, _ in fov1.fl] == [1, 2]
    assert [ch for ch, _ in fov1.fl_corrected] == [1, 2]
    assert merged.results_paths[2].pc is None  # neither run recorded one
    assert merged.params == {"fov_start": 1, "fov_end": 2, "min_iou": 0.1, "only_in_first": True}


def test_update_results_file_merges_runs_on_disk(tmp_path: Path) -> None:
    update_results_file(_run(tmp_path, [0], fl=[1]))
    update_results_file(_run(tmp_path, [1], fl=[1]))
    update_results_file(_run(tmp_path, [0], fl=[2]))
    res = load_results(tmp_path)
    assert sorted(res.results_paths) == [0, 1]
    assert [ch for ch, _ in res.results_paths[0].traces_csv] == [1, 2]
    assert [ch for ch, _ in res.results_paths[1].traces_csv] == [1]
    assert res.channels.fl == (1, 2)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("results_paths: {0: [unclosed\n", "corrupt YAML"),
        ("- just\n- a list\n", "mapping at the top level"),
        ("results_paths: [1, 2]\n", "'results_paths' is not a mapping"),
        ("results_paths:\n  zero: {}\n", "expected an integer"),
        ("results_paths:\n  0:\n    pc: /only/a/path\n", r"results_paths\[0\]\.pc"),
        ("results_paths:\n  0:\n    fl: [[1]]\n", r"expected \[channel, path\]"),
        ("channels: [0, 1]\n", "'channels'"),
    ],
)
def test_corrupt_file_raises_naming_it(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / RESULTS_FILE_NAME
    path.write_text(text)
    with pytest.raises(ResultsFileError, match=problem) as info:
        load_results(path)
    assert info.value.path == path and str(path) in str(info.value)
    # A corrupt file is not silently replaced (that would drop earlier runs' entries).
    with pytest.raises(ResultsFileError):
        update_results_file(_run(tmp_path, [0], fl=[1]))
    assert path.read_text() == text


def test_errors_missing_file_unsafe_params_and_pickling(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match="run processing first") as info:
        load_results(tmp_path)
    err = pickle.loads(pickle.dumps(info.value))  # crosses worker-process boundaries
    assert err.path == tmp_path / RESULTS_FILE_NAME and str(err) == str(info.value)

    res = ProcessingResults(output_dir=tmp_path, params={"model": object()})
    with pytest.raises(InputDataError, match="params.model"):
        save_results(res)
    assert not (tmp_path / RESULTS_FILE_NAME).exists()
    with pytest.raises(KeyError, match="traces"):
        FovResults().put("traces", 1, tmp_path)
