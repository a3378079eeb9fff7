"""``pyama serve`` and ``pyama watch`` refuse bad set-ups with exit status 2 and one line that
names the problem, before they serve or watch anything (no Prefect server needed)."""

from __future__ import annotations

import pytest

from flows.cli.main import main


@pytest.fixture
def folders(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return inbox, tmp_path / "results"


def run(argv, capsys):
    status = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def test_serve_needs_a_running_server(folders, capsys, monkeypatch):
    inbox, out = folders
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    status, err = run(["serve", "--inbox", str(inbox), "--output-root", str(out)], capsys)
    assert status == 2
    assert "PREFECT_API_URL is not set" in err and "prefect server start" in err


def test_serve_says_when_no_server_answers(folders, capsys, monkeypatch):
    inbox, out = folders
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # the discard port
    status, err = run(["serve", "--inbox", str(inbox), "--output-root", str(out)], capsys)
    assert status == 2
    assert "no Prefect server answers at http://127.0.0.1:9/api" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--schedule", "every tuesday"], "neither a cron expression"),
        (["--schedule", "0.5s"], "at least 1 s"),
        (["--max-concurrent", "0"], "--max-concurrent must be at least 1"),
        (["--quiet-seconds", "-1"], "--quiet-seconds must be 0 or more"),
        (["--model", "logistic"], "logistic"),
        (["--workers", "0"], "n_workers"),
        (["--samples", "missing.yaml"], "missing.yaml"),
    ],
)
def test_serve_refuses_bad_options_before_anything_starts(folders, capsys, extra, message):
    inbox, out = folders
    argv = ["serve", "--inbox", str(inbox), "--output-root", str(out), *extra]
    status, err = run(argv, capsys)
    assert status == 2, err
    assert message in err
    assert not out.exists()  # nothing created for a refused set-up


def test_serve_names_a_missing_inbox(tmp_path, capsys):
    status, err = run(["serve", "--inbox", str(tmp_path / "nope"), "--output-root", "x"], capsys)
    assert status == 2
    assert f"{tmp_path / 'nope'}: inbox folder not found" in err


def test_serve_names_an_output_root_it_cannot_create(folders, capsys):
    inbox, _ = folders
    blocker = inbox.parent / "file"
    blocker.write_text("not a folder")
    argv = ["serve", "--inbox", str(inbox), "--output-root", str(blocker / "results")]
    status, err = run(argv, capsys)
    assert status == 2
    assert "cannot create the output root" in err


def test_watch_names_a_missing_folder_and_needs_a_server(folders, capsys, monkeypatch):
    inbox, _ = folders
    status, err = run(["watch", str(inbox.parent / "nope")], capsys)
    assert status == 2 and "watched folder not found" in err
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    status, err = run(["watch", str(inbox), "--state", str(inbox.parent / "s.json")], capsys)
    assert status == 2 and "PREFECT_API_URL is not set" in err


def test_watch_refuses_a_corrupt_ledger(folders, capsys):
    inbox, _ = folders
    ledger = inbox.parent / "ledger.json"
    ledger.write_text("{not json")
    status, err = run(["watch", str(inbox), "--state", str(ledger)], capsys)
    assert status == 2
    assert f"{ledger}: the watcher's ledger cannot be read" in err


def test_serve_refuses_folders_inside_one_another(folders, capsys, monkeypatch):
    inbox, _ = folders
    status, err = run(["serve", "--inbox", str(inbox), "--output-root", str(inbox / "out")], capsys)
    assert status == 2 and "overlaps" in err
    monkeypatch.chdir(inbox)  # the runs would import modules from the inbox
    status, err = run(
        ["serve", "--inbox", str(inbox), "--output-root", str(inbox.parent / "r")], capsys
    )
    assert status == 2 and "is inside the inbox" in err


def test_the_runs_folders_come_from_the_environment(monkeypatch, tmp_path):
    from pyama_lib.core.errors import InboxPathError
    from pyama_lib.service.inbox import configured_folders

    monkeypatch.delenv("PYAMA_INBOX", raising=False)
    with pytest.raises(InboxPathError, match="PYAMA_INBOX must name an absolute folder"):
        configured_folders()
    monkeypatch.setenv("PYAMA_INBOX", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("PYAMA_OUTPUT_ROOT", "relative/out")
    with pytest.raises(InboxPathError, match="PYAMA_OUTPUT_ROOT"):
        configured_folders()
    monkeypatch.setenv("PYAMA_OUTPUT_ROOT", str(tmp_path / "out"))
    assert configured_folders() == (
        [str(tmp_path / "a"), str(tmp_path / "b")],
        str(tmp_path / "out"),
    )


def test_the_runs_take_the_preset_and_the_parameters_file(folders, tmp_path):
    """``--preset`` and ``--params`` become the deployment's parameters, the file's values
    winning name by name; without either the runs keep the flow's defaults (PyAMA's)."""
    from flows.cli.main import build_parser
    from flows.cli.service import serve_settings

    inbox, results = folders
    serve = ["serve", "--inbox", str(inbox), "--output-root", str(results)]
    lab = tmp_path / "lab.yaml"
    lab.write_text("tracking: {max_gap: 1}\n")

    plain = serve_settings(build_parser().parse_args(serve))
    assert "params" not in plain.processing
    preset = serve_settings(build_parser().parse_args([*serve, "--preset", "accurate"]))
    assert preset.processing["params"]["segmentation"]["iterations"] == 2
    assert preset.processing["params"]["tracking"]["max_gap"] == 2
    both = serve_settings(
        build_parser().parse_args([*serve, "--preset", "accurate", "--params", str(lab)])
    )
    assert both.processing["params"]["tracking"]["max_gap"] == 1
    assert both.processing["params"]["segmentation"]["iterations"] == 2
