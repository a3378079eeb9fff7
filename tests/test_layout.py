"""The folder tree is the architecture: what each layer may import, and one name per thing."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pyama_lib_never_imports_prefect():
    for path in (REPO / "pyama_lib").rglob("*.py"):
        assert not any(n.split(".")[0] in ("prefect", "prefect_dask") for n in _imports(path)), path
    probe = (
        "import sys, pyama_lib.pipeline.stages, pyama_lib.pipeline.pool; "
        "print('prefect' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("path", sorted((REPO / "pyama_lib" / "processing").glob("*.py")))
def test_processing_holds_pure_array_functions(path):
    """No store, run record, results file or orchestration in processing/: that is
    pipeline/'s job."""
    forbidden = ("pyama_lib.pipeline", "pyama_lib.provenance", "pyama_lib.io.store")
    forbidden += ("pyama_lib.io.results_yaml", "pyama_lib.io.acquisition", "zarr")
    assert not [n for n in _imports(path) if n.startswith(forbidden)]


def test_tasks_hold_only_prefect_tasks_and_their_logging():
    assert sorted(p.name for p in (REPO / "tasks").glob("*.py")) == [
        "__init__.py",
        "analysis.py",
        "logs.py",
        "stages.py",
    ]
    for name in ("analysis.py", "stages.py"):  # the task modules define Prefect tasks
        assert "prefect" in {n.split(".")[0] for n in _imports(REPO / "tasks" / name)}, name


def test_one_channels_record_and_one_default_fluorescence_channel():
    from pyama_lib import config
    from pyama_lib.io import results_yaml

    assert results_yaml.Channels is config.Channels
    assert results_yaml.ProcessingResults(output_dir=Path(".")).channels.pc is None
    for path in [*REPO.glob("flows/*.py"), *REPO.glob("pyama_lib/**/*.py")]:
        text = path.read_text()
        assert "else [1]" not in text and "fl=(1,)" not in text, path  # DEFAULT_FL instead


def test_one_helper_makes_values_yaml_safe(tmp_path):
    """A path and a tuple in the parameters come out the same in run.yaml and in
    processing_results.yaml (both through pyama_lib.io.plain)."""
    import yaml

    from pyama_lib.io.results_yaml import ProcessingResults, save_results
    from pyama_lib.provenance import RunRecord, write_run_yaml

    params = {"mask": Path("/data/mask.tif"), "crop": (1, 2)}
    save_results(ProcessingResults(output_dir=tmp_path, params=params))
    write_run_yaml(RunRecord(parameters=params), tmp_path)
    results = yaml.safe_load((tmp_path / "processing_results.yaml").read_text())["params"]
    record = yaml.safe_load((tmp_path / "run.yaml").read_text())["runs"][0]["parameters"]
    assert results == record == {"mask": "/data/mask.tif", "crop": [1, 2]}


def test_open_acquisition_is_the_public_reading_api(nd2_dir):
    from pyama_lib.io import open_acquisition

    with open_acquisition(nd2_dir / "arcadia-example-timelapse.nd2") as acq:
        assert (acq.n_frames, acq.height, acq.width) == (53, 64, 64)


def test_zarr_floor_is_the_first_release_with_atomic_local_writes():
    """zarr 3.1.3 (zarr-python #3412) writes each file to a temporary name and renames it; an
    earlier release could leave a half-written zarr.json, i.e. a corrupt completion marker."""
    import zarr

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (zarr_req,) = [Requirement(d) for d in deps if Requirement(d).name == "zarr"]
    assert not zarr_req.specifier.contains("3.1.2")
    assert zarr_req.specifier.contains("3.1.3")
    assert Version(zarr.__version__) in zarr_req.specifier
