"""The whole pipeline through real Prefect (temporary API): a synthetic acquisition with known
kinetics → process → merge → fit, and the figures; plus the merge and fit commands' errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from flows.cli.main import main as cli_main
from flows.fit import fit_traces_flow
from flows.pipeline import pyama_pipeline_flow
from pyama_lib.analysis.fitting import fit_cells
from pyama_lib.io.analysis_csv import read_analysis_csv
from pyama_lib.io.fit_results import read_fit_results
from pyama_lib.io.traces import read_traces_csv, traces_csv_path
from pyama_lib.synthetic.generator import make_synthetic


@pytest.fixture(scope="module")
def pipeline(prefect_api, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    info = make_synthetic(
        root / "acq", n_fovs=2, n_frames=60, size=256, n_cells=16, seed=11, write_labels=False
    )
    samples = root / "samples.yaml"
    samples.write_text("samples:\n  - {name: dox, fovs: '0'}\n  - {name: ctrl, fovs: [1]}\n")
    out = root / "out"
    summary = pyama_pipeline_flow(str(info.path), str(out), str(samples), runner="thread")
    return info, out, summary


def test_merged_columns_are_the_good_cells_of_the_traces(pipeline):
    info, out, summary = pipeline
    assert summary.merge.samples == {"dox": 16, "ctrl": 16}
    for sample, fov in (("dox", 0), ("ctrl", 1)):
        traces = read_traces_csv(traces_csv_path(out, "synthetic", fov, 1))
        merged = read_analysis_csv(out / "merged" / f"{sample}_intensity_total_ch_1.csv")
        good = sorted(traces.loc[traces.good, "cell"].unique())
        assert list(merged.columns) == [f"fov_{fov:03d}_cell_{c}" for c in good]
        one = traces[traces.cell == good[0]].sort_values("time")
        np.testing.assert_allclose(merged.index, one["time"] / 60.0)  # hours, as read
        np.testing.assert_allclose(merged.iloc[:, 0], one["intensity_total"], atol=1e-6)


def test_expressing_cells_are_fitted_near_the_generators_truth(pipeline):
    """Expressing cells: a good fit, and the rise it describes (first to last frame) within
    15 % of the generator's. (t0 alone trades off against the maturation rate km once noise and
    segmentation are in the data; the rise does not.)"""
    from pyama_lib.analysis.models import get_model

    info, out, _ = pipeline
    truth = pd.read_csv(info.cells_csv)
    truth_traces = pd.read_csv(info.traces_csv)
    model = get_model("maturation")
    checked = 0
    for sample, fov in (("dox", 0), ("ctrl", 1)):
        fitted = read_fit_results(out / "merged" / f"{sample}_intensity_total_ch_1_fitted.parquet")
        traces = read_traces_csv(traces_csv_path(out, "synthetic", fov, 1))
        first = traces[traces.frame == 0].set_index("cell")
        for _, row in fitted.iterrows():
            x, y = first.loc[row["cell"], ["position_x", "position_y"]]
            cells = truth[truth.fov == fov]
            nearest = cells.iloc[np.argmin(np.hypot(cells.x0 - x, cells.y0 - y))]
            if not nearest.expresses or nearest.ktl < 3000:  # weak cells: below the noise
                continue
            checked += 1
            assert row["success"] and row["r_squared"] > 0.9, row.to_dict()
            trace = truth_traces[(truth_traces.fov == fov) & (truth_traces.cell == nearest.cell)]
            t = trace.sort_values("frame")["time"].to_numpy() / 60.0
            curve = model.evaluate(t[[0, -1]], row[list(model.param_names)].to_numpy(float)[None])
            rise, true_rise = curve[0, 1] - curve[0, 0], np.ptp(trace["intensity_total"])
            assert abs(rise - true_rise) < 0.15 * true_rise, (row.to_dict(), true_rise)
    assert checked >= 8


def test_the_figures_exist_and_show_something(pipeline):
    _, out, summary = pipeline
    names = {Path(f).name for f in summary.figures}
    assert {"synthetic_fov_000_segmentation.png", "dox_ch_1_traces.png"} <= names
    assert "dox_intensity_total_ch_1_fitted_examples.png" in names
    assert "ctrl_intensity_total_ch_1_fitted_histograms.png" in names
    for figure in summary.figures:
        image = imread(figure)[..., :3]
        assert image.shape[0] > 200 and image.std() > 0.05, figure  # not blank


def test_the_figures_are_shown_in_the_prefect_ui(pipeline):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="out-fit-figures"))
        )
    assert found, "no fit-figures artifact"
    markdown = found[0].data
    assert markdown.count("data:image/png;base64,") >= 4  # two figures per fitted CSV


def test_a_thorough_fit_runs_through_the_flow_and_is_never_worse(pipeline, tmp_path):
    _, out, _ = pipeline
    csv = shutil.copy(out / "merged" / "dox_intensity_total_ch_1.csv", tmp_path)
    fit_traces_flow(str(csv), thorough=True)
    thorough = read_fit_results(tmp_path / "dox_intensity_total_ch_1_fitted.parquet")
    default = read_fit_results(out / "merged" / "dox_intensity_total_ch_1_fitted.parquet")
    assert (thorough["r_squared"] >= default["r_squared"]).all()  # never worse, exactly
    table = read_analysis_csv(csv)
    t, y = table.index.to_numpy(dtype="float64"), table.to_numpy(dtype="float64").T
    direct = fit_cells(t, y, thorough=True)  # the flow passes thorough on to fit_cells
    np.testing.assert_array_equal(thorough["r_squared"], direct.r_squared)
    assert not np.array_equal(direct.params, fit_cells(t, y).params)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["fit", "{out}/merged", "--model", "nope"], "unknown model 'nope'; models are"),
        (["fit", "{out}/merged", "--param", "zz=1"], "zz"),
        (["fit", "{out}/merged", "--bound", "km=5,1"], "km"),
        (["fit", "{out}/merged", "--param", "ktl"], "write NAME=VALUE"),
        (["fit", "{out}/nothing-here"], "no such file or folder"),
        (["fit", "{out}/nothing-here", "--thorough"], "no such file or folder"),
        (["fit", "{out}/merged", "--feature", "speed"], "no analysis CSV of feature 'speed'"),
        (["fit", "{areas}"], "holds analysis CSVs of area only, not of an intensity; fit them"),
        (["merge", "{out}/nowhere"], "no processing results here"),
        (["merge", "{out}", "--samples", "{bad_samples}"], "FOV"),
    ],
)
def test_merge_and_fit_errors_exit_2_before_prefect(pipeline, tmp_path, capsys, args, needle):
    _, out, _ = pipeline
    bad = tmp_path / "bad.yaml"
    bad.write_text("samples:\n  - {name: a, fovs: '0-9'}\n")
    areas = tmp_path / "areas"
    areas.mkdir()
    shutil.copy(out / "merged" / "dox_area_ch_1.csv", areas)
    code = cli_main([a.format(out=out, bad_samples=bad, areas=areas) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and "Traceback" not in err


def test_a_folder_fit_takes_the_intensities_unless_a_feature_is_named(prefect_api, tmp_path):
    from pyama_lib.io.analysis_csv import write_analysis_csv
    from pyama_lib.synthetic.cells import maturation_traces

    t, y, _ = maturation_traces(3, 40, 0)
    table = pd.DataFrame(y.T, columns=[f"fov_000_cell_{i}" for i in range(3)])
    table.insert(0, "time", t * 60.0)
    # a sample named after a feature: its areas must not pass for an intensity
    for name in ("dox_intensity_intensity_total_ch_1", "dox_intensity_area_ch_1", "b_area_ch_2"):
        write_analysis_csv(table, tmp_path / f"{name}.csv")
    summary = fit_traces_flow(str(tmp_path))
    assert [Path(f.analysis_csv).name for f in summary.files] == [
        "dox_intensity_intensity_total_ch_1.csv"
    ]
    assert not (tmp_path / "dox_intensity_area_ch_1_fitted.csv").exists()
    areas = fit_traces_flow(str(tmp_path), feature="area")
    assert sorted(Path(f.analysis_csv).name for f in areas.files) == [
        "b_area_ch_2.csv",
        "dox_intensity_area_ch_1.csv",
    ]
    one = fit_traces_flow(str(tmp_path / "b_area_ch_2.csv"))  # a file named is fitted as it is
    assert [f.n_cells for f in one.files] == [3]


def test_a_large_fit_runs_in_worker_processes_with_the_same_numbers(
    pipeline, tmp_path, monkeypatch
):
    import flows.fit
    from pyama_lib.pipeline import pool

    _, out, _ = pipeline
    calls = []
    real_call = pool.StagePool.call

    def call(self, *args):
        calls.append(args[0])
        return real_call(self, *args)

    monkeypatch.setattr(pool.StagePool, "call", call)
    fitted = {}
    for where, threshold in (("threads", 10**9), ("workers", 1)):  # 16 cells: small or large
        monkeypatch.setattr(flows.fit, "PROCESS_MIN_CELLS", threshold)
        (tmp_path / where).mkdir()
        csv = shutil.copy(out / "merged" / "dox_intensity_total_ch_1.csv", tmp_path / where)
        fit_traces_flow(str(csv), chunk_cells=5)
        fitted[where] = read_fit_results(tmp_path / where / "dox_intensity_total_ch_1_fitted.csv")
        assert len(calls) == (0 if where == "threads" else 4)  # every chunk went to a worker
    pd.testing.assert_frame_equal(fitted["workers"], fitted["threads"])
