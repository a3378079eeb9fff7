"""The folder tree is the architecture: what each layer may import, and one name per thing.

Layers, bottom to top: ``pyama_lib`` (itself layered: core, io, then what builds on them),
``tasks``, ``flows`` and ``deployments``, and the ``pyama`` command (``flows/cli``) on top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pyama_lib", "tasks", "flows", "deployments")

# What each part may import of the project's own code (itself always). Unlisted: nothing.
LAYERS = {
    "pyama_lib": set(),  # the package face: its version
    "pyama_lib.core": set(),
    "pyama_lib.io": {"pyama_lib.core"},
    "pyama_lib.processing": {"pyama_lib.core", "pyama_lib.io"},
    "pyama_lib.analysis": {"pyama_lib.core", "pyama_lib.io"},
    "pyama_lib.synthetic": {"pyama_lib.core", "pyama_lib.io", "pyama_lib.analysis"},
    "pyama_lib.view": {"pyama_lib.core", "pyama_lib.io"},
    "pyama_lib.service": {"pyama_lib.core", "pyama_lib.io"},
    "pyama_lib.pipeline": {
        "pyama_lib",  # its __version__, for the store's completion markers
        "pyama_lib.core",
        "pyama_lib.io",
        "pyama_lib.processing",
        "pyama_lib.analysis",
    },
    "tasks": {"pyama_lib"},
    "flows": {"pyama_lib", "tasks"},
    "deployments": {"pyama_lib", "tasks", "flows"},
    "flows.cli": {"pyama_lib", "tasks", "flows", "deployments"},
}
# The public faces, which offer names that live elsewhere: two packages' __init__, and PyAMA's
# script API (a PyAMA script imports Channels and the rest from flows.compat).
FACES = {"pyama_lib.io", "flows", "flows.compat"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))
}


def _imports(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Every import in ``path``, at any depth (lazy ones in functions too): the module, and
    the names taken from it (``from m import a, b``; [] for ``import m``)."""
    module = _module_name(path) if path.is_relative_to(REPO) else ""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            yield name, [alias.name for alias in node.names]


def _own(name: str) -> str | None:
    """The project module an imported name refers to (``pyama_lib.io.store.FovStore`` ->
    ``pyama_lib.io.store``), or None for third-party code."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _part(module: str) -> str:
    """The layer of ``module``: the most specific key of :data:`LAYERS` it lies in."""
    candidates = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    return max(candidates, key=len, default=module)


def _within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def _dependencies(path: Path) -> set[str]:
    deps = set()
    for name, names in _imports(path):
        for full in [f"{name}.{n}" for n in names] or [name]:
            own = _own(full)
            if own is not None and own != _module_name(path):
                deps.add(own)
    return deps


def test_pyama_lib_imports_neither_prefect_nor_argparse():
    for path in (REPO / "pyama_lib").rglob("*.py"):
        top = {name.split(".")[0] for name, _ in _imports(path)}
        assert not top & {"prefect", "prefect_dask", "argparse"}, path
    probe = (
        "import sys, pyama_lib.pipeline.stages, pyama_lib.pipeline.pool; "
        "print('prefect' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pyama_lib_top_level_is_only_the_package_face():
    assert [p.name for p in (REPO / "pyama_lib").glob("*.py")] == ["__init__.py"]
    face = _dependencies(REPO / "pyama_lib" / "__init__.py")
    assert not face, f"pyama_lib/__init__.py imports {sorted(face)}: keep names in their modules"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_part_imports_only_the_parts_below_it(module):
    """A module may import its own part and the parts :data:`LAYERS` allows it, not a more
    specific part above them (``flows`` may not import ``flows.cli``)."""
    part = _part(module)
    assert part in LAYERS, f"{module}: a part of the project the layering does not know"
    outside = sorted(
        dep
        for dep in _dependencies(MODULES[module])
        if _part(dep) != part and not _within(_part(dep), LAYERS[part])
    )
    assert not outside, f"{module} ({part}) imports {outside}"


def test_no_two_modules_need_each_other():
    """No import cycle, however far round, lazy imports inside functions included."""
    graph = {m: _dependencies(p) for m, p in MODULES.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for dep in graph.get(module, ()):
            if dep != module and not module.startswith(dep + "."):  # a package's own parent
                visit(dep, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def _defined(path: Path) -> set[str]:
    """Names a module defines at its top level (in ``if``/``try`` blocks too)."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.If | ast.Try):
            body += node.body + node.orelse + getattr(node, "finalbody", [])
            body += [s for h in getattr(node, "handlers", []) for s in h.body]
    return names


