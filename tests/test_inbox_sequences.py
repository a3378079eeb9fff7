"""Sequence folders in the inbox: which folders are acquisitions, their versions, when they are
complete, the watcher (real watchdog, inotify) and the inbox flows (a real temporary Prefect API).

Real inputs: frames of the E. coli recording in ``shared/data/real/ecoli-agarpad``
(``2014_05_30_controlagaint{TTT}xy1c{C}.tif``, 60 frames × 2 channels), copied into pytest's
temporary folder frame by frame to play the microscope writing them; a frame cut short is made
from a real one. Made here: empty placeholder files where only names matter (which folders are
found), a Micro-Manager layout (``Pos0``/``Pos1`` with a ``metadata.txt``), hidden temporary files
and symlinks.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from deployments.watch import Watcher
from pyama_lib.core.errors import InboxPathError
from pyama_lib.io import open_acquisition
from pyama_lib.service.inbox import (
    PROCESSED_RECORD,
    FileVersion,
    find_acquisitions,
    is_processed,
    not_ready,
    output_folder,
    pin_in_inbox,
    resolve_in_inbox,
)
from pyama_lib.service.ledger import AnnouncedLedger

QUIET = 0.5  # s: the watchers' quiet period
AFTER = QUIET + 0.2  # s: watched after an announcement, long enough for another one
AN_HOUR_AGO = time.time() - 3600


@pytest.fixture(scope="session")
def ecoli(nd2_dir: Path) -> Path:
    """shared/data/real/ecoli-agarpad, beside the shared ND2 folder; read in place."""
    folder = nd2_dir.parent / "real" / "ecoli-agarpad"
    if not folder.is_dir():
        pytest.fail(f"shared E. coli recording not found at {folder}; set PYAMA_SHARED")
    return folder


def frame_name(t: int, c: int) -> str:
    return f"2014_05_30_controlagaint{t:03d}xy1c{c}.tif"


def copy_frame(ecoli: Path, folder: Path, t: int, c: int, hidden_first: bool = False) -> Path:
    """One real image into ``folder``; ``hidden_first``: rsync style, a hidden temporary name
    renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / frame_name(t, c)
    if hidden_first:
        temporary = folder / f".{target.name}.Xy12Ab"
        shutil.copyfile(ecoli / target.name, temporary)
        os.replace(temporary, target)
    else:
        shutil.copyfile(ecoli / target.name, target)
    return target


def copy_frames(ecoli: Path, folder: Path, frames: range, age: float | None = None) -> Path:
    for t in frames:
        for c in (1, 2):
            copy_frame(ecoli, folder, t, c)
    if age is not None:  # finished ``age`` s ago: the folder and every image
        for path in [*folder.iterdir(), folder]:
            os.utime(path, (time.time() - age, time.time() - age))
    return folder


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# -- which entries are acquisitions ------------------------------------------------------------


def test_find_acquisitions_takes_sequence_folders_and_micro_manager_datasets(
    tmp_path: Path,
) -> None:
    """Made: empty files, only their names and places matter here."""
    inbox = tmp_path / "inbox"
    for rel in [
        "day/ecoli/a_t001xy1c1.tif",
        "day/ecoli/a_t001xy1c2.TIFF",
        "day/ecoli/notes.txt",
        "day/ecoli/old/x.nd2",  # inside a sequence folder: belongs to it
        "day/ecoli/sub/b_t001.tif",
        "day/plate.ome.tif",  # OME-TIFFs stay file acquisitions
        "day/stacks/s1.ome.tiff",  # a folder of OME-TIFFs only is no sequence
        "mm/exp_1/Pos0/img_channel000_position000_time000000000_z000.tif",
        "mm/exp_1/Pos0/metadata.txt",
        "mm/exp_1/Pos1/img_channel000_position001_time000000000_z000.tif",
        "mm/exp_1/Pos1/metadata.txt",
        "mm/exp_1/display_and_comments.txt",
        "mm/exp_2/Pos0/img_channel000_position000_time000000000_z000.tif",  # no metadata.txt
        "loose.tif",  # the inbox folder itself is never an acquisition
        ".staging/c/a_t001xy1c1.tif",  # hidden: a copy tool's staging area
        "day/.d/a_t001xy1c1.tif",
        "empty/notes.txt",
    ]:
        _touch(inbox / rel)
    (inbox / "linked").symlink_to(inbox / "day" / "ecoli", target_is_directory=True)

    found = find_acquisitions(inbox)
    assert found == [
        inbox / "day" / "ecoli",
        inbox / "day" / "plate.ome.tif",
        inbox / "day" / "stacks" / "s1.ome.tiff",
        inbox / "mm" / "exp_1",
        inbox / "mm" / "exp_2" / "Pos0",  # without metadata.txt: a plain sequence folder
    ]
    assert find_acquisitions(inbox / "mm" / "exp_1") == [inbox / "mm" / "exp_1" / "Pos0"] + [
        inbox / "mm" / "exp_1" / "Pos1"
    ]  # given as the inbox itself, its position folders are what it holds


