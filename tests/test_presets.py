"""The "accurate" preset: what it sets, how --params overrides it, and its errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flows.cli.options import add_processing_arguments, processing_options
from pyama_lib.core.errors import ParamsError
from pyama_lib.pipeline.processing_params import ProcessingParams, parse_params


def _options(*argv: str) -> ProcessingParams:
    parser = argparse.ArgumentParser()
    add_processing_arguments(parser)
    return processing_options(parser.parse_args(argv))["params"]


def test_the_accurate_preset_turns_on_the_options_beyond_pyama() -> None:
    accurate = parse_params("accurate")
    assert accurate.segmentation.iterations == 2
    assert accurate.tracking.start_new_tracks and accurate.tracking.max_gap == 2
    assert accurate.extraction.features == ("intensity_local_trimmed",)
    assert accurate.extraction.min_frames == 10
    # everything else stays PyAMA's
    defaults = ProcessingParams()
    assert accurate.background == defaults.background
    assert accurate.segmentation.model_copy(update={"iterations": 3}) == defaults.segmentation
    assert _options("--preset", "accurate") == accurate
    assert _options() == defaults


def test_params_win_over_the_preset_name_by_name(tmp_path: Path) -> None:
    over = tmp_path / "over.yaml"
    over.write_text("tracking:\n  max_gap: 1\nextraction:\n  min_frames: 5\n")
    params = _options("--preset", "accurate", "--params", str(over))
    assert params.tracking.max_gap == 1 and params.tracking.start_new_tracks  # the rest stays
    assert params.extraction.min_frames == 5
    assert params.extraction.features == ("intensity_local_trimmed",)
    assert params.segmentation.iterations == 2


def test_an_unknown_preset_is_named() -> None:
    with pytest.raises(ParamsError, match="unknown preset 'acurate'; choose one of accurate"):
        parse_params("acurate")


def test_the_dashboard_form_offers_the_preset_by_name() -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.process import process_acquisition_flow

    base = {"input_path": "a.nd2", "output_dir": "out"}
    assert process_acquisition_flow.validate_parameters({**base, "params": "accurate"})["params"]
    with pytest.raises(ParameterTypeError):
        process_acquisition_flow.validate_parameters({**base, "params": "acurate"})


def test_the_pipeline_fits_the_local_intensity_when_the_preset_extracts_it(
    prefect_api, tmp_path: Path
) -> None:
    from flows.pipeline import pyama_pipeline_flow
    from pyama_lib.synthetic.generator import make_synthetic

    info = make_synthetic(tmp_path / "in", n_fovs=1, n_frames=32, size=128, n_cells=4, seed=3)
    out = tmp_path / "out"
    summary = pyama_pipeline_flow(str(info.path), str(out), params="accurate", runner="thread")
    merged = sorted(Path(f).name for f in summary.merge.files if f.endswith(".csv"))
    assert merged == [
        "synthetic_area_ch_1.csv",
        "synthetic_intensity_local_trimmed_ch_1.csv",
        "synthetic_intensity_total_ch_1.csv",
    ]
    fitted = [Path(f.fitted_csv).name for f in summary.fit.files]
    assert fitted == ["synthetic_intensity_local_trimmed_ch_1_fitted.csv"]
    assert summary.fit.files[0].n_cells == 4
