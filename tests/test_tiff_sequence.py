"""Folders of 2-D TIFFs as acquisitions (``TiffSequenceAcquisition``).

Real inputs: the E. coli recording in ``shared/data/real/ecoli-agarpad`` (120 NIS-Elements-style
exports, ``2014_05_30_controlagaint{TTT}xy1c{C}.tif``) and Micro-Manager's own legacy test
folder ``shared/data/formats/micromanager_legacy/alpha_2.0_singleplane_manual`` (one image,
hand-made metadata). Made here: renamed copies of the real E. coli frames for naming schemes and
faults the shared files do not have (other NIS orders, Micro-Manager 2 names with times, a
pattern, missing, duplicated, foreign and damaged files).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile

from flows.cli.main import main as cli_main
from pyama_lib.core.errors import CorruptFileError, UnsupportedFormatError
from pyama_lib.io import open_acquisition
from pyama_lib.io.identity import identity_key, input_identity
from pyama_lib.io.readers import sequence_layout
from pyama_lib.io.readers.tiff_sequence import TiffSequenceAcquisition
from tests.conftest import SHARED

ECOLI = SHARED / "data" / "real" / "ecoli-agarpad"
MM_LEGACY = SHARED / "data" / "formats" / "micromanager_legacy" / "alpha_2.0_singleplane_manual"


def ecoli_file(t: int, c: int) -> Path:
    return ECOLI / f"2014_05_30_controlagaint{t:03d}xy1c{c}.tif"


pytestmark = pytest.mark.usefixtures("fresh_index_cache")


def _copies(folder: Path, names: dict[str, Path]) -> Path:
    """``folder`` holding a copy of each real frame under a new name."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in names.items():
        shutil.copyfile(source, folder / name)
    return folder


def _settled(folder: Path) -> Path:
    """A 3-frame, 2-channel sequence whose folder last changed a minute ago (cacheable)."""
    names = {f"exp_t{t}c{c}.tif": ecoli_file(t, c) for t in range(1, 4) for c in (1, 2)}
    _copies(folder, names)
    old = time.time() - 60
    os.utime(folder, (old, old))
    return folder


def test_the_real_ecoli_folder_is_one_fov_of_60_frames_and_2_channels() -> None:
    with open_acquisition(ECOLI) as acq:
        assert isinstance(acq, TiffSequenceAcquisition)
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (1, 60, 2)
        assert acq.channel_names == ["c1", "c2"]
        assert (acq.height, acq.width, acq.dtype) == (331, 362, np.dtype("uint16"))
        assert acq.base_name == "ecoli-agarpad"
        for t, c in [(0, 0), (0, 1), (36, 1), (59, 0)]:
            expected = tifffile.imread(ecoli_file(t + 1, c + 1))
            np.testing.assert_array_equal(acq.frame(0, c, t), expected)
        # The files hold no times: PyAMA's fallback, and said so.
        np.testing.assert_array_equal(acq.frame_times(0), np.arange(60.0))
        assert "record no times" in acq.times_note and "--interval" in acq.times_note
        lines = "\n".join(acq.describe())
        assert "NIS-Elements" in lines and "120 images" in lines
        assert "frames:   60 (001 … 060)" in lines and "channels: 2 (1, 2)" in lines
        assert "2014_05_30_controlagaint001xy1c1.tif" in lines
        assert "2014_05_30_controlagaint060xy1c2.tif" in lines
        acq.check_files()  # every image a 331 x 362 uint16 plane


def test_interval_option_and_pickling() -> None:
    with open_acquisition(ECOLI, interval_min=5.0) as acq:
        np.testing.assert_array_equal(acq.frame_times(0)[:3], [0.0, 5.0, 10.0])
        assert "5 min, the interval given" in acq.times_note
        again = pickle.loads(pickle.dumps(acq))
        np.testing.assert_array_equal(again.frame(0, 1, 10), acq.frame(0, 1, 10))
        again.close()


def test_other_nis_orders_without_zeros_and_two_positions(tmp_path: Path) -> None:
    """Made: real frames renamed as NIS-Elements also writes them (order xy, c, t; no padding)."""
    names = {
        f"run_xy{p}c{c}t{t}.tif": ecoli_file(t + 10 * p, c)
        for p in (1, 2)
        for c in (1, 2)
        for t in range(1, 12)
    }
    folder = _copies(tmp_path / "run", names)
    with open_acquisition(folder) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (2, 11, 2)
        # t10 comes after t9 (numbers, not text), position xy2 is FOV 1.
        np.testing.assert_array_equal(acq.frame(1, 0, 9), tifffile.imread(ecoli_file(30, 1)))
        np.testing.assert_array_equal(acq.frame(0, 1, 1), tifffile.imread(ecoli_file(12, 2)))