# -- a folder's version ------------------------------------------------------------------------


def test_a_folder_version_is_its_files_total_size_and_latest_time(
    tmp_path: Path, ecoli: Path
) -> None:
    """Real: four E. coli images. Made: a hidden temporary file, a deletion, a rename, a
    re-export with the same size."""
    folder = copy_frames(ecoli, tmp_path / "inbox" / "ecoli", range(1, 3), age=600)
    images = sorted(folder.iterdir())
    stats = [os.stat(p) for p in images]
    version = FileVersion.of(folder)
    assert version.path == str(folder.resolve())
    assert version.size == sum(st.st_size for st in stats)
    assert version.mtime_ns == max(st.st_mtime_ns for st in [*stats, os.stat(folder)])

    # A copy tool's hidden temporary file: not part of the size; its creation is a new time.
    (folder / f".{frame_name(3, 1)}.Ab12Cd").write_bytes(b"x" * 1000)
    with_hidden = FileVersion.of(folder)
    assert with_hidden.size == version.size
    assert with_hidden.mtime_ns == os.stat(folder).st_mtime_ns > version.mtime_ns

    # A renamed image keeps its size and time: only the folder's time says so.
    os.utime(folder, (time.time() - 300, time.time() - 300))
    before = FileVersion.of(folder)
    images[0].rename(folder / "renamed.tif")
    renamed = FileVersion.of(folder)
    assert renamed.size == before.size and renamed != before

    # An image re-exported with other pixels but the same size: a new time.
    data = bytearray(images[1].read_bytes())
    data[-1] ^= 0xFF
    images[1].write_bytes(bytes(data))
    assert FileVersion.of(folder).size == renamed.size
    assert FileVersion.of(folder).mtime_ns == os.stat(images[1]).st_mtime_ns

    images[1].unlink()  # a deleted image: a smaller size
    assert FileVersion.of(folder).size == renamed.size - len(data)


# -- accepted paths, pins, output folders -------------------------------------------------------


def test_a_sequence_folder_is_resolved_pinned_and_mirrored(tmp_path: Path, ecoli: Path) -> None:
    """Real: two E. coli frames. Made: the paths around them."""
    inbox = tmp_path / "inbox"
    folder = copy_frames(ecoli, inbox / "2014-05-30" / "ecoli", range(1, 3))
    acquisition, root = resolve_in_inbox(folder, inbox)
    assert (acquisition, root) == (folder.resolve(), inbox.resolve())
    st = os.stat(folder)
    pinned = pin_in_inbox(acquisition, root)
    assert pinned == (st.st_dev, st.st_ino)
    assert output_folder(acquisition, root, tmp_path / "out") == (
        tmp_path / "out" / "2014-05-30" / "ecoli"
    )
    with open_acquisition(acquisition, pinned=pinned) as acq:
        assert (acq.n_frames, acq.channel_names) == (2, ["c1", "c2"])
        expected = tifffile.imread(ecoli / frame_name(2, 2))
        np.testing.assert_array_equal(acq.frame(0, 1, 1), expected)

    # Not accepted: an image of the folder, the inbox itself, a folder without images.
    with pytest.raises(InboxPathError, match="lies inside the sequence folder"):
        resolve_in_inbox(folder / frame_name(1, 1), inbox)
    with pytest.raises(InboxPathError, match="inbox folder itself"):
        resolve_in_inbox(inbox, inbox)
    (inbox / "notes").mkdir()
    with pytest.raises(InboxPathError, match="holding no TIFF images"):
        resolve_in_inbox(inbox / "notes", inbox)


