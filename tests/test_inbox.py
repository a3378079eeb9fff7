"""The inbox (no Prefect, no watcher): which files are acquisitions, which paths are accepted,
where the outputs go, when an acquisition is complete, and what was processed or announced."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import shutil
import time
from pathlib import Path

import pytest
import yaml

from pyama_lib.core.errors import InboxPathError
from pyama_lib.io import open_acquisition
from pyama_lib.service.inbox import (
    PROCESSED_RECORD,
    FileVersion,
    find_acquisitions,
    is_acquisition,
    is_processed,
    not_ready,
    output_folder,
    pin_in_inbox,
    record_processed,
    resolve_in_inbox,
)
from pyama_lib.service.ledger import AnnouncedLedger
from pyama_lib.synthetic.generator import make_synthetic

TIMELAPSE = "arcadia-example-timelapse.nd2"


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def no_reads_under(monkeypatch):
    """``no_reads_under(folder)``: from now on, opening any file under ``folder`` (builtins.open,
    io.open, os.open) fails the test instead of reading it."""

    def guard(folder: Path) -> None:
        forbidden = Path(folder).resolve()

        def check(file) -> None:
            if isinstance(file, int):  # an already open descriptor
                return
            resolved = Path(os.fsdecode(file)).resolve()
            if resolved == forbidden or resolved.is_relative_to(forbidden):
                raise AssertionError(f"{resolved} was opened")

        real_open, real_os_open = builtins.open, os.open

        def guarded_open(file, *args, **kwargs):
            check(file)
            return real_open(file, *args, **kwargs)

        def guarded_os_open(file, *args, **kwargs):
            check(file)
            return real_os_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)

    return guard


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path, nd2_dir: Path) -> Path:
    """A complete, readable ND2 outside the inbox."""
    target = tmp_path / "outside" / "x.nd2"
    target.parent.mkdir()
    shutil.copyfile(nd2_dir / TIMELAPSE, target)
    return target


# -- which files are acquisitions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("exp1.nd2", True),
        ("EXP1.ND2", True),
        ("plate.ome.tif", True),
        ("plate.ome.tiff", True),
        ("Plate.OME.TIFF", True),
        ("/data/2026-12-01/exp1.nd2", True),
        ("scan.czi", True),  # through bioio (the formats extra)
        ("Slide.LIF", True),
        (".exp1.nd2", False),  # hidden: a copy tool's temporary name
        (".exp1.nd2.XyZ12", False),
        ("exp1.nd2.part", False),
        ("plain.tif", False),  # a TIFF that is not OME-TIFF
        ("notes.txt", False),
        ("nd2", False),
    ],
)
def test_is_acquisition(name: str, expected: bool) -> None:
    assert is_acquisition(name) is expected
    assert is_acquisition(Path(name)) is expected


def test_find_acquisitions_walks_sub_folders_skips_hidden_and_sorts(inbox: Path) -> None:
    for rel in [
        "b.nd2",
        "a.ome.tif",
        "notes.txt",
        ".hidden.nd2",
        "sub/c.OME.TIFF",
        "sub/deeper/d.nd2",
        "sub/.rsync-tmp/e.nd2",
        ".sync/f.nd2",
        "z/plain.tif",  # a folder of plain TIFFs: the folder is the acquisition
    ]:
        _touch(inbox / rel)
    found = find_acquisitions(inbox)
    assert found == [
        inbox / "a.ome.tif",
        inbox / "b.nd2",
        inbox / "sub" / "c.OME.TIFF",
        inbox / "sub" / "deeper" / "d.nd2",
        inbox / "z",
    ]
    assert found == sorted(found)
    assert find_acquisitions(inbox / "sub" / "deeper") == [inbox / "sub" / "deeper" / "d.nd2"]


def test_find_acquisitions_of_an_empty_or_missing_folder(inbox: Path) -> None:
    assert find_acquisitions(inbox) == []
    assert find_acquisitions(inbox / "missing") == []


def test_find_acquisitions_lists_symlinks_as_they_are(inbox: Path, outside: Path) -> None:
    (inbox / "link.nd2").symlink_to(outside)
    assert find_acquisitions(inbox) == [inbox / "link.nd2"]


# -- which paths are accepted ------------------------------------------------------------------


def test_resolve_in_inbox_inside_returns_the_path_and_its_root(inbox: Path) -> None:
    acq = _touch(inbox / "2026-12-01" / "exp1.nd2")
    assert resolve_in_inbox(acq, inbox) == (acq.resolve(), inbox.resolve())
    assert resolve_in_inbox(str(acq), str(inbox)) == (acq.resolve(), inbox.resolve())


def test_resolve_in_inbox_with_several_roots_returns_the_one_holding_it(tmp_path: Path) -> None:
    roots = [tmp_path / "scope-a", tmp_path / "scope-b"]
    in_b = _touch(roots[1] / "plate.ome.tif")
    in_a = _touch(roots[0] / "deep" / "exp.nd2")
    assert resolve_in_inbox(in_b, roots) == (in_b.resolve(), roots[1].resolve())
    assert resolve_in_inbox(in_a, tuple(roots)) == (in_a.resolve(), roots[0].resolve())
    stray = _touch(tmp_path / "scope-c" / "exp.nd2")
    with pytest.raises(InboxPathError, match="outside the inbox") as info:
        resolve_in_inbox(stray, roots)
    assert str(roots[0].resolve()) in str(info.value)
    assert str(roots[1].resolve()) in str(info.value)


def test_resolve_in_inbox_refuses_a_relative_path(inbox: Path, monkeypatch) -> None:
    _touch(inbox / "exp1.nd2")
    monkeypatch.chdir(inbox)  # the relative path names a real file in the inbox
    with pytest.raises(InboxPathError, match="not an absolute path") as info:
        resolve_in_inbox("exp1.nd2", inbox)
    assert info.value.path == Path("exp1.nd2")


def test_resolve_in_inbox_refuses_dotdot_escapes_without_reading(
    inbox: Path, outside: Path, no_reads_under
) -> None:
    escaping = inbox / ".." / "outside" / outside.name
    assert escaping.is_file()
    no_reads_under(outside.parent)
    with pytest.raises(InboxPathError, match="outside the inbox") as info:
        resolve_in_inbox(escaping, inbox)
    assert "resolves to" in str(info.value)
    assert info.value.path == escaping


def test_resolve_in_inbox_refuses_a_symlink_out_without_reading(
    inbox: Path, outside: Path, no_reads_under
) -> None:
    link = inbox / "sub" / "looks-inside.nd2"
    link.parent.mkdir()
    link.symlink_to(outside)
    no_reads_under(outside.parent)
    with pytest.raises(InboxPathError, match="outside the inbox") as info:
        resolve_in_inbox(link, inbox)
    assert f"resolves to {outside.resolve()}" in str(info.value)
    assert "nothing read" in str(info.value)


def test_resolve_in_inbox_refuses_a_symlinked_folder_out(
    inbox: Path, outside: Path, no_reads_under
) -> None:
    (inbox / "share").symlink_to(outside.parent, target_is_directory=True)
    no_reads_under(outside.parent)
    with pytest.raises(InboxPathError, match="resolves to"):
        resolve_in_inbox(inbox / "share" / outside.name, inbox)


def test_resolve_in_inbox_refuses_an_outside_directory_named_like_an_acquisition(
    inbox: Path, tmp_path: Path
) -> None:
    # Refused for where it is, before anything looks at what it is.
    folder = tmp_path / "elsewhere" / "x.nd2"
    folder.mkdir(parents=True)
    (inbox / "x.nd2").symlink_to(folder, target_is_directory=True)
    with pytest.raises(InboxPathError, match="outside the inbox"):
        resolve_in_inbox(inbox / "x.nd2", inbox)


def test_the_read_guard_would_notice_a_read(outside: Path, no_reads_under) -> None:
    no_reads_under(outside.parent)
    with pytest.raises(AssertionError, match="was opened"):
        not_ready(outside, quiet_seconds=0, unchanged_for=1)


def test_resolve_in_inbox_accepts_a_symlink_pointing_inside(inbox: Path) -> None:
    real = _touch(inbox / "raw" / "exp1.nd2")
    link = inbox / "today" / "exp1.nd2"
    link.parent.mkdir()
    link.symlink_to(real)
    assert resolve_in_inbox(link, inbox) == (real.resolve(), inbox.resolve())


def test_resolve_in_inbox_follows_an_inbox_root_that_is_a_symlink(tmp_path: Path) -> None:
    real_root = tmp_path / "real-inbox"
    acq = _touch(real_root / "exp1.nd2")
    alias = tmp_path / "inbox-alias"
    alias.symlink_to(real_root, target_is_directory=True)
    assert resolve_in_inbox(alias / "exp1.nd2", alias) == (acq.resolve(), real_root.resolve())


def test_resolve_in_inbox_refuses_a_non_acquisition(inbox: Path) -> None:
    for name in ["notes.txt", ".exp1.nd2", "plain.tif"]:
        path = _touch(inbox / name, b"x")
        with pytest.raises(InboxPathError, match="not an ND2 or OME-TIFF"):
            resolve_in_inbox(path, inbox)


def test_resolve_in_inbox_refuses_a_missing_file_or_a_folder(inbox: Path) -> None:
    with pytest.raises(InboxPathError, match="does not exist") as info:
        resolve_in_inbox(inbox / "gone.nd2", inbox)
    assert info.value.path == inbox / "gone.nd2"
    (inbox / "folder.nd2").mkdir()
    with pytest.raises(InboxPathError, match="not a file"):
        resolve_in_inbox(inbox / "folder.nd2", inbox)


def test_resolve_in_inbox_refuses_a_symlink_loop(inbox: Path) -> None:
    loop = inbox / "loop.nd2"
    loop.symlink_to(loop)
    with pytest.raises(InboxPathError):
        resolve_in_inbox(loop, inbox)


def test_resolve_in_inbox_refuses_the_etc_passwd_example(inbox: Path) -> None:
    with pytest.raises(InboxPathError, match="outside the inbox") as info:
        resolve_in_inbox("/etc/passwd", inbox)
    assert "resolves to" not in str(info.value)


# -- where the outputs go ----------------------------------------------------------------------


def test_output_folder_mirrors_the_sub_folders(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    results = tmp_path / "results"
    assert output_folder(root / "exp1.nd2", root, results) == results / "exp1"
    assert (
        output_folder(root / "2026-12-01" / "plate 3" / "scan.ome.tiff", root, results)
        == results / "2026-12-01" / "plate 3" / "scan"
    )
    assert output_folder(root / "a" / "Run.OME.TIF", root, str(results)) == results / "a" / "Run"


def test_output_folder_of_a_relative_output_root_is_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = output_folder(Path("/inbox/day/exp1.nd2"), Path("/inbox"), "results")
    assert out == tmp_path / "results" / "day" / "exp1"
    assert out.is_absolute()


def test_output_folder_of_a_resolved_acquisition(inbox: Path, tmp_path: Path) -> None:
    acq = _touch(inbox / "day" / "exp1.nd2")
    resolved, root = resolve_in_inbox(acq, inbox)
    assert output_folder(resolved, root, tmp_path / "out") == tmp_path / "out" / "day" / "exp1"


# -- when an acquisition is complete -----------------------------------------------------------


def test_not_ready_a_fresh_file_is_still_being_written(tmp_path: Path, nd2_dir: Path) -> None:
    fresh = tmp_path / "exp1.nd2"
    shutil.copyfile(nd2_dir / TIMELAPSE, fresh)
    os.utime(fresh)  # modified just now
    reason = not_ready(fresh, quiet_seconds=30)
    assert reason is not None and reason.startswith("still being written")
    assert "of 30 s" in reason
    # A watcher's own count wins over the file's time, also for a complete file.
    reason = not_ready(fresh, quiet_seconds=5, unchanged_for=2)
    assert reason is not None and reason.startswith("still being written")


def test_not_ready_an_old_complete_file_is_ready(tmp_path: Path, nd2_dir: Path) -> None:
    old = tmp_path / "exp1.nd2"
    shutil.copyfile(nd2_dir / TIMELAPSE, old)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert not_ready(old, quiet_seconds=30) is None


def test_not_ready_a_truncated_nd2_does_not_open_yet(tmp_path: Path, nd2_dir: Path) -> None:
    data = (nd2_dir / TIMELAPSE).read_bytes()
    truncated = tmp_path / "truncated.nd2"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    reason = not_ready(truncated, quiet_seconds=0.5, unchanged_for=2)
    assert reason is not None and reason.startswith("does not open yet"), reason
    complete = tmp_path / "complete.nd2"
    complete.write_bytes(data)
    assert not_ready(complete, quiet_seconds=0.5, unchanged_for=2) is None


def test_not_ready_a_truncated_ome_tiff_does_not_open_yet(tmp_path: Path) -> None:
    info = make_synthetic(
        tmp_path / "synthetic", n_fovs=1, n_frames=4, size=64, n_cells=1, write_labels=False
    )
    data = info.path.read_bytes()
    truncated = tmp_path / "truncated.ome.tif"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    reason = not_ready(truncated, quiet_seconds=0.5, unchanged_for=2)
    assert reason is not None and reason.startswith("does not open yet"), reason
    assert not_ready(info.path, quiet_seconds=0.5, unchanged_for=2) is None


def test_not_ready_an_empty_file_does_not_open(tmp_path: Path) -> None:
    empty = _touch(tmp_path / "empty.nd2")
    reason = not_ready(empty, quiet_seconds=0.5, unchanged_for=2)
    assert reason is not None
    assert reason.startswith(("does not open yet", "cannot be read yet")), reason


# -- what was processed ------------------------------------------------------------------------


@pytest.fixture
def version(inbox: Path) -> FileVersion:
    return FileVersion.of(_touch(inbox / "exp1.nd2", b"0123456789"))


def test_file_version_of_resolves_symlinks(inbox: Path) -> None:
    real = _touch(inbox / "exp1.nd2", b"0123456789")
    link = inbox / "link.nd2"
    link.symlink_to(real)
    st = real.stat()
    assert FileVersion.of(link) == FileVersion(str(real.resolve()), 10, st.st_mtime_ns)
    assert FileVersion.of(link).describe().startswith(f"{real.resolve()} (0.0 MB, modified ")


def test_record_processed_then_is_processed(tmp_path: Path, version: FileVersion) -> None:
    out = tmp_path / "results" / "exp1"  # created by the record
    written = record_processed(out, version, flow_run="abc", status="Completed")
    assert written == out / PROCESSED_RECORD
    assert is_processed(out, version)
    record = yaml.safe_load(written.read_text(encoding="utf-8"))
    assert record["path"] == version.path
    assert record["size"] == version.size
    assert record["mtime_ns"] == version.mtime_ns
    assert record["flow_run"] == "abc" and record["status"] == "Completed"
    assert "processed" in record


def test_is_processed_is_false_for_another_version(tmp_path: Path, version: FileVersion) -> None:
    record_processed(tmp_path, version)
    assert not is_processed(tmp_path, FileVersion(version.path, version.size + 1, version.mtime_ns))
    assert not is_processed(tmp_path, FileVersion(version.path, version.size, version.mtime_ns + 1))
    assert not is_processed(tmp_path, FileVersion("/elsewhere/exp1.nd2", version.size, 1))
    assert is_processed(tmp_path, version)


def test_is_processed_after_the_file_was_replaced(tmp_path: Path, inbox: Path) -> None:
    acq = _touch(inbox / "exp1.nd2", b"first")
    record_processed(tmp_path, FileVersion.of(acq))
    acq.write_bytes(b"second version")
    assert not is_processed(tmp_path, FileVersion.of(acq))


def test_is_processed_without_a_record(tmp_path: Path, version: FileVersion) -> None:
    assert not is_processed(tmp_path, version)
    assert not is_processed(tmp_path / "missing", version)
    (tmp_path / PROCESSED_RECORD).mkdir()  # unreadable: a folder in its place
    assert not is_processed(tmp_path, version)


@pytest.mark.parametrize(
    "content",
    [
        b"path: [unclosed\n",  # not YAML
        b": : {[\n",
        b"- a list\n- not a mapping\n",
        b"just a string\n",
        b"",  # empty: None
        b"size: 10\n",  # a mapping without the version
        b"\xff\xfe\x00\x81 not UTF-8 \xc3\x28",  # garbage bytes (a damaged disk)
    ],
    ids=["unclosed", "not-yaml", "list", "string", "empty", "no-version", "not-utf8"],
)
def test_is_processed_with_a_corrupt_record(
    tmp_path: Path, version: FileVersion, content: bytes
) -> None:
    (tmp_path / PROCESSED_RECORD).write_bytes(content)
    assert not is_processed(tmp_path, version)


def test_record_processed_leaves_no_temporary_files(tmp_path: Path, version: FileVersion) -> None:
    out = tmp_path / "out"
    record_processed(out, version)
    record_processed(out, version, run=2)  # replaces the first
    assert sorted(p.name for p in out.iterdir()) == [PROCESSED_RECORD]
    assert yaml.safe_load((out / PROCESSED_RECORD).read_text())["run"] == 2


def test_record_processed_failing_keeps_the_old_record(
    tmp_path: Path, version: FileVersion, monkeypatch
) -> None:
    out = tmp_path / "out"
    record_processed(out, version, run=1)
    before = (out / PROCESSED_RECORD).read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # the last step of the atomic write
    with pytest.raises(OSError, match="disk full"):
        record_processed(out, version, run=2)
    monkeypatch.undo()
    assert (out / PROCESSED_RECORD).read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [PROCESSED_RECORD]
    assert is_processed(out, version)


# -- what was announced ------------------------------------------------------------------------


def test_ledger_persists_across_instances(tmp_path: Path, inbox: Path) -> None:
    path = tmp_path / "state" / "pyama-flow" / "watch.json"  # parents created on first add
    ledger = AnnouncedLedger(path)
    assert len(ledger) == 0 and not path.exists()
    a = FileVersion.of(_touch(inbox / "a.nd2", b"a" * 10))
    b = FileVersion.of(_touch(inbox / "b.nd2", b"b" * 20))
    ledger.add(a)
    ledger.add(b)
    again = AnnouncedLedger(path)
    assert len(again) == 2
    assert again.has(a) and again.has(b)
    assert not again.has(FileVersion(str(inbox / "c.nd2"), 10, a.mtime_ns))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["announced"][a.path]["size"] == 10
    assert data["announced"][b.path]["mtime_ns"] == b.mtime_ns
    assert "announced" in data["announced"][a.path]
    assert sorted(p.name for p in path.parent.iterdir()) == [".watch.json.lock", "watch.json"]


def test_ledger_a_replaced_file_is_new(tmp_path: Path, inbox: Path) -> None:
    ledger = AnnouncedLedger(tmp_path / "watch.json")
    first = FileVersion.of(_touch(inbox / "a.nd2", b"a" * 10))
    ledger.add(first)
    assert not ledger.has(FileVersion(first.path, 11, first.mtime_ns))  # new size
    assert not ledger.has(FileVersion(first.path, first.size, 2))  # new time
    second = FileVersion(first.path, 11, 2)
    ledger.add(second)  # replaces the entry for that path
    reopened = AnnouncedLedger(ledger.path)
    assert len(reopened) == 1
    assert reopened.has(second) and not reopened.has(first)


def test_watchers_sharing_a_ledger_keep_each_others_entries(tmp_path: Path, inbox: Path) -> None:
    path = tmp_path / "watch.json"
    one, two = AnnouncedLedger(path), AnnouncedLedger(path)  # two watchers, both started
    a = FileVersion.of(_touch(inbox / "a.nd2", b"a"))
    b = FileVersion.of(_touch(inbox / "b.nd2", b"b"))
    one.add(a)
    two.add(b)  # two never saw a: it must not write a out of the file
    assert AnnouncedLedger(path).has(a) and AnnouncedLedger(path).has(b)
    # Entries of files that are gone are dropped at the next write: it does not grow forever.
    Path(a.path).unlink()
    c = FileVersion.of(_touch(inbox / "c.nd2", b"c"))
    one.add(c)
    assert sorted(json.loads(path.read_text())["announced"]) == [b.path, c.path]


@pytest.mark.parametrize(
    "content",
    ["{not json", "", '{"announced": {"/a.nd2": ', "\ufffd\x00"],
    ids=["not-json", "empty", "cut-short", "binary"],
)
def test_ledger_corrupt_file_raises_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "watch.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InboxPathError, match="ledger cannot be read") as info:
        AnnouncedLedger(path)
    assert info.value.path == path
    assert str(path) in str(info.value)


def test_ledger_undecodable_file_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "watch.json"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InboxPathError, match="ledger cannot be read") as info:
        AnnouncedLedger(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    ["[]", "null", "42", '{"announced": [1]}', '{"announced": {"/a.nd2": 1}}'],
    ids=["list", "null", "number", "entries-list", "entry-number"],
)
def test_ledger_valid_json_of_the_wrong_shape_raises_naming_it(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "watch.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InboxPathError) as info:
        AnnouncedLedger(path)
    assert str(path) in str(info.value)


def test_ledger_unannounced(inbox: Path, tmp_path: Path) -> None:
    a = _touch(inbox / "a.nd2", b"a")
    b = _touch(inbox / "sub" / "b.nd2", b"b")
    link = inbox / "link-to-a.nd2"
    link.symlink_to(a)
    ledger = AnnouncedLedger(tmp_path / "watch.json")
    assert list(ledger.unannounced([a, b, link])) == [a, b, link]
    ledger.add(FileVersion.of(a))
    # The link names the announced version of a; a missing path is skipped, not an error.
    assert list(ledger.unannounced([a, b, link, inbox / "gone.nd2"])) == [b]
    a.write_bytes(b"a, replaced")
    assert list(AnnouncedLedger(ledger.path).unannounced([a, b])) == [a, b]


# -- what was checked is what is read ----------------------------------------------------------


def test_a_folder_swapped_for_a_symlink_after_the_check_is_refused(tmp_path: Path) -> None:
    """The path is checked, then its folder is replaced by a symlink to a folder outside the
    inbox holding a file of the same name: neither pinning nor any later open reads it."""
    inbox, secret = tmp_path / "inbox", tmp_path / "secret"
    checked = make_synthetic(inbox / "day1", n_fovs=1, n_frames=2, size=64, n_cells=1).path
    make_synthetic(secret, n_fovs=1, n_frames=2, size=64, n_cells=1, seed=9)
    acquisition, root = resolve_in_inbox(checked, inbox)
    pinned = pin_in_inbox(acquisition, root)
    assert not_ready(acquisition, 0, pinned=pinned) is None

    shutil.move(inbox / "day1", tmp_path / "day1-moved")
    (inbox / "day1").symlink_to(secret, target_is_directory=True)
    with pytest.raises(InboxPathError, match="is no longer the file that was checked"):
        open_acquisition(acquisition, pinned=pinned)
    with pytest.raises(InboxPathError, match="is no longer the file that was checked"):
        not_ready(acquisition, 0, pinned=pinned)
    with pytest.raises(InboxPathError, match="changed while it was checked"):
        pin_in_inbox(acquisition, root)  # a check made now would not pin the outside file


def test_a_pinned_acquisition_reopens_in_another_process_with_its_pin(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    path = make_synthetic(inbox, n_fovs=1, n_frames=2, size=64, n_cells=1).path
    pinned = pin_in_inbox(*resolve_in_inbox(path, inbox))
    with open_acquisition(path, pinned=pinned) as acq:
        sent = pickle.dumps(acq)  # what a worker receives: path, options and the pin
    path.rename(tmp_path / "old.ome.tif")  # kept: its inode cannot be reused meanwhile
    make_synthetic(inbox, n_fovs=1, n_frames=2, size=64, n_cells=1, seed=5)  # another file
    with pytest.raises(InboxPathError, match="is no longer the file that was checked"):
        pickle.loads(sent)


def test_event_paths_inside_hidden_folders_are_refused(inbox: Path) -> None:
    staged = _touch(inbox / ".rsync-partial" / "exp1.nd2", b"x")
    with pytest.raises(InboxPathError, match="inside a hidden folder"):
        resolve_in_inbox(staged, inbox)
