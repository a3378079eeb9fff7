"""Provenance: input identity on real files, versions, run.yaml history."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path

import dask
import nd2
import numpy as np
import pandas
import pyarrow
import pytest
import scipy
import skimage
import tifffile
import yaml
import zarr

import pyama_lib
from pyama_lib.core.errors import AcquisitionNotFoundError, RunRecordError, UnsupportedFormatError
from pyama_lib.io.identity import FINGERPRINT_CHUNK, identity_key, input_identity
from pyama_lib.io.plain import iso_time
from pyama_lib.pipeline.run_record import (
    RUN_YAML,
    RunRecord,
    library_versions,
    load_run_yaml,
    write_run_yaml,
)

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _random_file(path: Path, size: int, seed: int = 0) -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    return data


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_input_identity_large_file_values(tmp_path: Path) -> None:
    size = 3 * MIB + 123
    path = tmp_path / "acq.nd2"
    data = _random_file(path, size)
    ident = input_identity(path)

    assert ident["path"] == str(path.absolute())
    assert ident["size"] == size
    mtime = datetime.fromisoformat(ident["mtime"])
    assert mtime.tzinfo is not None
    assert abs(mtime.timestamp() - path.stat().st_mtime) < 1.0
    expected = hashlib.sha256(
        size.to_bytes(8, "little") + data[:FINGERPRINT_CHUNK] + data[-FINGERPRINT_CHUNK:]
    ).hexdigest()
    assert ident["fingerprint"] == f"sha256:{expected}"


def test_fingerprint_sees_head_and_tail_not_middle(tmp_path: Path) -> None:
    path = tmp_path / "acq.nd2"
    size = 3 * MIB
    _random_file(path, size)
    base = input_identity(path)

    _flip(path, size - 1)  # last byte: trailer/metadata region
    tail = input_identity(path)
    assert tail["fingerprint"] != base["fingerprint"]
    assert identity_key(tail) != identity_key(base)
    _flip(path, size - 1)  # restore
    assert input_identity(path)["fingerprint"] == base["fingerprint"]

    _flip(path, 0)  # first byte: header
    assert input_identity(path)["fingerprint"] != base["fingerprint"]
    _flip(path, 0)

    # The documented trade-off: pixel data in the middle is not read.
    _flip(path, size // 2)
    assert input_identity(path)["fingerprint"] == base["fingerprint"]

    with path.open("ab") as fh:  # still growing: size and tail change
        fh.write(b"\0")
    assert input_identity(path)["fingerprint"] != base["fingerprint"]


def test_small_file_fingerprint_covers_everything(tmp_path: Path) -> None:
    path = tmp_path / "small.tif"
    data = _random_file(path, MIB + 10, seed=1)
    ident = input_identity(path)
    expected = hashlib.sha256(len(data).to_bytes(8, "little") + data).hexdigest()
    assert ident["fingerprint"] == f"sha256:{expected}"
    _flip(path, len(data) // 2)
    assert input_identity(path)["fingerprint"] != ident["fingerprint"]


def test_identity_key_stable_and_location_independent(tmp_path: Path) -> None:
    path = tmp_path / "a.nd2"
    _random_file(path, 2 * MIB + 5, seed=2)
    first = input_identity(path)
    key = identity_key(first)
    assert len(key) == 16 and int(key, 16) >= 0
    assert identity_key(input_identity(path)) == key

    moved = tmp_path / "elsewhere" / "b.nd2"
    moved.parent.mkdir()
    shutil.copyfile(path, moved)  # new path, new mtime, same content
    assert identity_key(input_identity(moved)) == key

    other = tmp_path / "c.nd2"
    _random_file(other, 2 * MIB + 5, seed=3)
    assert identity_key(input_identity(other)) != key


def test_input_identity_errors(tmp_path: Path) -> None:
    with pytest.raises(AcquisitionNotFoundError, match="missing.nd2"):
        input_identity(tmp_path / "missing.nd2")
    with pytest.raises(UnsupportedFormatError, match="not a file"):
        input_identity("/dev/null")  # a device: neither an acquisition file nor a folder


def test_library_versions_match_what_the_modules_report() -> None:
    """Checked against independent facts: the running interpreter, each imported module's own
    ``__version__`` and the version in pyproject.toml (not the metadata lookup the code does)."""
    versions = library_versions()
    # every hard dependency (pyproject.toml) is installed, so none may be missing
    assert set(versions) == {
        "python",
        "pyama-flow",
        "numpy",
        "scipy",
        "scikit-image",
        "zarr",
        "nd2",
        "tifffile",
        "pandas",
        "pyarrow",
        "pyyaml",
        "prefect",
        "prefect-dask",
        "dask",
    }
    assert versions["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert versions["pyama-flow"] == project["version"] == pyama_lib.__version__
    modules = {
        "numpy": np,
        "scipy": scipy,
        "scikit-image": skimage,
        "zarr": zarr,
        "nd2": nd2,
        "tifffile": tifffile,
        "pandas": pandas,
        "pyarrow": pyarrow,
        "pyyaml": yaml,
        "dask": dask,
    }
    for dist, module in modules.items():
        assert versions[dist] == module.__version__, dist


def test_library_versions_does_not_import_prefect() -> None:
    code = (
        "import json, sys; from pyama_lib.pipeline.run_record import library_versions; "
        "v = library_versions(); print(json.dumps([v, 'prefect' in sys.modules]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    versions, prefect_imported = json.loads(out.stdout)
    assert prefect_imported is False
    # ... yet Prefect's version is recorded, and it is the one Prefect itself reports
    import prefect
    import prefect_dask

    assert versions["prefect"] == prefect.__version__
    assert versions["prefect-dask"] == prefect_dask.__version__


def _record(tmp_path: Path, run_id: str) -> RunRecord:
    acq = tmp_path / "acq.nd2"
    if not acq.exists():
        _random_file(acq, 4096)
    rec = RunRecord(
        run_id=run_id,
        command=["pyama", "process", str(acq)],
        parameters={
            "pc_channel": 0,
            "fl_channels": (1, 2),
            "fov_range": "0-5, 7",
            "min_iou": np.float32(0.1),
            "out": tmp_path / "out",
        },
        input=input_identity(acq),
    )
    rec.record_timing(0, "segment", 1.23456)
    rec.mark_skipped(0, "copy")
    rec.record_timing(np.int64(3), "track", 0.5)
    return rec


def test_run_yaml_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rec = _record(tmp_path, "run-a")
    path = write_run_yaml(rec, out)  # as flows.support.reporting does: once at start ...
    assert path == out / RUN_YAML
    (started,) = load_run_yaml(out)
    assert started.status == "running" and started.finished is None
    rec.finish(summary={"n_fovs": 2, "n_cells": 57})
    assert write_run_yaml(rec, out) == path  # ... and again at the end, same record

    (loaded,) = load_run_yaml(out)
    assert loaded.run_id == "run-a"
    assert loaded.status == "completed"
    assert loaded.parameters == {
        "pc_channel": 0,
        "fl_channels": [1, 2],
        "fov_range": "0-5, 7",
        "min_iou": pytest.approx(0.1),
        "out": str(tmp_path / "out"),
    }
    assert loaded.timings == {0: {"segment": 1.235, "copy": "skipped"}, 3: {"track": 0.5}}
    assert loaded.input == rec.input and loaded.input["size"] == 4096
    assert loaded.versions == rec.versions
    assert loaded.summary == {"n_fovs": 2, "n_cells": 57}
    assert datetime.fromisoformat(loaded.finished) >= datetime.fromisoformat(loaded.started)
    assert loaded.to_dict() == rec.to_dict()

    raw = yaml.safe_load(path.read_text())
    assert raw["format_version"] == 1
    assert list(raw["runs"][0]["timings"]) == [0, 3]  # FOV keys stay ints


def test_run_yaml_history_appended_and_updated(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _record(tmp_path, "run-1")
    write_run_yaml(first, out)  # at start: status running
    assert [r.status for r in load_run_yaml(out)] == ["running"]
    first.finish()
    write_run_yaml(first, out)  # at end: same entry updated, not duplicated
    assert [(r.run_id, r.status) for r in load_run_yaml(out)] == [("run-1", "completed")]

    earlier = load_run_yaml(out)[0].to_dict()

    # A second run in the same folder, written as the flows' reporting does: at start, then end.
    second = _record(tmp_path, "run-2")
    assert second.status == "running" and second.finished is None
    write_run_yaml(second, out)
    runs = load_run_yaml(out)
    assert [(r.run_id, r.status) for r in runs] == [("run-1", "completed"), ("run-2", "running")]
    assert runs[1].finished is None
    assert runs[0].to_dict() == earlier
    second.finish(summary={"n_fovs": 2, "wall_seconds": 12.5})
    write_run_yaml(second, out)
    runs = load_run_yaml(out)
    assert [(r.run_id, r.status) for r in runs] == [("run-1", "completed"), ("run-2", "completed")]
    assert runs[0].to_dict() == earlier  # the earlier run's entry is kept as it was
    assert runs[1].to_dict() == second.to_dict()
    assert runs[1].finished is not None and runs[1].summary == {"n_fovs": 2, "wall_seconds": 12.5}
    leftovers = sorted(p.name for p in out.iterdir())
    assert leftovers == [RUN_YAML]  # no temporary files left behind


def test_default_record_fields() -> None:
    a, b = RunRecord(), RunRecord()
    assert a.run_id != b.run_id
    assert a.status == "running" and a.finished is None
    assert a.command == list(sys.argv)
    assert a.versions["numpy"] == np.__version__


def test_load_missing_and_corrupt_run_yaml(tmp_path: Path) -> None:
    assert load_run_yaml(tmp_path / "nowhere") == []
    out = tmp_path / "out"
    out.mkdir()
    (out / RUN_YAML).write_text("runs: [unclosed\n")
    with pytest.raises(RunRecordError, match="not valid YAML"):
        load_run_yaml(out)
    (out / RUN_YAML).write_text("just: a mapping\n")
    with pytest.raises(RunRecordError, match="no 'runs' list"):
        load_run_yaml(out)

    # Writing never discards an unreadable record: it is kept aside.
    write_run_yaml(_record(tmp_path, "run-x"), out)
    assert [r.run_id for r in load_run_yaml(out)] == ["run-x"]
    aside = [p for p in out.iterdir() if p.name.startswith(f"{RUN_YAML}.unreadable-")]
    assert len(aside) == 1 and aside[0].read_text() == "just: a mapping\n"


def test_settings_and_start_time_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    start = datetime(2025, 3, 4, 5, 6, 7).timestamp()
    rec = _record(tmp_path, "run-s")
    rec.started = iso_time(start)
    rec.settings = {"runner": "process", "n_workers": 4, "retries": None, "reader_options": {}}
    write_run_yaml(rec, out)  # at start, then at the end (flows.support.reporting)
    (running,) = load_run_yaml(out)
    assert running.settings == rec.settings and running.finished is None
    rec.finish()
    write_run_yaml(rec, out)
    (loaded,) = load_run_yaml(out)
    assert loaded.settings == {
        "runner": "process",
        "n_workers": 4,
        "retries": None,
        "reader_options": {},
    }
    started = datetime.fromisoformat(loaded.started)
    assert started.timestamp() == start and started.tzinfo is not None
    assert datetime.fromisoformat(loaded.finished) > started


def test_older_run_yaml_without_settings_still_loads(tmp_path: Path) -> None:
    # An entry as written before run records had settings.
    (tmp_path / RUN_YAML).write_text(
        "format_version: 1\n"
        "runs:\n"
        "- run_id: 0123abcd\n"
        "  started: '2025-01-02T03:04:05+01:00'\n"
        "  finished: '2025-01-02T03:09:05+01:00'\n"
        "  status: completed\n"
        "  command: [pyama, process, acq.nd2]\n"
        "  hostname: scope-pc\n"
        "  parameters: {fovs: [0]}\n"
        "  input: null\n"
        "  versions: {python: 3.11.9}\n"
        "  timings: {0: {copy: 1.5}}\n"
        "  summary: {}\n"
    )
    (old,) = load_run_yaml(tmp_path)
    assert old.settings == {} and old.timings == {0: {"copy": 1.5}}
    assert old.started == "2025-01-02T03:04:05+01:00" and old.hostname == "scope-pc"
    # Rewriting the file (a new run appended) keeps the old entry and gives it the new field.
    write_run_yaml(RunRecord(run_id="next"), tmp_path)
    first, second = load_run_yaml(tmp_path)
    assert first.run_id == "0123abcd" and first.settings == {} and second.run_id == "next"


def test_a_file_name_that_is_not_utf8_is_recorded_and_read_back(tmp_path):
    """libyaml cannot write or read the escapes such a name needs; pure-Python YAML can."""
    from pyama_lib.pipeline.run_record import RunRecord, load_run_yaml, write_run_yaml

    name = os.fsdecode(b"/data/caf\xe9.nd2")  # a Latin-1 name on an SMB share
    write_run_yaml(RunRecord(parameters={"input": name}), tmp_path)
    write_run_yaml(RunRecord(parameters={"input": "/data/b.nd2"}), tmp_path)  # reads, appends
    records = load_run_yaml(tmp_path)
    assert [r.parameters["input"] for r in records] == [name, "/data/b.nd2"]
    assert not list(tmp_path.glob("run.yaml.unreadable*"))