def test_a_symlinked_sequence_folder_out_of_the_inbox_is_refused(
    tmp_path: Path, ecoli: Path
) -> None:
    """Real: two E. coli frames outside the inbox. Made: a symlink to them, and a folder
    swapped for a symlink after it was pinned."""
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    copy_frames(ecoli, outside / "ecoli", range(1, 3))
    inbox.mkdir()
    (inbox / "ecoli").symlink_to(outside / "ecoli", target_is_directory=True)
    with pytest.raises(InboxPathError, match="outside the inbox"):
        resolve_in_inbox(inbox / "ecoli", inbox)
    assert find_acquisitions(inbox) == []  # symlinked folders are not searched

    (inbox / "ecoli").unlink()
    folder = copy_frames(ecoli, inbox / "ecoli", range(1, 3))
    pinned = pin_in_inbox(*resolve_in_inbox(folder, inbox))
    folder.rename(tmp_path / "moved")
    folder.symlink_to(outside / "ecoli", target_is_directory=True)
    with pytest.raises(InboxPathError, match="is no longer the file that was checked"):
        open_acquisition(folder, pinned=pinned)
    with pytest.raises(InboxPathError, match="changed while it was checked"):
        pin_in_inbox(folder, inbox.resolve())


# -- complete or not -----------------------------------------------------------------------------


def test_not_ready_says_why_a_folder_is_not_complete(tmp_path: Path, ecoli: Path) -> None:
    """Real: four E. coli frames. Made: a missing image, an image cut short, a symlink."""
    folder = copy_frames(ecoli, tmp_path / "inbox" / "ecoli", range(1, 5), age=600)
    assert not_ready(folder, quiet_seconds=30) is None
    os.utime(folder / frame_name(4, 2))  # an image written just now
    reason = not_ready(folder, quiet_seconds=30)
    assert reason is not None and reason.startswith("still being written"), reason

    (folder / frame_name(4, 2)).unlink()
    reason = not_ready(folder, quiet_seconds=0.5, unchanged_for=2)
    assert reason is not None and reason.startswith("does not open yet"), reason
    assert "no image for position 1, time 004, channel 2" in reason

    shutil.copyfile(ecoli / frame_name(4, 2), folder / frame_name(4, 2))
    data = (ecoli / frame_name(2, 2)).read_bytes()
    (folder / frame_name(2, 2)).write_bytes(data[:4000])  # the copy stopped mid-file
    reason = not_ready(folder, quiet_seconds=0.5, unchanged_for=2)
    assert reason is not None and reason.startswith("an image does not read yet"), reason
    assert f"{frame_name(2, 2)} cannot be read as a TIFF image" in reason

    (folder / frame_name(2, 2)).write_bytes(data)
    assert not_ready(folder, quiet_seconds=0.5, unchanged_for=2) is None
    (folder / "link.tif").symlink_to(ecoli / frame_name(5, 1))
    with pytest.raises(InboxPathError, match=r"holds 1 symlink\(s\) \(link.tif\)"):
        not_ready(folder, quiet_seconds=0.5, unchanged_for=2)


# -- the watcher -------------------------------------------------------------------------------


