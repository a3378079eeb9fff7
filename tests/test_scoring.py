"""score_traces and ``pyama score`` on hand-made traces whose recall, purity and errors are
known, and on a processed synthetic acquisition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pyama_lib.core.errors import InputDataError
from pyama_lib.synthetic.scoring import score_traces

FRAMES = np.arange(10)


def _cell(cell: int, x: float, y: float, frames=FRAMES, area=700.0, intensity=None):
    intensity = np.full(len(frames), 100.0) if intensity is None else intensity
    return pd.DataFrame(
        {"fov": 0, "cell": cell, "frame": frames, "position_x": x, "position_y": y,
         "intensity_total": intensity, "area": area}
    )  # fmt: skip


@pytest.fixture
def truth() -> pd.DataFrame:
    a = _cell(1, 20, 20, intensity=np.r_[0.0, 0.0, np.full(8, 100.0)])  # expresses from frame 2
    b = _cell(2, 60, 60)
    c = _cell(3, 100, 100, frames=FRAMES[5:])  # arrives late
    d = _cell(4, 150, 150, area=200.0)  # small
    return pd.concat([a, b, c, d], ignore_index=True)


def test_known_recall_precision_purity_switches_and_errors(truth) -> None:
    a = truth[truth["cell"] == 1]
    t1 = a.assign(cell=11, position_x=21.5, intensity_total=a["intensity_total"] * 1.1)
    b, c = truth[truth["cell"] == 2], truth[truth["cell"] == 3]
    # follows b for frames 0-5 (20% low), then jumps to c for frames 6-9
    t2 = pd.concat([b[b["frame"] <= 5].assign(intensity_total=80.0), c[c["frame"] >= 6]])
    t2 = t2.assign(cell=12)
    t3 = _cell(13, 180, 20)  # nothing there
    cells = pd.DataFrame({"fov": 0, "cell": [1, 2, 3, 4], "faint": [False, False, True, False]})
    score = score_traces(pd.concat([t1, t2, t3]), truth, (200, 200), truth_cells=cells)
    assert (score.n_true_cells, score.n_traces) == (4, 3)
    assert score.recall == 0.5  # a and b; c is only visited by b's trace
    assert score.precision == pytest.approx(2 / 3, abs=1e-6)
    assert score.purity == 0.8  # 16 of the 20 points of t1 and t2 are their own cell's
    assert score.coverage == pytest.approx(16 / 35, abs=1e-6)
    assert score.id_switches == 1
    err = score.intensity_error
    assert err["n_points"] == 14  # a's 8 expressing frames, b's 6
    assert err["median_abs"] == pytest.approx(0.1)
    assert err["p90_abs"] == pytest.approx(0.2)
    assert err["signed_median"] == pytest.approx(0.1)
    assert err["n_border_points"] == 8 and err["border_signed_median"] == pytest.approx(0.1)
    assert score.misses == {"all": 2, "late": 1, "leaving": 0, "small": 1, "faint": 1}


def test_a_trace_mostly_elsewhere_detects_nothing(truth) -> None:
    a = truth[truth["cell"] == 1]
    # 4 of 10 points on cell 1, the rest 30 px away: under min_share
    wandering = a.assign(cell=5, position_x=np.where(a["frame"] < 4, 20.0, 50.0))
    score = score_traces(wandering, truth, (200, 200))
    assert score.recall == 0 and score.precision == 0
    assert np.isnan(score.purity) and score.id_switches == 0
    assert score.misses["all"] == 4
    # within max_distance (5 px) a 4 px offset still matches; 6 px does not
    assert score_traces(a.assign(position_y=24.0), truth, (200, 200)).recall == 0.25
    assert score_traces(a.assign(position_y=26.0), truth, (200, 200)).recall == 0


def test_a_table_without_positions_is_refused(truth) -> None:
    with pytest.raises(InputDataError, match="traces table lacks the column"):
        score_traces(truth.drop(columns="position_x"), truth, (200, 200))


def test_pyama_score_on_a_processed_synthetic_acquisition(prefect_api, tmp_path: Path) -> None:
    from flows.process import process_acquisition
    from pyama_lib.synthetic.generator import make_synthetic

    info = make_synthetic(tmp_path / "in", n_fovs=1, n_frames=32, size=128, n_cells=4, seed=3)
    out = tmp_path / "out"
    process_acquisition(str(info.path), str(out))
    pyama = Path(sys.executable).parent / "pyama"
    done = subprocess.run(
        [str(pyama), "score", str(out), "--truth", str(tmp_path / "in")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "recall" in done.stdout and "1.000" in done.stdout
    strict = {"parse_constant": lambda name: pytest.fail(f"{name} is not JSON")}
    score = json.loads((out / "score_ch_1.json").read_text(), **strict)
    assert score["n_true_cells"] == 4 and score["n_traces"] == 4
    assert score["recall"] == score["precision"] == score["purity"] == 1.0
    assert score["id_switches"] == 0 and score["misses"]["all"] == 0
    error = score["intensity_error"]
    assert error["n_points"] > 0 and np.isfinite(error["median_abs"])
    missing = subprocess.run(
        [str(pyama), "score", str(out), "--truth", str(tmp_path / "nowhere")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nowhere" in missing.stderr
    no_output = subprocess.run(
        [str(pyama), "score", str(tmp_path / "no-output"), "--truth", str(tmp_path / "in")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert no_output.returncode == 2 and "traces dataset not found" in no_output.stderr


def test_another_intensity_column_is_scored_when_named(truth) -> None:
    a = truth[truth["cell"] == 1]
    trace = a.assign(
        intensity_total=a["intensity_total"] * 1.5, intensity_local=a["intensity_total"]
    )
    assert score_traces(trace, truth, (200, 200)).intensity_error["median_abs"] == 0.5
    local = score_traces(trace, truth, (200, 200), feature="intensity_local")
    assert local.intensity_error["median_abs"] == 0.0 and local.intensity_error["n_points"] == 8
    with pytest.raises(InputDataError, match="intensity_mean"):
        score_traces(trace, truth, (200, 200), feature="intensity_mean")


def test_points_without_a_position_or_a_measurement_are_no_points(truth) -> None:
    a = truth[truth["cell"] == 1].reset_index(drop=True)
    trace = a.assign(cell=9, intensity_local=a["intensity_total"])
    trace.loc[9, "position_x"] = np.nan  # matches nothing, but is still one of the trace's points
    trace.loc[8, "intensity_local"] = np.nan  # no background ring: no measurement
    score = score_traces(trace, truth, (200, 200), feature="intensity_local")
    assert score.recall == 0.25 and score.purity == 0.9
    assert score.intensity_error["n_points"] == 6  # 8 expressing frames, less the two above
    assert score.intensity_error["median_abs"] == 0.0
