"""Planning a run: validate the input, channels, FOVs, parameters and output folder; write nothing.

A :class:`Plan` holds one :class:`FovJob` per selected FOV. Jobs are small and picklable (paths,
channels, typed parameters, the FOV's frame times), so they cross into worker processes and
Prefect tasks without arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from pyama_lib.core.errors import (
    FovOutOfRangeError,
    OutputDirError,
    ParamsError,
    ResultsFileError,
    RunRecordError,
)
from pyama_lib.core.selection import Channels, default_fl_for, select_fovs
from pyama_lib.io import open_acquisition
from pyama_lib.io.identity import identity_key, input_identity
from pyama_lib.io.readers.acquisition import Acquisition, acquisition_base_name
from pyama_lib.io.results_yaml import load_results, results_file_path, union_channels
from pyama_lib.io.store import FovStore, stored_base_names
from pyama_lib.pipeline.phase_only import phase_only_notes
from pyama_lib.pipeline.processing_params import ProcessingParams, parse_params
from pyama_lib.pipeline.run_record import load_run_yaml


@dataclass(frozen=True)
class FovJob:
    """Everything a stage needs for one FOV; small and picklable (paths, not arrays)."""

    input_path: str
    output_dir: str
    base_name: str
    fov: int
    channels: Channels
    input_key: str
    times_min: tuple[float, ...]  # the FOV's frame times, read once while planning
    params: ProcessingParams = field(default_factory=ProcessingParams)
    reader_options: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> FovStore:
        return FovStore(self.output_dir, self.base_name, self.fov)

    def open(self) -> Acquisition:
        return open_acquisition(self.input_path, **self.reader_options)


@dataclass(frozen=True)
class Plan:
    """A validated run: the acquisition's facts and one job per selected FOV."""

    input_path: str
    output_dir: str
    base_name: str
    channels: Channels
    params: ProcessingParams
    jobs: list[FovJob]
    n_frames: int
    shape: tuple[int, int]
    input: dict[str, Any]  # the acquisition's identity (io.identity.input_identity)
    reader_options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    n_fovs: int = 0  # the acquisition's, whatever the selection
    notes: list[str] = field(default_factory=list)  # for the run's log and summary

    def describe(self) -> dict[str, Any]:
        return {
            "input_path": self.input_path,
            "output_dir": self.output_dir,
            "channels": {"pc": self.channels.pc, "fl": list(self.channels.fl)},
            "fovs": [j.fov for j in self.jobs],
            "params": self.params.as_dict(),
        }


def plan_jobs(
    input_path: str | Path,
    output_dir: str | Path,
    channels: Channels,
    fov_start: int = -1,
    fov_end: int = -1,
    fovs: str | Sequence[int] | None = None,
    params: ProcessingParams | Mapping[str, Any] | None = None,
    reader_options: Mapping[str, Any] | None = None,
    *,
    default_fl: bool = False,
) -> Plan:
    """Validate the input, channels, FOV selection, parameters and output folder.

    ``default_fl``: no fluorescence channel was chosen, so ``channels.fl`` is replaced by the
    acquisition's default (:func:`~pyama_lib.core.selection.default_fl_for`: PyAMA's channel
    1, none when the acquisition has a single channel).

    Writes nothing. Raises a :class:`~pyama_lib.core.errors.PyamaError` naming the problem: bad
    parameters, an unreadable input, channels or FOVs outside it, a corrupt
    ``processing_results.yaml`` in the output folder, or an output folder that holds another
    acquisition's results.
    """
    parsed = parse_params(params)
    reader_options = dict(reader_options or {})
    # Absolute from here on: every path the run records (processing_results.yaml, run.yaml)
    # must name the files wherever the reader's working folder is.
    output_dir = Path(output_dir).absolute()
    if not default_fl:  # before opening the input: a wrong folder is the quicker answer
        check_results_file(output_dir, channels)
    with open_acquisition(input_path, **reader_options) as acq:
        if default_fl:
            channels = Channels(pc=channels.pc, fl=default_fl_for(acq.n_channels))
            check_results_file(output_dir, channels)
        for c in channels.all:
            acq.check_channel(c)
        acq.check_files()
        try:
            selected = select_fovs(acq.n_fovs, fov_start, fov_end, fovs)
        except (IndexError, ValueError) as exc:
            raise FovOutOfRangeError(acq.path, str(exc)) from None
        identity = input_identity(acq.path)
        check_output_owner(output_dir, identity, acq.base_name)
        key = identity_key(identity)
        jobs = [
            FovJob(
                str(acq.path),
                str(output_dir),
                acq.base_name,
                fov,
                channels,
                key,
                tuple(float(t) for t in acq.frame_times(fov)),
                parsed,
                reader_options,
            )
            for fov in selected
        ]
        return Plan(
            str(acq.path),
            str(output_dir),
            acq.base_name,
            channels,
            parsed,
            jobs,
            acq.n_frames,
            acq.shape,
            identity,
            reader_options,
            _time_warnings(acq, jobs[0].times_min),
            acq.n_fovs,
            phase_only_notes(acq.n_channels, channels, default_fl),
        )


