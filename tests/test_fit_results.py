"""Fit results files: PyAMA's _fitted.csv at full precision, the Parquet twin, what is fitted."""

from __future__ import annotations

import pandas as pd
import pytest

from pyama_lib.core.errors import ResultsFileError
from pyama_lib.io.fit_results import find_analysis_csvs, read_fit_results, write_fit_results


def test_rates_near_their_bounds_keep_their_digits(tmp_path):
    table = pd.DataFrame(
        {
            "cell_id": [0, 1],
            "model_type": ["maturation"] * 2,
            "success": [True, False],
            "r_squared": [0.987654321, 0.0],
            "km": [1.555e-5, 29.999999],
        }
    )
    csv, parquet = write_fit_results(
        table, ["fov_000_cell_1", "fov_001_cell_4"], tmp_path / "a.csv"
    )
    back = read_fit_results(csv)
    pd.testing.assert_series_equal(back["km"], table["km"], rtol=1e-12)
    assert back["success"].tolist() == [True, False]
    twin = read_fit_results(parquet)
    assert twin[["fov", "cell"]].astype(int).values.tolist() == [[0, 1], [1, 4]]


def test_what_a_folder_offers_to_fit(tmp_path):
    for name in (
        "wt_traces_intensity_total_ch_1.csv",  # a sample named wt_traces: an analysis CSV
        "x_fov_000_traces_ch_1.csv",
        "A_area_ch_1_fitted.csv",
        "x_traces_ch_1_inspected.csv",
    ):
        (tmp_path / name).write_text("time\n")
    assert [p.name for p in find_analysis_csvs(tmp_path)] == ["wt_traces_intensity_total_ch_1.csv"]
    with pytest.raises(ResultsFileError, match="is not an analysis CSV"):
        find_analysis_csvs(tmp_path / "x_fov_000_traces_ch_1.csv")
