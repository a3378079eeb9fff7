"""``pyama process`` argument parsing (no flow runs: these fail or parse before one starts)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli.main import main as cli_main
from flows.cli.options import parse_stages
from pyama_lib.core.errors import ParamsError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "stages"),
    [
        (None, None),
        ("copy,segment", ["copy", "segment"]),
        ("segment, copy", ["copy", "segment"]),  # pipeline order
        (" track ,extract, ", ["track", "extract"]),
        ("extract,,", ["extract"]),
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


def test_a_stage_typo_is_refused_in_a_second_before_prefect_starts(tmp_path):
    """A subprocess, so "before Prefect" is measured from a cold start: the command exits 2
    naming the typo and the real stages, with Prefect never imported."""
    out = tmp_path / "out"
    probe = (
        "import sys; from flows.cli.main import main; code = main(sys.argv[1:]); "
        "print('prefect' in sys.modules); sys.exit(code)"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", probe, "process", "x.nd2", "-o", str(out), "--stages", "segmnet"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "unknown stage(s) ['segmnet']; stages are copy, segment, correct" in done.stderr
    assert done.stdout.strip() == "False"  # Prefect was never imported
    assert elapsed < 10  # about 1 s here; generous for a loaded CI machine
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--batch-size", "0"], "batch_size must be at least 1, got 0"),
        (["--workers", "0"], "n_workers must be at least 1, got 0"),
        (["--retries", "-1"], "retries must be 0 or more, got -1"),
    ],
)
def test_bad_counts_exit_2_before_anything_runs(tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    code = cli_main(["process", str(tmp_path / "acq.nd2"), "-o", str(out), *extra])
    assert code == 2 and needle in capsys.readouterr().err
    assert not out.exists()


def test_a_parameters_file_that_is_not_utf8_is_bad_input(tmp_path, capsys):
    params = tmp_path / "lab.yaml"
    params.write_bytes("segmentation:\n  n_sigma: 3  # \u00b5m\n".encode("latin-1"))
    out = tmp_path / "out"
    code = cli_main(["process", str(tmp_path / "acq.nd2"), "-o", str(out), "--params", str(params)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{params}: not UTF-8 text (byte 30 is 0xb5)" in err
    assert "Traceback" not in err and not out.exists()


def test_an_internal_error_prints_one_line_and_keeps_the_traceback_in_a_log(
    tmp_path, capsys, monkeypatch
):
    import flows.cli.main
    import flows.cli.tools

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(flows.cli.tools, "_run_info", broken)
    monkeypatch.setattr(flows.cli.main.tempfile, "gettempdir", lambda: str(tmp_path))
    code = cli_main(["info", str(tmp_path / "x.nd2")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("pyama info: internal error: RuntimeError: a bug. The full traceback")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    (log,) = tmp_path.glob("pyama-error-*.log")
    assert str(log) in err
    assert 'raise RuntimeError("a bug")' in log.read_text()
