"""PyAMA's scripting API on top of ``process_acquisition``, so existing PyAMA scripts keep working.

A PyAMA (October 2025, ``pyama_core``) processing script looks like this; with the imports
changed to this module it runs unchanged, through Prefect::

    from flows.compat import Channels, ProcessingContext, load_microscopy_file
    from flows.compat import run_complete_workflow

    _, metadata = load_microscopy_file("exp.nd2")
    context = ProcessingContext(output_dir=Path("out"), channels=Channels(pc=0, fl=[1, 2]),
                                params={})
    ok = run_complete_workflow(metadata, context, fov_start=0, fov_end=3,
                               batch_size=2, n_workers=2)

What matches PyAMA
    Names, argument order and meaning: ``load_microscopy_file(file_path)`` returns
    ``(image, metadata)``; ``run_complete_workflow(metadata, context, fov_start=None,
    fov_end=None, batch_size=2, n_workers=2) -> bool`` (None or -1: first / last FOV), True when
    every FOV finished, False on any failure with the error logged (an invalid FOV range is
    logged and returns False before anything is written, as in PyAMA). Afterwards
    ``context.results_paths`` holds the per-FOV output paths of ``processing_results.yaml`` and
    ``context.time_units`` is ``"min"``. The context may also be PyAMA's older plain-dict form
    (``{"output_dir": ..., "channels": {"pc": 0, "fl": [1]}, "params": {}}``).

What differs, on purpose
    - ``image`` is this project's open :class:`~pyama_lib.io.readers.acquisition.Acquisition` (read
      frames with ``image.frame(fov, channel, t)``; close it when done), not a bioio
      ``BioImage``; formats are ND2 and OME-TIFF (no CZI).
    - ``metadata.timepoints`` are FOV 0's frame times in **minutes** (PyAMA: whatever bioio
      gives, often microseconds).
    - Loading errors are :class:`~pyama_lib.core.errors.AcquisitionError` subclasses naming the
      file and the problem (PyAMA: ``RuntimeError``).
    - ``Channels`` is :class:`pyama_lib.core.selection.Channels` (``pc`` must be an int, ``fl`` is
      stored as a tuple); ``context.params`` takes this project's parameter sections
      (``{"segmentation": {...}, "background": {...}, "tracking": {...}, "extraction":
      {...}}``); unknown sections make the run return False with the allowed names logged.
    - Keyword-only extras: ``runner`` (``"process"`` default as in PyAMA, ``"thread"``,
      ``"dask"``) and ``dask_address``. The process runner spawns workers, so a script needs
      an ``if __name__ == "__main__":`` guard, as PyAMA's spawn-based pool already required.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyama_lib.core.selection import DEFAULT_FL, Channels
from pyama_lib.io import open_acquisition
from pyama_lib.io.readers.acquisition import Acquisition
from pyama_lib.io.results_yaml import FovResults, load_results, results_file_path

__all__ = [
    "Channels",
    "MicroscopyMetadata",
    "ProcessingContext",
    "ResultsPathsPerFOV",
    "load_microscopy_file",
    "run_complete_workflow",
]

logger = logging.getLogger(__name__)

#: PyAMA's name for one FOV's entry in ``results_paths`` (same fields: pc, fl, seg,
#: seg_labeled, fl_corrected, traces_csv as ``(channel, path)`` pairs).
ResultsPathsPerFOV = FovResults


@dataclass
class MicroscopyMetadata:
    """What PyAMA's ``load_microscopy_file`` reports about an acquisition (same field names).

    Attributes
    ----------
    file_path : Path
        The acquisition file.
    base_name : str
        File name without its extension (``exp`` for ``exp.ome.tif``).
    file_type : str
        ``"nd2"`` or ``"ome-tiff"`` (PyAMA's spelling; a plain ``.tif`` gives ``"tif"``).
    height, width, n_frames, n_fovs, n_channels : int
        Image size in pixels and the acquisition's extent.
    timepoints : list[float]
        FOV 0's frame times in minutes.
    channel_names : list[str]
        One name per channel, in channel order.
    dtype : str
        Pixel type, e.g. ``"uint16"``.
    """

    file_path: Path
    base_name: str
    file_type: str
    height: int
    width: int
    n_frames: int
    n_fovs: int
    n_channels: int
    timepoints: list[float]
    channel_names: list[str]
    dtype: str


@dataclass
class ProcessingContext:
    """PyAMA's processing context: where to write, which channels, parameters, and (after a
    run) the output paths per FOV.

    Attributes
    ----------
    output_dir : Path | str | None
        Output folder (required by :func:`run_complete_workflow`).
    channels : Channels | None
        Phase-contrast and fluorescence channels; None means ``Channels(pc=0, fl=[1])``.
    results_paths : dict[int, ResultsPathsPerFOV] | None
        Filled by :func:`run_complete_workflow` from ``processing_results.yaml``.
    params : dict | None
        Per-stage parameter overrides, see :func:`flows.process.process_acquisition`.
    time_units : str | None
        Set to ``"min"`` by a run, as PyAMA does.
    """

    output_dir: Path | str | None = None
    channels: Channels | None = None
    results_paths: dict[int, FovResults] | None = None
    params: dict[str, Any] | None = None
    time_units: str | None = None


def _file_type(path: Path) -> str:
    # PyAMA's spelling: "ome-tiff" for .ome.tif(f), else the bare extension.
    name = path.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    return path.suffix.lower().lstrip(".")


def load_microscopy_file(file_path: str | Path) -> tuple[Acquisition, MicroscopyMetadata]:
    """Open an ND2 or OME-TIFF acquisition and describe it, like PyAMA's function of that name.

    Parameters
    ----------
    file_path
        The acquisition.

    Returns
    -------
    tuple[Acquisition, MicroscopyMetadata]
        The open acquisition (``frame(fov, channel, t)``; call ``close()`` or use it in a
        ``with`` block when done) and its metadata.

    Raises
    ------
    pyama_lib.core.errors.AcquisitionError
        When the file is missing, of an unknown type or unreadable; the message names it.
    """
    acq = open_acquisition(file_path)
    metadata = MicroscopyMetadata(
        file_path=acq.path,
        base_name=acq.base_name,
        file_type=_file_type(acq.path),
        height=int(acq.height),
        width=int(acq.width),
        n_frames=int(acq.n_frames),
        n_fovs=int(acq.n_fovs),
        n_channels=int(acq.n_channels),
        timepoints=[float(t) for t in acq.frame_times(0)],
        channel_names=[str(n) for n in acq.channel_names],
        dtype=str(acq.dtype),
    )
    return acq, metadata


def _get(context: Any, key: str) -> Any:
    # PyAMA contexts were dataclasses (2025) or TypedDicts (earlier); accept both.
    if isinstance(context, Mapping):
        return context.get(key)
    return getattr(context, key, None)


def _set(context: Any, key: str, value: Any) -> None:
    if isinstance(context, MutableMapping):
        context[key] = value
    else:
        setattr(context, key, value)


def _channels(value: Any) -> Channels:
    """Our Channels from ours, a ``{"pc", "fl"}`` mapping or any object with pc/fl."""
    if value is None:
        return Channels(pc=0, fl=DEFAULT_FL)
    if isinstance(value, Channels):
        return value
    pc = value.get("pc") if isinstance(value, Mapping) else getattr(value, "pc", None)
    fl = value.get("fl") if isinstance(value, Mapping) else getattr(value, "fl", None)
    if pc is None:
        raise ValueError("context.channels has no phase-contrast channel (pc); set e.g. pc=0")
    return Channels(pc=int(pc), fl=tuple(fl or ()))


def _fov_bound(value: int | None) -> int:
    return -1 if value is None else int(value)


def run_complete_workflow(
    metadata: MicroscopyMetadata,
    context: ProcessingContext | MutableMapping[str, Any],
    fov_start: int | None = None,
    fov_end: int | None = None,
    batch_size: int = 2,
    n_workers: int = 2,
    *,
    runner: str = "process",
    dask_address: str | None = None,
) -> bool:
    """Process FOVs ``fov_start..fov_end`` (inclusive) of the acquisition, as PyAMA does.

    Runs :func:`flows.process.process_acquisition` (copy, segment, correct, track, extract per
    FOV; completed stages of an earlier run are skipped) and then fills
    ``context.results_paths`` and ``context.time_units``.

    Parameters
    ----------
    metadata
        From :func:`load_microscopy_file`.
    context
        Output folder, channels and parameters; updated in place.
    fov_start, fov_end
        Inclusive FOV range; None or -1 mean the first / the last FOV.
    batch_size
        FOVs in flight at once (bounds scratch disk and memory).
    n_workers
        Parallel workers.
    runner, dask_address
        Task runner (``"process"``, ``"thread"`` or ``"dask"``) and, for ``"dask"``, the
        address of an existing cluster.

    Returns
    -------
    bool
        True when every selected FOV finished; False otherwise, with the error logged.
    """
    output_dir = _get(context, "output_dir")
    try:
        if output_dir is None:
            raise ValueError("the processing context has no output_dir; set one")
        start = 0 if _fov_bound(fov_start) < 0 else _fov_bound(fov_start)
        end = metadata.n_fovs - 1 if _fov_bound(fov_end) < 0 else _fov_bound(fov_end)
        if start > end or end >= metadata.n_fovs:
            # PyAMA checks the range up front and returns False without writing anything.
            logger.error(
                "Invalid FOV range: %d-%d (%s has %d FOVs)",
                start,
                end,
                metadata.file_path,
                metadata.n_fovs,
            )
            return False
        channels = _channels(_get(context, "channels"))
        # Imported here so that loading metadata does not pay for importing Prefect.
        from flows.process import process_acquisition

        summary = process_acquisition(
            input_path=str(metadata.file_path),
            output_dir=str(output_dir),
            pc=channels.pc,
            fl=list(channels.fl),
            fov_start=start,
            fov_end=end,
            batch_size=batch_size,
            n_workers=n_workers,
            runner=runner,
            dask_address=dask_address,
            params=dict(_get(context, "params") or {}),
        )
    except Exception as exc:  # PyAMA's contract: report, log and return False, never raise
        logger.error("Error in workflow pipeline: %s", exc, exc_info=True)
        _fill_results(context, output_dir)  # FOVs that did finish are recorded, as in PyAMA
        return False
    _fill_results(context, output_dir)
    logger.info(
        "Completed processing %d/%d FOVs",
        len(summary.fovs_done) + len(summary.fovs_skipped),
        len(summary.fovs),
    )
    return True


def _fill_results(context: Any, output_dir: str | Path | None) -> None:
    """Copy the run's ``processing_results.yaml`` entries into the context, when there is one."""
    if output_dir is None or not results_file_path(output_dir).is_file():
        return
    try:
        results = load_results(output_dir)
    except Exception as exc:  # the run's own outcome decides the return value, not this
        logger.warning("Could not read %s: %s", results_file_path(output_dir), exc)
        return
    _set(context, "results_paths", results.results_paths)
    _set(context, "time_units", results.time_units)
