"""The run record ``run.yaml``: which input, software and parameters, how long each step took.

A reviewer (or the lab member re-analysing data a year later) asks "what produced these
traces?". Every run appends one entry to ``<out>/run.yaml``: the input's identity, library
versions, the parameters, per-FOV per-stage timings and a summary. Re-runs add history rather
than overwrite it, so a folder processed in several passes (other FOVs, other channels) keeps
the record of each pass.

``pyama_lib`` must not import Prefect, so versions are read with ``importlib.metadata`` only.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import socket
import sys
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from pyama_lib.core.errors import RunRecordError
from pyama_lib.io.atomic import atomic_write_text
from pyama_lib.io.plain import iso_time, plain

RUN_YAML = "run.yaml"
_FORMAT_VERSION = 1
_log = logging.getLogger(__name__)

# Distribution names (as pip knows them), in the order a reader scans for them.
_DISTRIBUTIONS = (
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
)

# run.yaml grows by one entry per run and is read and written several times per command:
# libyaml's safe loader and dumper, where installed, are several times faster than pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError:
        # libyaml refuses the escapes pure-Python YAML writes for non-UTF-8 file names
        # ("\udce9"): such a record is still good, not unreadable.
        return yaml.safe_load(text)


Timing = float | str  # seconds, or "skipped" (outputs already complete)


# -- versions -------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the results.

    Read from installed distribution metadata, never by importing the package (Prefect in
    particular must stay out of ``pyama_lib``). Libraries that are not installed are omitted.
    """
    versions: dict[str, str] = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# -- run record -----------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One run's provenance, as stored in ``run.yaml``.

    ``timings`` maps FOV index to ``{stage: seconds or "skipped"}``; ``status`` is
    ``"running"``, ``"completed"`` or ``"failed"``. ``settings`` holds how the run was executed
    (runner, workers, batch size, retries, reader options, orchestrator run id): they do not
    change the numbers, but a reviewer comparing timings or retracing a run needs them.
    ``warnings`` are what the run said about its input or output folder (assumed frame times,
    results set aside) that a reader of its numbers must know.
    """

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: str = field(default_factory=iso_time)
    finished: str | None = None
    status: str = "running"
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    hostname: str = field(default_factory=socket.gethostname)
    parameters: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=library_versions)
    timings: dict[int, dict[str, Timing]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def record_timing(self, fov: int, stage: str, seconds: float) -> None:
        """Store how long ``stage`` took on ``fov`` (rounded to ms for a readable file)."""
        self.timings.setdefault(int(fov), {})[stage] = round(float(seconds), 3)

    def mark_skipped(self, fov: int, stage: str) -> None:
        """Record that ``stage`` on ``fov`` found complete outputs and did nothing."""
        self.timings.setdefault(int(fov), {})[stage] = "skipped"

    def finish(self, status: str = "completed", summary: dict[str, Any] | None = None) -> None:
        """Stamp the end time and status, merging ``summary`` into the record's summary."""
        self.finished = iso_time()
        self.status = status
        if summary:
            self.summary.update(summary)

    def to_dict(self) -> dict[str, Any]:
        """YAML-safe plain dict, FOV keys sorted."""
        data = plain(asdict(self), "run record")
        data["timings"] = {int(k): data["timings"][k] for k in sorted(data["timings"])}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored and
        missing ones (from older versions, e.g. ``settings``) take their defaults."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["timings"] = {
            int(fov): dict(stages or {}) for fov, stages in (data.get("timings") or {}).items()
        }
        for name in ("parameters", "settings", "summary", "versions"):
            kwargs[name] = dict(data.get(name) or {})
        kwargs["command"] = list(data.get("command") or [])
        kwargs["warnings"] = [str(w) for w in data.get("warnings") or []]
        return cls(**kwargs)


def load_run_yaml(out_dir: str | Path) -> list[RunRecord]:
    """All runs recorded in ``<out_dir>/run.yaml``, oldest first; [] when there is none.

    Raises
    ------
    RunRecordError
        The file exists but is not a PyAMA Flow run record.
    """
    path = Path(out_dir) / RUN_YAML
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RunRecordError(path, f"cannot read run record ({exc.strerror or exc})") from exc
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise RunRecordError(
            path, f"not valid YAML ({exc}); move it aside to start a new record"
        ) from exc
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise RunRecordError(path, "no 'runs' list; this is not a PyAMA Flow run record")
    try:
        return [RunRecord.from_dict(entry) for entry in data["runs"]]
    except (TypeError, ValueError, AttributeError) as exc:
        raise RunRecordError(path, f"malformed run entry ({exc})") from exc


def write_run_yaml(record: RunRecord, out_dir: str | Path) -> Path:
    """Add ``record`` to ``<out_dir>/run.yaml``, or update the entry with the same ``run_id``.

    Call it when a run starts and again when it ends: the entry is replaced in place, other
    runs are kept, newest last. Writers are serialised by the output folder's run lock
    (:class:`pyama_lib.io.lock.OutputLock`). An unreadable existing file is not thrown away:
    it is renamed to ``run.yaml.unreadable-<time>`` and a warning is logged.

    Returns
    -------
    Path
        The run record's path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUN_YAML
    try:
        runs = load_run_yaml(out)
    except RunRecordError as exc:
        aside = path.with_name(f"{RUN_YAML}.unreadable-{datetime.now():%Y%m%dT%H%M%S}")
        os.replace(path, aside)
        _log.warning("%s; kept it as %s and started a new record", exc, aside)
        runs = []
    entries = [r.to_dict() for r in runs]
    new = record.to_dict()
    for i, entry in enumerate(entries):
        if entry["run_id"] == record.run_id:
            entries[i] = new
            break
    else:
        entries.append(new)
    document = {"format_version": _FORMAT_VERSION, "runs": entries}
    try:
        text = yaml.dump(document, Dumper=_DUMPER, sort_keys=False, allow_unicode=True)
    except UnicodeEncodeError:  # a file name that is not UTF-8: only pure Python escapes it
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
    return path