class Rig:
    """A watched inbox, a ledger outside it, and what the watcher announced and logged."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "inbox"
        self.folder.mkdir()
        self.announced: list[FileVersion] = []
        self.logs: list[str] = []
        self.watcher = Watcher(
            [self.folder],
            AnnouncedLedger(tmp_path / "state" / "watch.json"),
            self.announced.append,
            quiet_seconds=QUIET,
            poll=False,
            log=self.logs.append,
        )

    def rounds(self, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.watcher.check()
            if until():
                return True
            time.sleep(0.05)
        return until()


@pytest.fixture
def rig(tmp_path: Path):
    rig = Rig(tmp_path)
    rig.watcher.start()
    try:
        yield rig
    finally:
        rig.watcher.stop()


def test_a_sequence_copied_frame_by_frame_is_announced_once_when_complete_and_quiet(
    rig: Rig, ecoli: Path
) -> None:
    """Real: E. coli frames 1-11, copied one image at a time, rsync style (a hidden name
    renamed into place). Made: the pauses, and an image that arrives late."""
    folder = rig.folder / "ecoli"
    for t in range(1, 9):  # about 1.2 s of copying, in pauses shorter than QUIET
        for c in (1, 2):
            copy_frame(ecoli, folder, t, c, hidden_first=True)
            rig.rounds(0.07)
        assert rig.announced == [], "announced while images were still arriving"
    copy_frame(ecoli, folder, 9, 1, hidden_first=True)  # frame 9's channel 2 comes late
    rig.rounds(3 * QUIET)
    assert rig.announced == [], "announced with an image missing"
    waiting = [line for line in rig.logs if line.startswith(f"waiting for {folder}")]
    assert len(waiting) == 1 and "no image for position 1, time 009, channel 2" in waiting[0]

    copy_frame(ecoli, folder, 9, 2, hidden_first=True)
    assert rig.rounds(10, lambda: bool(rig.announced)), rig.logs
    rig.rounds(AFTER)  # and not again
    first = FileVersion.of(folder)
    assert rig.announced == [first]
    assert first.path == str(folder.resolve())  # the folder, not one of its images
    assert first.size == sum((ecoli / frame_name(t, c)).stat().st_size for t in range(1, 10)
                             for c in (1, 2))  # fmt: skip
    assert len([line for line in rig.logs if line.startswith("announced ")]) == 1
    assert output_folder(Path(first.path), rig.folder.resolve(), "/results") == Path(
        "/results/ecoli"
    )

    # A second version: one more frame. Announced once more, as a new version.
    copy_frame(ecoli, folder, 10, 1)
    copy_frame(ecoli, folder, 10, 2)
    assert rig.rounds(10, lambda: len(rig.announced) == 2), rig.logs
    rig.rounds(AFTER)
    second = FileVersion.of(folder)
    assert rig.announced == [first, second] and second != first
    assert AnnouncedLedger(rig.watcher.ledger.path).has(second)


def test_an_image_replaced_in_an_announced_folder_is_a_new_version(rig: Rig, ecoli: Path) -> None:
    """Real: E. coli frames 1-3 dropped into the inbox as a whole (a hidden folder renamed,
    as the docs advise), then one image replaced by another real image of the same size."""
    staging = copy_frames(ecoli, rig.folder / ".ecoli.partial", range(1, 4))
    folder = rig.folder / "ecoli"
    staging.rename(folder)
    assert rig.rounds(10, lambda: bool(rig.announced)), rig.logs
    rig.rounds(AFTER)
    assert rig.announced == [FileVersion.of(folder)]

    replaced = folder / frame_name(2, 1)
    shutil.copyfile(ecoli / frame_name(30, 1), replaced)
    assert replaced.stat().st_size == (ecoli / frame_name(2, 1)).stat().st_size
    assert rig.rounds(10, lambda: len(rig.announced) == 2), rig.logs
    rig.rounds(AFTER)
    assert rig.announced[1] == FileVersion.of(folder) != rig.announced[0]


def test_a_micro_manager_dataset_is_one_candidate_once_its_metadata_arrives(
    rig: Rig, ecoli: Path
) -> None:
    """Real: E. coli images renamed to Micro-Manager 2 names. Made: Pos0/Pos1 folders and
    their metadata.txt (channel names only)."""
    dataset = rig.folder / "exp_1"
    for pos in (0, 1):
        for t in range(3):
            name = f"img_channel000_position{pos:03d}_time{t:09d}_z000.tif"
            (dataset / f"Pos{pos}").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ecoli / frame_name(t + 1, 1), dataset / f"Pos{pos}" / name)
    rig.rounds(0.2)  # the position folders alone look like sequences of their own
    for pos in (0, 1):
        meta = dataset / f"Pos{pos}" / "metadata.txt"
        meta.write_text('{"Summary": {"ChNames": ["Phase"]}}')
    assert rig.rounds(10, lambda: bool(rig.announced)), rig.logs
    rig.rounds(AFTER)
    assert rig.announced == [FileVersion.of(dataset)], rig.logs
    with open_acquisition(dataset) as acq:
        assert (acq.n_fovs, acq.n_frames, acq.channel_names) == (2, 3, ["Phase"])


# -- the inbox flows: a folder processed end to end, and the sweep ------------------------------


def test_the_flow_processes_a_folder_and_the_sweep_reports_an_incomplete_one(
    prefect_api, tmp_path: Path, ecoli: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real: E. coli frames 1-10, both channels, through one real process-new-acquisition run
    (thread runner); a copy missing one image. Made: the inbox and output folders."""
    from flows.inbox import process_new_acquisition_flow, sweep_inbox_flow
    from pyama_lib.io.traces import read_traces_csv, traces_csv_path
    from pyama_lib.pipeline.processing_params import ProcessingParams

    inbox, out = tmp_path / "inbox", tmp_path / "results"
    folder = copy_frames(ecoli, inbox / "2014-05-30" / "ecoli", range(1, 11), age=600)
    incomplete = copy_frames(ecoli, inbox / "broken", range(1, 4))
    (incomplete / frame_name(2, 2)).unlink()
    for path in [*incomplete.iterdir(), incomplete]:
        os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
    monkeypatch.setenv("PYAMA_INBOX", str(inbox))
    monkeypatch.setenv("PYAMA_OUTPUT_ROOT", str(out))

    short = ProcessingParams(extraction={"min_frames": 5})  # PyAMA's 30 of 10 frames: none
    outcome = process_new_acquisition_flow(
        str(folder), pc=0, fl=[1], n_workers=1, runner="thread", params=short, interval_min=3.0
    )
    expected = out / "2014-05-30" / "ecoli"
    assert (outcome.status, outcome.output_dir) == ("processed", str(expected))
    version = FileVersion.of(folder)
    assert is_processed(expected, version)
    record = yaml.safe_load((expected / PROCESSED_RECORD).read_text())
    assert (record["path"], record["size"]) == (str(folder.resolve()), version.size)
    traces = read_traces_csv(traces_csv_path(expected, "ecoli", 0, 1))
    assert traces["cell"].nunique() >= 3  # the microcolonies, each followed 5+ frames
    assert traces["frame"].max() == 9
    assert traces["time"].max() == pytest.approx(27.0)  # 9 frames × the 3 min given

    seen = sweep_inbox_flow(quiet_seconds=60)
    assert seen["done"] == [str(folder.resolve())]
    assert seen["waiting"] == [str(incomplete.resolve())]
    assert seen["submitted"] == [] and seen["refused"] == []
    rows = {row["acquisition"]: row for row in _latest_table("inbox-sweep")}
    why = rows[str(incomplete.resolve())]["why"]
    assert why.startswith("does not open yet") and "time 002, channel 2" in why, why
    again = process_new_acquisition_flow(str(folder), pc=0, fl=[1], runner="thread")
    assert again.status == "skipped"


def _latest_table(key: str) -> list[dict[str, str]]:
    """The rows of the newest table artifact ``key`` on the Prefect API."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    data = found[0].data
    return json.loads(data) if isinstance(data, str) else data