def test_micro_manager_2_names_with_metadata_times(tmp_path: Path) -> None:
    """Made: Micro-Manager 2 names and a metadata.txt with per-image elapsed times."""
    folder = tmp_path / "mm" / "Pos0"
    names, meta = {}, {"Summary": {"ChNames": ["Phase", "GFP"], "Interval_ms": 300000}}
    for t in range(3):
        for c in range(2):
            name = f"img_channel{c:03d}_position000_time{t:09d}_z000.tif"
            names[name] = ecoli_file(t + 1, c + 1)
            meta[f"Metadata-Pos0/{name}"] = {"ElapsedTime-ms": 300_000 * t + 1500 * c + 20}
    _copies(folder, names)
    (folder / "metadata.txt").write_text(json.dumps(meta))
    with open_acquisition(tmp_path / "mm") as acq:  # the dataset folder: positions inside
        assert acq.channel_names == ["Phase", "GFP"]
        assert (acq.n_fovs, acq.n_frames) == (1, 3)
        offset = 20 / 60_000  # ms → min
        np.testing.assert_allclose(acq.frame_times(0), [offset, 5 + offset, 10 + offset])
        assert acq.times_note is None
        assert "positions: 1 (Pos0)" in "\n".join(acq.describe())


def test_the_real_micro_manager_legacy_folder() -> None:
    with open_acquisition(MM_LEGACY) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.n_channels) == (1, 1, 1)
        assert acq.channel_names == ["Alpha"]  # ChNames of its metadata.txt
        name = "img_channel000_position000_time000000000_z000.tif"
        expected = tifffile.imread(MM_LEGACY / "Pos0" / name)
        np.testing.assert_array_equal(acq.frame(0, 0, 0), expected)
        assert acq.frame(0, 0, 0).dtype == np.uint16 and acq.shape == (16, 16)
        assert acq.times_note is not None  # made-up metadata: no elapsed times, no interval


def test_a_pattern_reads_any_naming(tmp_path: Path) -> None:
    """Made: names no built-in scheme reads."""
    names = {
        f"plate_well{p}_frame{t}_{ch}.tif": ecoli_file(t + 1, c + 1)
        for p in ("A1", "B2")
        for t in range(4)
        for c, ch in enumerate(["BF", "GFP"])
    }
    folder = _copies(tmp_path / "plate", names)
    with pytest.raises(UnsupportedFormatError, match="--pattern") as err:
        open_acquisition(folder)
    assert "plate_well" in str(err.value)
    with open_acquisition(folder, pattern="plate_well{p}_frame{t}_{c}.tif") as acq:
        assert acq.channel_names == ["BF", "GFP"]
        assert (acq.n_fovs, acq.n_frames) == (2, 4)
        np.testing.assert_array_equal(acq.frame(1, 1, 3), tifffile.imread(ecoli_file(4, 2)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop_frame", "frames 5 are missing"),
        ("drop_image", "no image for position 1, time 3, channel 2"),
        ("duplicate", "are the same image"),
        ("foreign", "do not match"),
        ("second_acquisition", "holds the images of 2 acquisitions"),
    ],
)
def test_bad_folders_are_refused_naming_the_files(
    tmp_path: Path, change: str, message: str
) -> None:
    """Made: renamed real frames with one fault each; refused at open, before any read."""
    names = {f"exp_t{t}xy1c{c}.tif": ecoli_file(t, c) for t in range(1, 7) for c in (1, 2)}
    folder = _copies(tmp_path / "exp", names)
    if change == "drop_frame":
        for c in (1, 2):
            (folder / f"exp_t5xy1c{c}.tif").unlink()
    elif change == "drop_image":
        (folder / "exp_t3xy1c2.tif").unlink()
    elif change == "duplicate":
        shutil.copyfile(folder / "exp_t2xy1c1.tif", folder / "exp_t002xy1c1.tif")
    elif change == "foreign":
        shutil.copyfile(folder / "exp_t2xy1c1.tif", folder / "overview.tif")
    else:
        shutil.copyfile(folder / "exp_t2xy1c1.tif", folder / "other_t2xy1c1.tif")
    with pytest.raises(UnsupportedFormatError, match=message) as err:
        open_acquisition(folder)
    assert str(folder) in str(err.value)
    if change == "duplicate":
        assert "exp_t2xy1c1.tif" in str(err.value) and "exp_t002xy1c1.tif" in str(err.value)


