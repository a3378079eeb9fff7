"""README and docs/ tell the truth: every link and anchor resolves, every command's flags
exist in its ``--help``, every Python example imports what exists, every YAML example parses
(parameters and samples files as the commands would read them), every module path named in
backticks exists."""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import itertools
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from flows.cli.main import main as pyama_main

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PACKAGES = ("pyama_lib", "flows", "tasks", "deployments")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _prose(text: str) -> str:
    return FENCE.sub("", text)


def _blocks(language: str) -> list[tuple[Path, str]]:
    return [
        (page, m.group(2))
        for page in PAGES
        for m in FENCE.finditer(page.read_text())
        if m.group(1) == language
    ]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", _prose(page.read_text()), re.M)
    return {_anchor(h) for h in headings}


def test_every_page_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_the_readme_is_read_in_five_minutes():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_and_anchors_resolve(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.name}: {broken}"


def _commands(script: str) -> list[list[str]]:
    """The shell commands of a ``bash`` block: continuations joined, comments and
    ``VAR=value`` / ``export`` prefixes dropped."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote in an example payload: not a command line
            continue
        while tokens and (tokens[0] == "export" or re.match(r"\w+=", tokens[0])):
            tokens.pop(0)
        tokens = [t for t in tokens if t != "&"]
        if tokens:
            commands.append(tokens)
    return commands


@cache
def _pyama_help(command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert pyama_main([command, "--help"]) == 0, f"pyama has no command {command!r}"
    return out.getvalue()


@cache
def _tool_help(words: tuple[str, ...]) -> str:
    done = subprocess.run(
        [str(BIN / words[0]), *words[1:], "--help"], capture_output=True, text=True, timeout=120
    )
    return done.stdout if done.returncode == 0 else ""


def _flags(tokens: list[str]) -> list[str]:
    return [t.split("=")[0] for t in tokens if re.match(r"--?[a-zA-Z]", t)]


def _check_command(tokens: list[str]) -> list[str]:
    program = Path(tokens[0]).name
    if program == "pyama":
        command = tokens[1]
        helptext = _pyama_help(command)
    elif program in ("prefect", "dask"):
        # Flags before the sub-command are the program's own; the sub-command is the words up
        # to the first flag or argument that is not a word (a positional name counts as one).
        leading = list(itertools.takewhile(lambda t: t.startswith("-"), tokens[1:]))
        words = []
        for token in tokens[1 + len(leading) :]:
            if not re.fullmatch(r"[a-z][a-z-]*", token):
                break
            words.append(token)
        helptext = _tool_help((program, *words))
        if leading:
            helptext += _tool_help((program,))
        command = " ".join(words)
    elif program == "make":
        targets = re.findall(r"^([a-z]+):", (REPO / "Makefile").read_text(), re.M)
        return [f"make {t}: no such target" for t in tokens[1:] if t not in targets]
    else:
        return []
    return [
        f"{program} {command}: no option {flag}"
        for flag in _flags(tokens[1:])
        if not re.search(rf"(^|[\s,\[]){re.escape(flag)}(?![\w-])", helptext, re.M)
    ]


def test_every_command_and_flag_exists():
    wrong = []
    for page, script in _blocks("bash"):
        for tokens in _commands(script):
            wrong += [f"{page.name}: {w}" for w in _check_command(tokens)]
    assert not wrong, wrong


def test_a_wrong_flag_would_be_found():
    assert _check_command(["pyama", "process", "x.nd2", "--fovs", "1"]) == []
    assert _check_command(["pyama", "process", "x.nd2", "--fov", "1"]) == [
        "pyama process: no option --fov"
    ]
    assert _check_command(["make", "demo", "bench"]) == []
    assert _check_command(["make", "docs"]) == ["make docs: no such target"]


def _own_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def test_every_python_example_imports_what_exists():
    wrong = []
    for page, code in _blocks("python"):
        tree = ast.parse(code)  # a syntax error fails here, naming the block
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and _own_module(node.module):
                module = importlib.import_module(node.module)
                wrong += [
                    f"{page.name}: {node.module}.{alias.name}"
                    for alias in node.names
                    if not hasattr(module, alias.name)
                ]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _own_module(alias.name):
                        importlib.import_module(alias.name)
    assert not wrong, wrong


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


# Folders that commands write (make bench), named in the docs but not in a fresh clone.
GENERATED = ("benchmarks/out",)


def test_every_module_and_file_named_in_backticks_exists():
    wrong = []
    for page in PAGES:
        for span in re.findall(r"`([^`\s]+)`", _prose(page.read_text())):
            span = span.rstrip(".,:;()")
            if re.fullmatch(r"(pyama_lib|flows|tasks|deployments)(\.\w+)+", span):
                if not _resolves(span):
                    wrong.append(f"{page.name}: {span}")
            elif re.fullmatch(
                r"(pyama_lib|flows|tasks|deployments|tests|benchmarks|docs)/[\w/.-]*", span
            ):
                path = span.split(":")[0]
                if "<" in path or "*" in path or path.startswith(GENERATED):
                    continue
                if not (REPO / path).exists():
                    wrong.append(f"{page.name}: {span}")
    assert not wrong, wrong


def test_every_yaml_example_is_read_as_the_commands_read_it(tmp_path):
    from pyama_lib.io.samples import load_samples
    from pyama_lib.pipeline.processing_params import parse_params

    sections = {"segmentation", "background", "tracking", "extraction"}
    for page, text in _blocks("yaml"):
        data = yaml.safe_load(text)
        assert isinstance(data, dict), f"{page.name}: {text[:60]}"
        if set(data) <= sections:
            parse_params(data)
        elif "samples" in data:
            path = tmp_path / "samples.yaml"
            path.write_text(text)
            assert load_samples(path), page.name
