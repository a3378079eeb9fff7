"""``pyama_pipeline``: process → merge → fit, one flow run with the three as subflows.

Processing writes the per-FOV traces (and, here, a segmentation picture per FOV); the merge
groups FOVs into samples (a samples YAML, else all FOVs as one sample named after the
acquisition) under ``<out>/merged``; the fit fits the model to every cell's
``intensity_total`` trace. Each part is also its own flow (``process_acquisition``,
``merge_samples``, ``fit_traces``), and the pipeline resumes like them: finished stages are
skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from pydantic import Field

from flows.fit import FitSummary, check_fit_options, fit_traces_flow
from flows.merge import MergeSummary, merge_samples_flow
from flows.process import Channel, Preset, Runner, Stage, process_acquisition_flow
from flows.support.artifacts import artifact_key, figures_markdown, named_after
from flows.support.reporting import ProcessSummary
from pyama_lib.analysis.merge_inputs import DEFAULT_FEATURES
from pyama_lib.core.selection import Channels
from pyama_lib.io.fit_results import csv_feature
from pyama_lib.io.samples import load_samples
from pyama_lib.pipeline.plan import plan_jobs
from pyama_lib.pipeline.processing_params import ProcessingParams
from tasks.analysis import segmentation_png_task

#: The trace feature the pipeline fits (the others are merged, not fitted).
FIT_FEATURE = "intensity_total"
#: Local-background intensities, best first: a run that extracts one is fitted on it.
LOCAL_FEATURES = ("intensity_local_trimmed", "intensity_local")
#: What the pipeline says of a run without a fluorescence channel after processing it.
NO_ANALYSIS = "no fluorescence channel: no traces, so no merge and no fit"


@dataclass
class PipelineSummary:
    """What ``pyama_pipeline`` returns: the three parts' summaries and the QC pictures."""

    process: ProcessSummary
    merge: MergeSummary | None  # None: no fluorescence channel, nothing to merge or fit
    fit: FitSummary | None
    segmentation_figures: list[str] = field(default_factory=list)

    @property
    def figures(self) -> list[str]:
        fits = [f for fitted in self.fit.files for f in fitted.figures] if self.fit else []
        merged = self.merge.figures if self.merge else []
        return [*self.segmentation_figures, *merged, *fits]

    def __str__(self) -> str:
        if self.merge is None or self.fit is None:
            return f"{self.process}\n\n{NO_ANALYSIS}"
        return "\n\n".join([str(self.process), str(self.merge), str(self.fit)])


@flow(name="pyama-pipeline", flow_run_name=named_after("input_path"), log_prints=True)
def pyama_pipeline_flow(
    input_path: str,
    output_dir: str,
    samples_yaml: str | None = None,
    model: str = "maturation",
    pc: Channel = 0,
    fl: list[Channel] | None = None,
    fov_start: Annotated[int, Field(ge=-1)] = -1,
    fov_end: Annotated[int, Field(ge=-1)] = -1,
    fovs: str | list[Annotated[int, Field(ge=0)]] | None = None,
    batch_size: Annotated[int, Field(ge=1)] = 2,
    n_workers: Annotated[int, Field(ge=1)] = 2,
    runner: Runner = "process",
    dask_address: str | None = None,
    params: ProcessingParams | Preset | None = None,
    stages: list[Stage] | None = None,
    reader_options: dict[str, Any] | None = None,
    fit_params: dict[str, float] | None = None,
    fit_bounds: dict[str, tuple[float, float]] | None = None,
    fit_thorough: bool = False,
    long_format: bool = False,
) -> PipelineSummary:
    """Process ``input_path`` into ``output_dir``, merge its FOVs into samples and fit
    ``model`` to every cell. Processing parameters are those of ``process_acquisition``;
    ``samples_yaml`` those of ``merge_samples``; ``fit_params``/``fit_bounds`` the fit's
    initial values and bounds and ``fit_thorough`` its ``thorough`` (``fit_traces``).
    """
    # Everything the later parts need is checked before the long part starts.
    if samples_yaml:
        load_samples(samples_yaml)
    check_fit_options(model, fit_params, fit_bounds)
    processed = process_acquisition_flow(
        input_path,
        output_dir,
        pc=pc,
        fl=fl,
        fov_start=fov_start,
        fov_end=fov_end,
        fovs=fovs,
        batch_size=batch_size,
        n_workers=n_workers,
        runner=runner,
        dask_address=dask_address,
        params=params,
        stages=stages,
        reader_options=reader_options,
    )
    plan = plan_jobs(
        input_path,
        output_dir,
        Channels(pc=pc, fl=tuple(fl or ())),
        fovs=[f.fov for f in processed.fovs],
        params=params,
        reader_options=reader_options,
        default_fl=fl is None,
    )
    pictures = [segmentation_png_task.submit(job) for job in plan.jobs]
    if not plan.channels.fl:  # phase contrast only: segmentation and tracks are the results
        get_run_logger().info("%s: %s", processed.base_name, NO_ANALYSIS)
        figures = _segmentation_figures(processed.base_name, pictures)
        return PipelineSummary(processed, None, None, figures)
    # A run that extracts the local-background intensity (--preset accurate) is fitted on it;
    # PyAMA's intensity_total is merged beside it.
    extracted = plan.params.extraction.features
    local = next((f for f in LOCAL_FEATURES if f in extracted), None)
    fit_feature = local or FIT_FEATURE
    features = [FIT_FEATURE, local, "area"] if local else None  # None: the default
    merged = merge_samples_flow(
        output_dir, samples_yaml, features=features, long_format=long_format
    )
    # This merge's files only: the folder may hold CSVs of an earlier merge's other samples.
    fitted = fit_traces_flow(
        [f for f in merged.files if csv_feature(f, features or DEFAULT_FEATURES) == fit_feature],
        model=model,
        params=fit_params,
        bounds=fit_bounds,
        n_workers=n_workers,
        thorough=fit_thorough,
    )
    figures = _segmentation_figures(processed.base_name, pictures)
    return PipelineSummary(processed, merged, fitted, figures)


def _segmentation_figures(base_name: str, pictures: list[PrefectFuture]) -> list[str]:
    """The segmentation pictures once drawn, shown in the Prefect UI."""
    figures = [p for p in (f.result() for f in pictures) if p is not None]
    create_markdown_artifact(
        key=artifact_key(base_name, "segmentation-figures"),
        description=f"Segmentation and track ids per FOV of {base_name}",
        markdown=figures_markdown(f"Segmentation of {base_name}", [("FOVs", figures)]),
    )
    return figures
