"""Exceptions raised by pyama_lib.

Every error names the file (or folder) concerned and what to do next, so a lab scientist reading
a failed run's log knows which acquisition is at fault without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class PyamaError(Exception):
    """Base class of every error pyama_lib raises on purpose."""


class PathError(PyamaError):
    """An error about one file or folder: ``path`` names it, ``problem`` says what is wrong."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Raised in worker processes and pickled back; the default would call __init__(message).
        return (type(self), (self.path, self.problem))


class AcquisitionError(PathError):
    """A problem with an input acquisition file."""


class AcquisitionNotFoundError(AcquisitionError, FileNotFoundError):
    """The input path does not exist."""


class UnsupportedFormatError(AcquisitionError):
    """The file's extension or layout is not one PyAMA Flow reads (e.g. RGB ND2)."""


class CorruptFileError(AcquisitionError):
    """The file exists but cannot be parsed: truncated, damaged or not what its name says."""


class AcquisitionIncompleteError(AcquisitionError):
    """The file is still being written by the microscope (cannot be indexed yet)."""


class IndexOutOfRangeError(AcquisitionError, IndexError):
    """A FOV, channel or frame index outside the acquisition."""


class FovOutOfRangeError(IndexOutOfRangeError):
    """A FOV index outside the acquisition."""


class ChannelOutOfRangeError(IndexOutOfRangeError):
    """A channel index outside the acquisition."""


class FrameOutOfRangeError(IndexOutOfRangeError):
    """A frame (time point) index outside the acquisition."""


class StoreError(PyamaError):
    """A problem with the Zarr store of intermediates (missing input stage, bad shape...)."""


class InputDataError(PyamaError):
    """Array inputs to a processing stage that cannot be processed (shape/dtype mismatch...)."""


class OutputDirError(PathError):
    """The output folder cannot be created or written to."""

    @property
    def folder(self) -> Path:
        return self.path


class RunLockedError(PyamaError):
    """Another live run holds the output folder's lock (``<out>/.pyama.lock``)."""

    def __init__(
        self,
        folder: str | Path,
        lock_file: str | Path,
        pid: int | None,
        hostname: str | None,
        started: str | None,
    ) -> None:
        self.folder = Path(folder)
        self.lock_file = Path(lock_file)
        self.pid = pid
        self.hostname = hostname
        self.started = started
        owner = (
            f"pid {pid if pid is not None else '?'} on host {hostname or '?'}, "
            f"started {started or 'at an unknown time'}"
        )
        super().__init__(
            f"{self.folder}: output folder is in use by another PyAMA Flow run ({owner}). "
            "Wait for that run to finish or choose another output folder. If you are sure no run "
            f"is active there (e.g. it was killed on another machine), delete {self.lock_file} "
            "and start again."
        )

    def __reduce__(self) -> tuple[type, tuple[Path, Path, int | None, str | None, str | None]]:
        return (type(self), (self.folder, self.lock_file, self.pid, self.hostname, self.started))


class InboxPathError(PathError):
    """A path from an event or the inbox that is refused: outside the inbox, not an
    acquisition, or gone; or the watcher's ledger cannot be read."""


class RunRecordError(PathError):
    """The run record ``<out>/run.yaml`` exists but cannot be read."""


class ResultsFileError(PathError):
    """A results file (processing_results.yaml, traces CSV/Parquet) that cannot be used."""


class ParamsError(PyamaError, ValueError):
    """Processing parameters that are unknown or out of range."""


class PartialFailure(PyamaError):
    """Some of the work failed and the rest is done: the CLI's exit status 3, not 2
    (bad input)."""


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (Ctrl-C's SIGINT, or SIGTERM); ``exit_status`` is
    128 + the signal number, as shells report it. A ``KeyboardInterrupt``, so Prefect treats
    SIGTERM as it treats Ctrl-C."""

    def __init__(self, signal_name: str, exit_status: int) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_status = exit_status


class ClusterError(PyamaError):
    """The Dask cluster cannot run the stages: no workers, or workers that cannot read the
    input or write the output folder (not a filesystem they share)."""
