"""``pyama process`` argument parsing (no flow runs: these fail or parse before one starts)."""

from __future__ import annotations

import pytest

from flows.cli import main as cli_main
from flows.cli import parse_stages
from pyama_lib.errors import ParamsError


@pytest.mark.parametrize(
    ("text", "stages"),
    [
        (None, None),
        ("copy,segment", ["copy", "segment"]),
        ("copy, segment", ["copy", "segment"]),
        (" track ,extract, ", ["track", "extract"]),
        ("extract,,", ["extract"]),
        ("segmnet", ["segmnet"]),  # names are checked by the flow, which lists the real ones
    ],
)
def test_parse_stages(text, stages):
    assert parse_stages(text) == stages


@pytest.mark.parametrize("text", ["", " , ", ",,"])
def test_stages_naming_nothing_are_refused(text):
    with pytest.raises(ParamsError, match="names no stage; give some of copy,segment"):
        parse_stages(text)


def test_empty_stages_exit_2_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["process", str(tmp_path / "acq.nd2"), "-o", str(out), "--stages", " , "])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("pyama process: error: --stages ' , ' names no stage")
    assert not out.exists()
