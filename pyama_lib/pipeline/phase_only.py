"""Runs without a fluorescence channel: phase-contrast-only recordings (migration, growth).

Such a run copies the phase contrast, segments and tracks it, and writes per FOV the napari
Tracks table of the phase-contrast channel (``<base>_fov_XXX_tracks_ch_<pc>.csv`` and its
Parquet twin: positions and areas). As PyAMA does without fluorescence (its correction step
logs "No fluorescence channels, skipping correction", its extraction writes no traces CSV),
background correction and the traces CSVs are skipped, so ``processing_results.yaml`` lists
``fl: []`` and no ``fl``, ``fl_corrected`` or ``traces_csv`` entries, and there is nothing for
a merge or a fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pyama_lib.core.errors import ResultsFileError
from pyama_lib.core.selection import Channels
from pyama_lib.io.results_yaml import ProcessingResults, load_results, results_file_path
from pyama_lib.processing.extraction import ExtractionParams, extract_traces

#: Why ``pyama view`` shows no curation panel for a phase-contrast-only output.
NO_TRACES_TO_CURATE = (
    "processed without a fluorescence channel, so there are no traces to curate; the layers "
    "show the segmentation and the tracks"
)


def phase_only_notes(n_channels: int, channels: Channels, default_fl: bool) -> list[str]:
    """A note for the run's log and summary, saying why, when ``channels`` has no
    fluorescence channel (``default_fl``: the user gave none); else no note."""
    if channels.fl:
        return []
    why = (
        "the acquisition has a single channel"
        if default_fl and n_channels == 1
        else "no fluorescence channel was given (fl: [])"
    )
    return [
        f"phase contrast only (channel {channels.pc}): {why}; cells are segmented and tracked "
        "(tracks tables with positions and areas), background correction and the traces CSVs "
        "are skipped"
    ]


def cell_geometry(
    labels: Sequence[np.ndarray] | np.ndarray,
    times_min: Sequence[float] | np.ndarray,
    fov: int,
    params: ExtractionParams | None = None,
) -> pd.DataFrame:
    """The tracked cells of one FOV without fluorescence: a trace table of positions and areas.

    The same cells, rows, positions and areas as the traces of any fluorescence channel would
    have (``min_frames``, ``border_margin`` and ``sort_by_cell`` apply alike), without the
    intensity columns.

    Parameters
    ----------
    labels : array (T, H, W) or sequence of 2-D frames
        The tracked labels (``seg_labeled``), read one frame at a time.
    times_min : sequence of float
        Time of each frame in minutes.
    fov : int
        FOV index.
    params : ExtractionParams | None
        The run's extraction parameters; their extra features are left out (they measure
        intensities).

    Returns
    -------
    pandas.DataFrame
        Columns ``fov, cell, frame, time, good, position_x, position_y, area``.
    """
    params = (params or ExtractionParams()).model_copy(update={"features": ()})
    if len(labels) == 0:
        return extract_traces([], [], [], fov, params).drop(columns="intensity_total")
    height, width = labels[0].shape
    # Cells, positions and areas come from the labels alone: the extractor measures one
    # all-zero image (the same object for every frame, so no memory per frame) in place of
    # the fluorescence, and its intensity column is dropped.
    zeros = [np.zeros((height, width), np.float32)] * len(labels)
    return extract_traces(labels, zeros, times_min, fov, params).drop(columns="intensity_total")


def has_no_fluorescence(results: ProcessingResults) -> bool:
    """True for the results of a phase-contrast-only run: no fluorescence channel and no
    traces CSV of any FOV (a folder of PyAMA's with traces but ``fl: []`` still has traces)."""
    return not results.channels.fl and not any(
        entry.traces_csv for entry in results.results_paths.values()
    )


def is_phase_only_output(path: str | Path) -> bool:
    """True when ``path`` (an output folder or its results file) holds the results of a
    phase-contrast-only run; False for any other, or an unreadable, one."""
    if not results_file_path(path).is_file():
        return False
    try:
        return has_no_fluorescence(load_results(path))
    except ResultsFileError:
        return False


def check_has_traces(results: ProcessingResults, path: str | Path, what: str) -> None:
    """Refuse to ``what`` (merge, fit) the output of a phase-contrast-only run (``path``, its
    folder or results file), saying there is nothing to do and what the output holds.

    Raises
    ------
    ResultsFileError
        When :func:`has_no_fluorescence`.
    """
    if has_no_fluorescence(results):
        raise ResultsFileError(
            path,
            "processed without a fluorescence channel (fl: []), so it has no fluorescence "
            f"traces: nothing to {what}. Its segmentation and tracks (positions, areas) are in "
            "the fov_XXX folders (pyama view shows them); to measure a reporter, process it "
            "again with --fl CHANNEL",
        )
