"""``processing_results.yaml``: PyAMA's index of a run's outputs, read, written and merged.

The file sits at ``<out>/processing_results.yaml`` and is laid out exactly like PyAMA's: keys
``output_dir, channels {pc, fl}, results_paths, params, time_units`` in that order, block style,
FOV keys written as strings (PyAMA writes ``str(fov)``, so YAML shows ``'0':``), every per-FOV
key present (``pc: null``, ``fl_corrected: []`` when unset), entries as ``[channel, path]``::

    results_paths:
      '0':
        traces_csv:
        - - 1
          - /data/out/fov_000/exp_fov_000_traces_ch_1.csv

Paths are written absolute, as PyAMA writes them, so PyAMA's reader finds them unchanged. When
the folder has moved, :func:`load_results` re-roots them under the folder the YAML is loaded
from: relative to the recorded ``output_dir`` when the path lay under it (this also covers
Zarr arrays nested one level deeper than PyAMA's ``fov_XXX/file``), else PyAMA's rule of keeping
the last two path parts. Windows paths written by PyAMA on a lab PC are re-rooted the same way.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

import yaml

from pyama_lib.core.errors import ParamsError, ResultsFileError
from pyama_lib.core.selection import Channels
from pyama_lib.io.atomic import atomic_target
from pyama_lib.io.plain import plain

RESULTS_FILE_NAME = "processing_results.yaml"
SINGLE_KEYS: tuple[str, ...] = ("pc", "seg", "seg_labeled")
MULTI_KEYS: tuple[str, ...] = ("fl", "fl_corrected", "traces_csv")
FOV_KEYS: tuple[str, ...] = ("pc", "fl", "seg", "seg_labeled", "fl_corrected", "traces_csv")
_TOP_KEYS = ("output_dir", "channels", "results_paths", "params", "time_units")
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")

ChannelPath = tuple[int, Path]


@dataclass(slots=True)
class FovResults:
    """Output files of one FOV, each tagged with the channel it belongs to."""

    pc: ChannelPath | None = None
    fl: list[ChannelPath] = field(default_factory=list)
    seg: ChannelPath | None = None
    seg_labeled: ChannelPath | None = None
    fl_corrected: list[ChannelPath] = field(default_factory=list)
    traces_csv: list[ChannelPath] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-FOV keys written by other tools; kept verbatim so a merge never drops them."""

    def put(self, key: str, channel: int, path: str | Path) -> None:
        """Record ``path`` under ``key`` (e.g. ``"fl"``), replacing that channel's old entry."""
        entry = (int(channel), Path(path))
        if key in SINGLE_KEYS:
            setattr(self, key, entry)
        elif key in MULTI_KEYS:
            kept = [e for e in getattr(self, key) if e[0] != entry[0]]
            setattr(self, key, sorted([*kept, entry], key=lambda e: e[0]))
        else:
            raise KeyError(f"unknown results key {key!r}; expected one of {FOV_KEYS}")


@dataclass(slots=True)
class ProcessingResults:
    """Contents of ``processing_results.yaml``. Relative paths are relative to ``output_dir``."""

    output_dir: Path
    channels: Channels = field(default_factory=lambda: Channels(pc=None))
    results_paths: dict[int, FovResults] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    time_units: str = "min"
    extra: dict[str, Any] = field(default_factory=dict)
    """Top-level keys written by other tools, kept verbatim."""

    def fov(self, fov: int) -> FovResults:
        """Return the entry of ``fov``, creating an empty one."""
        return self.results_paths.setdefault(int(fov), FovResults())

    def traces_csv(self, fov: int, channel: int) -> Path | None:
        """Return the traces CSV recorded for ``fov`` and ``channel``, if any."""
        entry = self.results_paths.get(int(fov))
        for ch, path in entry.traces_csv if entry else []:
            if ch == int(channel):
                return path
        return None