def _time_warnings(acq: Acquisition, times: tuple[float, ...]) -> list[str]:
    if acq.times_note:
        return [acq.times_note]
    if acq.n_frames > 1 and max(times) == min(times):
        # Some ND2 time loops record no period (cluster.nd2): every nominal time is 0 and
        # the fitted kinetics would be meaningless.
        return [
            f"{acq.path}: all {acq.n_frames} frame times are {times[0]:g} min (the file "
            "records no time-loop period); use the reader option times='measured' "
            "(pyama process --times measured) for the microscope's time stamps"
        ]
    return []


def check_results_file(output_dir: str | Path, channels: Channels) -> None:
    """Fail now, before any work, when the folder's ``processing_results.yaml`` is unusable
    or its channels contradict ``channels`` (the run would otherwise do all its work and then
    fail merging into it)."""
    path = results_file_path(output_dir)
    if not path.is_file():
        return
    old = load_results(output_dir).channels  # raises ResultsFileError naming the file
    try:
        union_channels(old, channels)  # what the run's results would be merged into
    except ParamsError as exc:
        raise ResultsFileError(
            path,
            f"this folder was processed with phase contrast {old.pc} and fluorescence "
            f"{list(old.fl)}; this run's channels (pc {channels.pc}, fl {list(channels.fl)}) "
            f"contradict them ({exc}). Use the same channels, or another output folder.",
        ) from None


def check_output_owner(output_dir: str | Path, identity: Mapping[str, Any], base_name: str) -> None:
    """Refuse an output folder that holds another acquisition's results.

    Traces are partitioned by FOV and channel only, and ``processing_results.yaml`` is keyed by
    FOV, so a second acquisition would overwrite the first one's traces. The folder belongs to
    the acquisition of its latest run (``run.yaml``), or to the base name of its Zarr stores.
    The same acquisition is one with the same base name and either the same path (re-exported
    in place: its changed content is reprocessed) or the same content (moved or copied).
    """
    out = Path(output_dir)
    try:
        runs = load_run_yaml(out)
    except RunRecordError:
        runs = []  # write_run_yaml keeps the unreadable file aside; the stores still tell
    recorded = next((r.input for r in reversed(runs) if _identity_known(r.input)), None)
    if recorded is not None:
        same_name = _base_of(recorded["path"]) == base_name
        same_path = Path(recorded["path"]) == Path(identity["path"])
        same_content = identity_key(recorded) == identity_key(identity)
        if same_name and (same_path or same_content):
            return
        raise _not_ours(out, identity["path"], f"{recorded['path']} (see {out / 'run.yaml'})")
    others = sorted(set(stored_base_names(out)) - {base_name})
    if others:
        raise _not_ours(out, identity["path"], f"acquisition(s) named {', '.join(others)}")


def _identity_known(identity: Mapping[str, Any] | None) -> bool:
    # An entry from an older version, or edited by hand, may lack some of it.
    return bool(identity) and all(k in identity for k in ("path", "size", "fingerprint"))


def _base_of(path: str) -> str:
    # PureWindowsPath splits at both separators: a run recorded on a Windows lab PC
    # ("Z:\\lab\\acq.nd2") names the same file as its POSIX mount.
    return acquisition_base_name(Path(PureWindowsPath(path).name))


def _not_ours(out: Path, new: str, owner: str) -> OutputDirError:
    return OutputDirError(
        out,
        f"holds the results of another acquisition, {owner}; processing {new} here would "
        "overwrite its traces. Give each acquisition its own output folder (e.g. "
        f"{out.parent / _base_of(new)}), or empty this folder to start over.",
    )