def test_every_name_is_imported_from_the_module_that_defines_it():
    """One name, one home: no module passes on a name it imported (but the public faces,
    ``from pyama_lib.io import open_acquisition`` and ``from flows import ...``)."""
    sources = [
        *MODULES.values(),
        *(REPO / "tests").rglob("*.py"),
        *(REPO / "benchmarks").rglob("*.py"),
    ]
    wrong = []
    for path in sources:
        for name, names in _imports(path):
            if name not in MODULES or name in FACES:
                continue
            defined = _defined(MODULES[name])
            for n in names:
                if n not in defined and f"{name}.{n}" not in MODULES:
                    wrong.append(f"{path.relative_to(REPO)}: {n} from {name}")
    assert not wrong, "names imported from a module that does not define them: " + "; ".join(wrong)


def test_no_two_library_modules_share_a_name():
    names = [p.stem for p in (REPO / "pyama_lib").rglob("*.py") if p.stem != "__init__"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_the_top_of_flows_holds_flows():
    """Support modules live in flows/support, the CLI in flows/cli; what is left at the top
    defines Prefect flows, but for ``compat`` (PyAMA's script API over the process flow)."""
    for path in (REPO / "flows").glob("*.py"):
        if path.name in ("__init__.py", "compat.py"):
            continue
        decorators = [
            d
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef)
            for d in node.decorator_list
        ]
        flows = [d for d in decorators if "flow" in ast.unparse(d).split("(")[0]]
        assert flows, f"{path.name} defines no flow"


@pytest.mark.parametrize("path", sorted((REPO / "pyama_lib" / "processing").glob("*.py")))
def test_processing_holds_pure_array_functions(path):
    """No store, run record, results file or orchestration in processing/: that is
    pipeline/'s job."""
    forbidden = ("pyama_lib.pipeline", "pyama_lib.io.store", "pyama_lib.io.results_yaml")
    forbidden += ("pyama_lib.io.readers", "pyama_lib.io.identity", "zarr")
    assert not [n for n, _ in _imports(path) if n.startswith(forbidden)]


def test_tasks_hold_only_prefect_tasks_and_their_logging():
    assert sorted(p.name for p in (REPO / "tasks").glob("*.py")) == [
        "__init__.py",
        "analysis.py",
        "logs.py",
        "stages.py",
    ]
    for name in ("analysis.py", "stages.py"):  # the task modules define Prefect tasks
        assert "prefect" in {n.split(".")[0] for n, _ in _imports(REPO / "tasks" / name)}, name


def test_one_channels_record_and_one_default_fluorescence_channel():
    from pyama_lib.core import selection
    from pyama_lib.io import results_yaml

    assert results_yaml.Channels is selection.Channels
    assert results_yaml.ProcessingResults(output_dir=Path(".")).channels.pc is None
    for path in [*REPO.glob("flows/**/*.py"), *REPO.glob("pyama_lib/**/*.py")]:
        text = path.read_text()
        assert "else [1]" not in text and "fl=(1,)" not in text, path  # DEFAULT_FL instead


def test_one_helper_makes_values_yaml_safe(tmp_path):
    """A path and a tuple in the parameters come out the same in run.yaml and in
    processing_results.yaml (both through pyama_lib.io.plain)."""
    import yaml

    from pyama_lib.io.results_yaml import ProcessingResults, save_results
    from pyama_lib.pipeline.run_record import RunRecord, write_run_yaml

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