def test_an_image_of_another_shape_is_found_while_planning(tmp_path: Path) -> None:
    names = {f"exp_t{t}c{c}.tif": ecoli_file(t, c) for t in range(1, 5) for c in (1, 2)}
    folder = _copies(tmp_path / "exp", names)
    tifffile.imwrite(folder / "exp_t3c2.tif", np.zeros((10, 10), np.uint16))
    with open_acquisition(folder) as acq:
        with pytest.raises(UnsupportedFormatError, match="exp_t3c2.tif") as err:
            acq.check_files()
        assert "10x10" not in str(err.value) and "(10, 10)" in str(err.value)
        with pytest.raises(UnsupportedFormatError, match="exp_t3c2.tif"):
            acq.frame(0, 1, 2)
        (folder / "exp_t4c1.tif").write_bytes((folder / "exp_t4c1.tif").read_bytes()[:500])
        with pytest.raises(CorruptFileError, match="exp_t4c1.tif"):
            acq.frame(0, 0, 3)


def test_the_folder_is_listed_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _settled(tmp_path / "exp")
    listings: Counter[str] = Counter()
    real = sequence_layout.os.scandir

    def counting(path):  # type: ignore[no-untyped-def]
        listings[str(path)] += 1
        return real(path)

    monkeypatch.setattr(sequence_layout.os, "scandir", counting)
    for fov_stage in range(5):
        with open_acquisition(folder) as acq:
            acq.frame(0, fov_stage % 2, 1)
    assert listings == {str(folder): 1}
    (folder / "exp_t3c2.tif").unlink()  # the folder changed: listed anew, and refused
    with pytest.raises(UnsupportedFormatError, match="no image"):
        open_acquisition(folder)
    assert listings[str(folder)] == 2


def test_a_folder_identity_changes_with_any_image(tmp_path: Path) -> None:
    names = {f"exp_t{t}c1.tif": ecoli_file(t, 1) for t in range(1, 4)}
    folder = _copies(tmp_path / "exp", names)
    first = input_identity(folder)
    assert first["size"] == sum(p.stat().st_size for p in folder.iterdir())
    assert identity_key(input_identity(folder)) == identity_key(first)
    # Same size, new pixels (a re-export): a new input.
    (folder / "exp_t2c1.tif").write_bytes((folder / "exp_t3c1.tif").read_bytes())
    os.utime(folder / "exp_t2c1.tif", ns=(1, 1))
    assert identity_key(input_identity(folder)) != identity_key(first)


def test_pyama_info_says_how_the_names_were_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["info", str(ECOLI), "--interval", "3"]) == 0
    out = capsys.readouterr().out
    assert "format:   TIFF sequence (TiffSequenceAcquisition)" in out
    assert "frames:   60" in out and "channels: 2 (0=c1, 1=c2)" in out
    assert "0-177 min, every 3 min" in out
    assert "naming:   NIS-Elements" in out
    assert cli_main(["info", str(ECOLI), "--pattern", "x_{t}.tif"]) == 2
    assert "do not match" in capsys.readouterr().err


def test_the_real_ecoli_folder_is_processed_end_to_end(prefect_api, tmp_path: Path) -> None:
    """The folder through a real Prefect run with PyAMA's defaults, then again (a no-op)."""
    from flows.process import process_acquisition
    from pyama_lib.io.results_yaml import load_results
    from pyama_lib.io.traces import read_traces_csv, traces_csv_path
    from pyama_lib.pipeline.run_record import load_run_yaml

    out = tmp_path / "out"
    summary = process_acquisition(str(ECOLI), str(out), pc=0, fl=[1], runner="thread")
    assert summary.fovs_done == [0] and summary.base_name == "ecoli-agarpad"
    traces = read_traces_csv(traces_csv_path(out, "ecoli-agarpad", 0, 1))
    # PyAMA's defaults outline the microcolonies (docs: README, inputs): a handful of tracks,
    # each followed through most of the 60 frames, at the assumed 1 min per frame.
    assert 4 <= traces["cell"].nunique() <= 12
    assert traces["frame"].max() == 59 and traces["time"].max() == 59.0
    assert (traces.groupby("cell")["frame"].count() > 30).sum() >= 4
    assert tuple(load_results(out).channels.fl) == (1,)
    record = load_run_yaml(out)[-1]
    assert any("record no times" in w for w in record.warnings)
    assert record.input["path"] == str(ECOLI.absolute())
    again = process_acquisition(str(ECOLI), str(out), pc=0, fl=[1], runner="thread")
    assert again.fovs_skipped == [0]


