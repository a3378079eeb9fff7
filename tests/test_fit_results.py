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


def test_samples_named_by_concentration_keep_their_own_fits(tmp_path):
    # A dot in a sample name is not an extension: "dox 0.1uM" and "dox 0.5uM" must not both
    # write "dox 0.csv", and what they write must not be offered to the next fit.
    analysis = [tmp_path / f"dox {c}uM_intensity_total_ch_1.csv" for c in ("0.1", "0.5")]
    for i, csv in enumerate(analysis):
        csv.write_text("time,fov_000_cell_1\n0,1\n")
        table = pd.DataFrame(
            {
                "cell_id": [0],
                "model_type": ["trivial"],
                "success": [True],
                "r_squared": [0.5],
                "ktl": [float(i)],
            }
        )
        write_fit_results(table, ["fov_000_cell_1"], csv)
    for i, csv in enumerate(analysis):
        fitted = tmp_path / f"{csv.stem}_fitted.csv"
        assert read_fit_results(fitted)["ktl"].tolist() == [float(i)]
        assert read_fit_results(fitted.with_name(f"{csv.stem}_fitted.parquet"))["ktl"].tolist() == [
            float(i)
        ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            *(c.name for c in analysis),
            *(f"{c.stem}_fitted.{e}" for c in analysis for e in ("csv", "parquet")),
        ]
    )
    assert find_analysis_csvs(tmp_path) == sorted(analysis)
