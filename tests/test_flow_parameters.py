"""The flows' typed parameters: what the Prefect dashboard's "Run" form is built from, and
what Prefect refuses before a run starts. No flow runs here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from flows.process import process_acquisition_flow
from pyama_lib.pipeline.processing_params import ProcessingParams


@pytest.fixture(scope="module")
def schema() -> dict:
    return parameter_schema(process_acquisition_flow.fn).model_dump_for_openapi()


def test_the_run_form_has_named_fields_with_defaults_and_limits(schema):
    props, defs = schema["properties"], schema["definitions"]
    assert schema["required"] == ["input_path", "output_dir"]
    assert props["runner"]["enum"] == ["process", "thread", "dask"]
    assert props["runner"]["default"] == "process"
    assert props["batch_size"]["minimum"] == 1 and props["batch_size"]["default"] == 2
    assert props["n_workers"]["minimum"] == 1
    stages = props["stages"]["anyOf"][0]["items"]["enum"]
    assert stages == ["copy", "segment", "correct", "track", "extract"]
    # The per-stage parameters are nested models with PyAMA's defaults and their ranges.
    tracking = defs["TrackingParams"]["properties"]
    assert tracking["max_gap"] == {
        "default": 0,
        "minimum": 0,
        "title": "Max Gap",
        "type": "integer",
    }
    assert tracking["min_iou"]["maximum"] == 1 and tracking["min_iou"]["default"] == 0.1
    assert defs["SegmentationParams"]["properties"]["n_bins"]["default"] == 200
    assert set(defs["ProcessingParams"]["properties"]) == {
        "segmentation",
        "background",
        "tracking",
        "extraction",
    }


def test_prefect_refuses_bad_values_before_a_run_starts():
    base = {"input_path": "a.nd2", "output_dir": "out"}
    with pytest.raises(ParameterTypeError, match="max_gap"):
        process_acquisition_flow.validate_parameters(
            {**base, "params": {"tracking": {"max_gap": 1.5}}}
        )
    with pytest.raises(ParameterTypeError, match="batch_size"):
        process_acquisition_flow.validate_parameters({**base, "batch_size": 0})
    with pytest.raises(ParameterTypeError, match="runner"):
        process_acquisition_flow.validate_parameters({**base, "runner": "gpu"})
    ok = process_acquisition_flow.validate_parameters(
        {**base, "params": {"tracking": {"max_gap": 2}}}
    )
    assert ok["params"] == ProcessingParams(tracking={"max_gap": 2})


def test_the_temporary_server_gets_time_to_start_on_a_busy_first_run():
    """Prefect's own default (20 s) was measured too short for a first run on a busy machine;
    the ``pyama`` command raises it (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS) before
    Prefect reads its settings. A fresh interpreter, as the command starts."""
    probe = (
        "import flows.cli.main; from prefect.settings import "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s; print(s.value())"
    )
    env = {k: v for k, v in os.environ.items() if "EPHEMERAL_STARTUP" not in k}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert int(out.stdout.split()[-1]) >= 120


def test_the_python_entry_point_reports_them_as_parameter_errors(tmp_path):
    """What Prefect would refuse reaches a caller as PyAMA Flow's ParamsError (the CLI's exit
    status 2), before a flow run or a worker starts."""
    from flows.process import process_acquisition
    from pyama_lib.core.errors import ParamsError

    with pytest.raises(ParamsError, match="runner"):
        process_acquisition("a.nd2", str(tmp_path / "out"), runner="gpu")
    with pytest.raises(ParamsError, match="pc"):
        process_acquisition("a.nd2", str(tmp_path / "out"), pc=-1)
    assert not (tmp_path / "out").exists()