def test_positions_and_named_channels_keep_the_acquisition_order(tmp_path: Path) -> None:
    """Made: NIS names with 12 positions (xy10 after xy9), and Micro-Manager 1.4 names whose
    channels are named: ChNames' order, not the alphabet's."""
    nis = {f"exp_t1xy{p}c1.tif": ecoli_file(p, 1) for p in range(1, 13)}
    with open_acquisition(_copies(tmp_path / "nis", nis)) as acq:
        assert acq.layout.labels["P"] == [str(p) for p in range(1, 13)]
        np.testing.assert_array_equal(acq.frame(1, 0, 0), tifffile.imread(ecoli_file(2, 1)))
        np.testing.assert_array_equal(acq.frame(9, 0, 0), tifffile.imread(ecoli_file(10, 1)))
    folder = tmp_path / "mm14" / "Pos0"
    names = {f"img_{t:09d}_{ch}_000.tif": ecoli_file(t + 1, c + 1)
             for t in range(2) for c, ch in enumerate(["Phase", "GFP"])}  # fmt: skip
    _copies(folder, names)
    (folder / "metadata.txt").write_text(json.dumps({"Summary": {"ChNames": ["Phase", "GFP"]}}))
    with open_acquisition(tmp_path / "mm14") as acq:
        assert acq.channel_names == ["Phase", "GFP"]
        np.testing.assert_array_equal(acq.frame(0, 0, 1), tifffile.imread(ecoli_file(2, 1)))


def test_metadata_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    """The folder's own times do not change when metadata.txt is rewritten in place; the
    frame times must not come from the cached listing then."""
    names = {f"img_channel000_position000_time{t:09d}_z000.tif": ecoli_file(t + 1, 1)
             for t in range(3)}  # fmt: skip
    folder = _copies(tmp_path / "mm", names)
    meta = folder / "metadata.txt"
    meta.write_text(json.dumps({"Summary": {"Interval_ms": 60000}}))
    old = time.time() - 60
    for path in (meta, folder):
        os.utime(path, (old, old))
    with open_acquisition(folder) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 1.0, 2.0])
    with meta.open("r+") as fh:  # in place: same inode, the folder untouched
        fh.write(json.dumps({"Summary": {"Interval_ms": 300000}}))
    os.utime(meta, (old + 5, old + 5))
    with open_acquisition(folder) as acq:
        np.testing.assert_array_equal(acq.frame_times(0), [0.0, 5.0, 10.0])


def test_every_header_is_read_once_per_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyama_lib.io.readers import tiff_sequence

    folder = _settled(tmp_path / "exp")
    reads: list[Path] = []
    real = tiff_sequence.read_header
    monkeypatch.setattr(tiff_sequence, "read_header", lambda p, *a: reads.append(p) or real(p, *a))
    for _ in range(3):  # the command's checks, the flow's plan, a re-run in the process
        with open_acquisition(folder) as acq:
            acq.check_files()
    assert sorted(reads) == sorted(folder.iterdir())


def test_a_folder_identity_ignores_what_is_not_the_acquisition(tmp_path: Path) -> None:
    names = {f"exp_t{t}c1.tif": ecoli_file(t, 1) for t in range(1, 3)}
    folder = _copies(tmp_path / "exp", names)
    first = identity_key(input_identity(folder))
    (folder / "out" / "fov_000").mkdir(parents=True)  # an output folder kept inside the input
    (folder / "out" / "fov_000" / "traces.csv").write_text("fov,cell\n")
    (folder / "dangling.tif").symlink_to(tmp_path / "gone.tif")  # a broken link: no crash
    assert identity_key(input_identity(folder)) != first  # the new link is a new file
    (folder / "dangling.tif").unlink()
    assert identity_key(input_identity(folder)) == first