def results_file_path(path_or_dir: str | Path) -> Path:
    """Return the YAML file for an output folder, or ``path_or_dir`` itself if it is a file."""
    path = Path(path_or_dir)
    return path if path.suffix in (".yaml", ".yml") else path / RESULTS_FILE_NAME


# -- loading ----------------------------------------------------------------------------------


def load_results(path_or_dir: str | Path) -> ProcessingResults:
    """Load ``processing_results.yaml`` (or the one inside a folder), re-rooting moved paths.

    The returned ``output_dir`` is the folder the file was loaded from.

    Raises
    ------
    ResultsFileError
        If the file is missing, is not valid YAML or does not have PyAMA's structure.
    """
    path = results_file_path(path_or_dir)
    if not path.is_file():
        raise ResultsFileError(path, "no processing results here; run processing first")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ResultsFileError(
            path, f"corrupt YAML ({exc}); fix it or move it aside and re-run processing"
        ) from exc
    if not isinstance(data, Mapping):
        raise ResultsFileError(
            path, "not a processing results file (expected a mapping at the top level)"
        )
    try:
        return _from_dict(data, path.parent.absolute())
    except _BadContent as exc:
        raise ResultsFileError(
            path, f"{exc}; fix it or move it aside and re-run processing"
        ) from None


class _BadContent(ValueError):
    """Internal: a structural problem, turned into ResultsFileError naming the file."""


def _from_dict(data: Mapping[str, Any], here: Path) -> ProcessingResults:
    recorded = _pure_path(data["output_dir"]) if data.get("output_dir") else None
    block = data.get("results_paths", data.get("results")) or {}
    if not isinstance(block, Mapping):
        raise _BadContent("'results_paths' is not a mapping of FOV to outputs")
    results: dict[int, FovResults] = {}
    for fov_key, fov_data in block.items():
        fov = _int(fov_key, f"results_paths key {fov_key!r}")
        results[fov] = _fov_from_dict(fov_data or {}, f"results_paths[{fov}]", here, recorded)
    params = data.get("params") or {}
    if not isinstance(params, Mapping):
        raise _BadContent("'params' is not a mapping")
    return ProcessingResults(
        output_dir=here,
        channels=_channels_from_dict(data.get("channels") or {}),
        results_paths=results,
        params=dict(params),
        time_units=str(data.get("time_units") or "min"),
        extra={k: v for k, v in data.items() if k not in (*_TOP_KEYS, "results")},
    )


def _channels_from_dict(data: Any) -> Channels:
    if not isinstance(data, Mapping):
        raise _BadContent("'channels' is not a mapping with pc and fl")
    pc = data.get("pc")
    fl = data.get("fl") or []
    if not isinstance(fl, list):
        fl = [fl]
    try:
        return Channels(
            pc=None if pc is None else _int(pc, "channels.pc"),
            fl=sorted({_int(c, "channels.fl") for c in fl}),
        )
    except ParamsError as exc:  # e.g. pc listed among fl
        raise _BadContent(f"channels: {exc}") from None


def _fov_from_dict(data: Any, where: str, here: Path, recorded: PurePath | None) -> FovResults:
    if not isinstance(data, Mapping):
        raise _BadContent(f"{where} is not a mapping")
    out = FovResults()
    for key, value in data.items():
        if key in SINGLE_KEYS:
            # Tolerate [[ch, path]] for a single entry, which PyAMA's reader also accepts.
            if isinstance(value, list) and value and isinstance(value[0], list):
                value = value[0]
            entry = None if value is None else _entry(value, f"{where}.{key}", here, recorded)
            setattr(out, key, entry)
        elif key in MULTI_KEYS:
            items = value or []
            if not isinstance(items, list):
                raise _BadContent(f"{where}.{key} is not a list of [channel, path]")
            entries = [_entry(v, f"{where}.{key}", here, recorded) for v in items]
            setattr(out, key, sorted(entries, key=lambda e: e[0]))
        else:
            out.extra[str(key)] = value
    return out


