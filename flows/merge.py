"""``merge_samples``: group FOVs into samples and write PyAMA's analysis CSVs and a tidy table.

The merge itself is :func:`pyama_lib.analysis.merge.merge_samples` (one Prefect task); the
flow picks the samples (a samples YAML, or all FOVs as one sample named after the
acquisition), draws each sample and channel's traces with their median, and shows the figures
in the Prefect UI.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger

from flows.support.artifacts import artifact_key, figures_markdown
from pyama_lib.analysis.figures import save_png, traces_figure
from pyama_lib.analysis.merge import MergeResult
from pyama_lib.analysis.merge_inputs import DEFAULT_FEATURES, available_fovs
from pyama_lib.io.results_yaml import load_results, results_file_path
from pyama_lib.io.samples import Sample, load_samples
from pyama_lib.pipeline.phase_only import check_has_traces
from pyama_lib.pipeline.run_record import load_run_yaml
from tasks.analysis import merge_task

#: The merge's output folder inside a processing output folder, when none is given.
MERGED_DIR = "merged"


@dataclass
class MergeSummary:
    """The small object ``merge_samples`` returns: the merge's files plus its figures."""

    output_dir: str
    samples: dict[str, int]  # sample -> cells
    files: list[str]
    parquet: str
    figures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    left_out: dict[str, int] = field(default_factory=dict)  # sample -> cells marked bad

    def __str__(self) -> str:
        lines = [f"{'cells':>6}  {'marked bad':>10}  sample"]
        lines += [
            f"{n:>6}  {self.left_out.get(name, 0):>10}  {name}" for name, n in self.samples.items()
        ]
        lines.append(f"{len(self.files)} analysis CSV(s) and {self.parquet} in {self.output_dir}")
        return "\n".join(lines)


def results_folder(results: str | Path) -> Path:
    """The processing output folder of ``results`` (the folder or its YAML file)."""
    return results_file_path(results).parent


def default_samples(results: str | Path) -> list[Sample]:
    """All FOVs with traces as one sample, named after the acquisition (from the folder's
    run record, else the folder's name), made safe as a file name."""
    folder = results_folder(results)
    runs = [r for r in load_run_yaml(folder) if r.input]
    name = Path(runs[-1].input["path"]).name.split(".")[0] if runs else folder.name
    name = re.sub(r"[^A-Za-z0-9_.+ -]+", "_", name).strip(" ._") or "sample"
    return [Sample(name[:100], tuple(available_fovs(load_results(results))))]


@flow(name="merge-samples", log_prints=True)
def merge_samples_flow(
    results: str,
    samples_yaml: str | None = None,
    output_dir: str | None = None,
    features: list[str] | None = None,
    long_format: bool = False,
) -> MergeSummary:
    """Merge the per-FOV traces of ``results`` (an output folder or its
    ``processing_results.yaml``, ours or PyAMA's) into ``<sample>_<feature>_ch_<c>.csv`` and
    ``merged.parquet`` in ``output_dir`` (default ``<results>/merged``).

    ``samples_yaml`` lists the samples (``samples: [{name: ..., fovs: "0-5, 7"}]``); without
    it all FOVs form one sample named after the acquisition. ``long_format`` writes the long
    ``time, fov, cell, value`` CSVs of later PyAMA releases instead of the wide ones.
    """
    logger = get_run_logger()
    started = time.time()
    check_has_traces(load_results(results), results, "merge")
    samples = load_samples(samples_yaml) if samples_yaml else default_samples(results)
    out = Path(output_dir) if output_dir else results_folder(results) / MERGED_DIR
    merged: MergeResult = merge_task(
        results, samples, str(out), list(features or DEFAULT_FEATURES), long_format
    )
    for warning in merged.warnings:
        logger.warning(warning)
    figures = _traces_figures(merged)
    summary = MergeSummary(
        output_dir=str(merged.output_dir),
        samples=dict(merged.cells),
        files=[str(p) for p in merged.files.values()],
        parquet=str(merged.parquet),
        figures=[str(f) for f in figures],
        warnings=list(merged.warnings),
        wall_seconds=time.time() - started,
        left_out=dict(merged.left_out),
    )
    _publish(summary)
    return summary


def _traces_figures(merged: MergeResult) -> list[Path]:
    """Per sample and channel: the first merged feature's traces with their median."""
    figures = []
    for (sample, channel), preview in merged.previews.items():
        fig = traces_figure(
            preview.time_h,
            preview.traces,
            f"{sample}, channel {channel}",
            ylabel=preview.feature,
            median=preview.median,
            n_cells=preview.n_cells,
        )
        figures.append(save_png(fig, merged.output_dir / f"{sample}_ch_{channel}_traces.png"))
    return figures


def _publish(summary: MergeSummary) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    out = Path(summary.output_dir)
    name = out.parent.name if out.name == MERGED_DIR else out.name
    create_table_artifact(
        table=[
            {"sample": s, "cells": n, "marked bad (left out)": summary.left_out.get(s, 0)}
            for s, n in summary.samples.items()
        ],
        key=artifact_key(name, "merge-summary"),
        description=f"Cells per sample, {summary.output_dir}",
    )
    create_markdown_artifact(
        key=artifact_key(name, "merge-figures"),
        description="Traces per sample and channel",
        markdown=figures_markdown(f"Samples of {name}", [("Traces", summary.figures)]),
    )