def _entry(value: Any, where: str, here: Path, recorded: PurePath | None) -> ChannelPath:
    if not (isinstance(value, list | tuple) and len(value) == 2 and value[1] is not None):
        raise _BadContent(f"{where}: expected [channel, path], got {value!r}")
    return _int(value[0], where), reroot(value[1], here, recorded)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise _BadContent(f"{where}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _BadContent(f"{where}: expected an integer, got {value!r}") from None


def _pure_path(value: Any) -> PurePath:
    """Parse a path string; Windows paths stay Windows paths even when read on Linux."""
    text = str(value)
    return PureWindowsPath(text) if _WINDOWS_PATH.match(text) else Path(text)


def reroot(value: str | PurePath, here: Path, recorded: PurePath | None) -> Path:
    """Map a path from the YAML onto the folder the YAML is read from.

    A path under the recorded ``output_dir`` always follows the YAML, even when the original
    still exists: loading a *copy* of a run must not read the original's files (PyAMA, which
    keeps any original path that exists, would).

    Parameters
    ----------
    value
        The path as written in the file.
    here
        Absolute folder holding the YAML now.
    recorded
        ``output_dir`` as written in the file (where the run wrote its outputs), if any.
    """
    path = _pure_path(value)
    if not path.is_absolute():
        return here / Path(*path.parts)
    if recorded is not None and not _same_dir(recorded, here):
        try:
            return here.joinpath(*path.relative_to(recorded).parts)
        except (ValueError, TypeError):
            pass  # not under the recorded output folder: fall through to PyAMA's rule
    unmoved = recorded is not None and _same_dir(recorded, here)
    if isinstance(path, Path) and (unmoved or path.exists()):
        return path
    # PyAMA's rule: the file lives at <output folder>/<fov folder>/<file name>.
    return here.joinpath(*path.parts[-2:])


def _same_dir(recorded: PurePath, here: Path) -> bool:
    return isinstance(recorded, Path) and os.path.normpath(recorded) == os.path.normpath(here)


# -- saving -----------------------------------------------------------------------------------


def results_to_dict(results: ProcessingResults) -> dict[str, Any]:
    """Return the YAML-ready structure, in PyAMA's key order, paths as absolute strings."""
    root = Path(results.output_dir).absolute()
    data: dict[str, Any] = {
        "output_dir": str(root),
        "channels": {
            "pc": results.channels.pc,
            "fl": sorted({int(c) for c in results.channels.fl}),
        },
        "results_paths": {
            str(fov): _fov_to_dict(results.results_paths[fov], root)
            for fov in sorted(results.results_paths)
        },
        "params": plain(results.params, "params"),
        "time_units": results.time_units,
    }
    for key, value in results.extra.items():
        data.setdefault(key, plain(value, key))
    return data


def _fov_to_dict(entry: FovResults, root: Path) -> dict[str, Any]:
    def one(e: ChannelPath | None) -> list[Any] | None:
        return None if e is None else [int(e[0]), _path_str(e[1], root)]

    def many(es: list[ChannelPath]) -> list[list[Any]]:
        return [[int(ch), _path_str(p, root)] for ch, p in sorted(es, key=lambda e: e[0])]

    data: dict[str, Any] = {}
    for key in FOV_KEYS:
        value = getattr(entry, key)
        data[key] = one(value) if key in SINGLE_KEYS else many(value)
    for key, value in entry.extra.items():
        data.setdefault(key, plain(value, key))
    return data


def _path_str(path: str | PurePath, root: Path) -> str:
    pure = _pure_path(path)
    if isinstance(pure, PureWindowsPath) or pure.is_absolute():
        return str(pure)
    return str(root / pure)


def save_results(results: ProcessingResults, path: str | Path | None = None) -> Path:
    """Write ``results`` atomically (default ``<output_dir>/processing_results.yaml``).

    This overwrites; use :func:`update_results_file` to merge into an existing file.
    """
    target = results_file_path(results.output_dir if path is None else path)
    text = yaml.safe_dump(
        results_to_dict(results),
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )
    try:
        with atomic_target(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ResultsFileError(
            target, f"cannot write processing results ({exc}); check the folder is writable"
        ) from exc
    return target


# -- merging ----------------------------------------------------------------------------------


def union_channels(old: Channels, new: Channels) -> Channels:
    """The channels of a merged results file: ``new``'s phase contrast (``old``'s if it has
    none) and the union of the fluorescence channels; ParamsError if they contradict."""
    if old.pc is not None and new.pc is not None and old.pc != new.pc:
        # The FOVs of the earlier runs were segmented on another channel: the file could not
        # say which FOV was segmented on which.
        raise ParamsError(f"phase contrast {new.pc} is not the folder's {old.pc}")
    return Channels(
        pc=new.pc if new.pc is not None else old.pc,
        fl=tuple(sorted(set(old.fl) | set(new.fl))),
    )


#: Top-level key (not PyAMA's; its readers ignore it): FOV → the ``run_id`` of the run.yaml
#: entry that last processed it, whose ``parameters`` are the FOV's, where FOVs of runs with
#: different parameters share the folder (``params`` above are the latest run's).
RUN_OF_FOV = "run_of_fov"


def merge_results(existing: ProcessingResults, new: ProcessingResults) -> ProcessingResults:
    """Union of two results: every FOV and channel of either; ``new`` wins where both have one.

    - ``results_paths``: FOVs united; per FOV, ``pc``/``seg``/``seg_labeled`` are taken from
      ``new`` when it has them, list entries are united per channel (``new``'s path replaces the
      same channel's old path).
    - ``channels.fl`` becomes the sorted union; ``channels.pc`` is ``new``'s unless it has none.
    - ``params`` and ``extra``: shallow update, ``new``'s values win (they describe the last run);
      :data:`RUN_OF_FOV` is united per FOV.
    - ``output_dir`` and ``time_units`` are ``new``'s.

    Neither input is modified.
    """
    old, fresh = copy.deepcopy(existing), copy.deepcopy(new)
    merged = ProcessingResults(
        output_dir=fresh.output_dir,
        channels=union_channels(old.channels, fresh.channels),
        params={**old.params, **fresh.params},
        time_units=fresh.time_units,
        extra={**old.extra, **fresh.extra},
    )
    runs = {**(old.extra.get(RUN_OF_FOV) or {}), **(fresh.extra.get(RUN_OF_FOV) or {})}
    if runs:
        merged.extra[RUN_OF_FOV] = {int(fov): runs[fov] for fov in sorted(runs, key=int)}
    for fov in sorted(set(old.results_paths) | set(fresh.results_paths)):
        a = old.results_paths.get(fov, FovResults())
        b = fresh.results_paths.get(fov, FovResults())
        merged.results_paths[fov] = _merge_fov(a, b)
    return merged


def _merge_fov(old: FovResults, new: FovResults) -> FovResults:
    out = FovResults(extra={**old.extra, **new.extra})
    for key in SINGLE_KEYS:
        value = getattr(new, key)
        setattr(out, key, value if value is not None else getattr(old, key))
    for key in MULTI_KEYS:
        by_channel = dict(getattr(old, key))
        by_channel.update(getattr(new, key))
        setattr(out, key, sorted(by_channel.items()))
    return out


def update_results_file(
    new: ProcessingResults, path: str | Path | None = None
) -> ProcessingResults:
    """Merge ``new`` into the YAML file (created if absent), save it, and return the result.

    A corrupt existing file raises :class:`ResultsFileError` rather than being overwritten,
    because overwriting would drop the earlier runs' entries. Read-modify-write is not locked:
    only the run holding the output folder's lock should call this.
    """
    target = results_file_path(new.output_dir if path is None else path)
    merged = merge_results(load_results(target), new) if target.is_file() else new
    save_results(merged, target)
    return merged
