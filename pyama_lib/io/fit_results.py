"""Fit results: PyAMA's ``<stem>_fitted.csv`` and its Parquet twin, written and read side by side.

``<stem>_fitted.csv`` (beside the analysis CSV ``<stem>.csv``) has PyAMA's columns: ``cell_id``
(the cell's 0-based column position in the analysis CSV), ``model_type``, ``success``,
``r_squared``, then the model's parameters. ``<stem>_fitted.parquet`` holds the same rows plus
``column`` (the cell's column name, ``fov_XXX_cell_<id>``), ``fov`` and ``cell``.

:func:`find_analysis_csvs` lists what to fit in a folder, skipping what PyAMA skips (its own
``_fitted`` outputs and per-FOV ``_traces`` CSVs) and the ``_inspected`` traces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pyama_lib.core.errors import ResultsFileError
from pyama_lib.io.analysis_csv import parse_cell_column
from pyama_lib.io.atomic import atomic_target

FITTED_SUFFIX = "_fitted"
FIT_KEY_COLUMNS: tuple[str, ...] = ("cell_id", "model_type", "success", "r_squared")


def fitted_paths(analysis_csv: str | Path) -> tuple[Path, Path]:
    """``(<stem>_fitted.csv, <stem>_fitted.parquet)`` beside ``analysis_csv``.

    Examples
    --------
    >>> [p.name for p in fitted_paths("/data/merged/dox 0.1uM_intensity_total_ch_1.csv")]
    ['dox 0.1uM_intensity_total_ch_1_fitted.csv', 'dox 0.1uM_intensity_total_ch_1_fitted.parquet']
    """
    path = Path(analysis_csv)
    # Names are joined, never cut with with_suffix: that would cut at a dot of the sample
    # name ("dox 0.1uM" and "dox 0.5uM" would both become "dox 0.csv").
    stem = path.stem + FITTED_SUFFIX
    return path.with_name(stem + ".csv"), path.with_name(stem + ".parquet")


_TRACES_CSV = re.compile(r"_traces_ch_\d+(_inspected)?\.csv$")


def is_analysis_csv(path: Path) -> bool:
    """A ``.csv`` that is not a fit result, a per-FOV traces CSV or an inspected copy.

    Examples
    --------
    >>> [is_analysis_csv(Path(n)) for n in ("wt_traces_area_ch_1.csv", "x_traces_ch_1.csv")]
    [True, False]
    """
    name = path.name.lower()
    return (
        name.endswith(".csv")
        and not name.endswith(f"{FITTED_SUFFIX}.csv")
        and not _TRACES_CSV.search(name)
        and not name.endswith("_inspected.csv")
        and not name.startswith(".")
    )


def find_analysis_csvs(path: str | Path) -> list[Path]:
    """The analysis CSVs to fit: ``path`` itself, or those in the folder ``path`` (sorted).

    Raises
    ------
    ResultsFileError
        When ``path`` does not exist, or a folder holds no analysis CSV.
    """
    target = Path(path)
    if target.is_file():
        if not is_analysis_csv(target):
            raise ResultsFileError(
                target,
                "is not an analysis CSV (a per-FOV traces CSV, a fit result or an inspected "
                "copy); merge the traces first (pyama merge) and fit the merged CSVs",
            )
        return [target]
    if not target.is_dir():
        raise ResultsFileError(target, "no such file or folder; give an analysis CSV or a folder")
    found = sorted(p for p in target.iterdir() if p.is_file() and is_analysis_csv(p))
    if not found:
        raise ResultsFileError(
            target,
            "holds no analysis CSV to fit (files like <sample>_intensity_total_ch_1.csv, as "
            "pyama merge writes them)",
        )
    return found


def csv_feature(path: str | Path, features: Iterable[str]) -> str | None:
    """The feature of ``<sample>_<feature>_ch_<c>.csv`` among ``features``, else None.

    The longest name that ends the file name wins, so a sample named after a feature cannot
    pass for it.

    Examples
    --------
    >>> csv_feature("dox_intensity_area_ch_1.csv", ["intensity_total", "area"])
    'area'
    >>> csv_feature("a_intensity_total_ch_2.csv", ["total", "intensity_total"])
    'intensity_total'
    >>> csv_feature("a_speed_ch_2.csv", ["area"]) is None
    True
    """
    name = Path(path).name
    ending = [f for f in features if re.search(rf"_{re.escape(f)}_ch_\d+\.csv$", name)]
    return max(ending, key=len) if ending else None


def is_expression_feature(feature: str | None) -> bool:
    """Whether a folder fit takes a feature by default: the intensities (an expression time
    course), and features it cannot name; not a cell's area, position or background.

    Examples
    --------
    >>> [is_expression_feature(f) for f in ("intensity_local", "area", "local_background", None)]
    [True, False, False, True]
    """
    return feature is None or feature.startswith("intensity")


def write_fit_results(
    table: pd.DataFrame, columns: Sequence[str], analysis_csv: str | Path
) -> tuple[Path, Path]:
    """Write ``table`` (PyAMA's fit columns, one row per cell) as ``_fitted.csv`` and
    ``_fitted.parquet`` beside ``analysis_csv``; ``columns`` are the cells' column names in
    ``cell_id`` order. Both files are written atomically.

    Examples
    --------
    >>> import tempfile
    >>> csv = Path(tempfile.mkdtemp()) / "A_area_ch_1.csv"
    >>> table = pd.DataFrame({"cell_id": [0], "model_type": ["trivial"], "success": [True],
    ...                       "r_squared": [0.5], "ktl": [20.0]})
    >>> fitted, twin = write_fit_results(table, ["fov_002_cell_7"], csv)
    >>> pd.read_parquet(twin)[["column", "fov", "cell"]].values.tolist()
    [['fov_002_cell_7', 2, 7]]
    """
    if len(columns) != len(table):
        raise ValueError(f"{len(table)} fit rows but {len(columns)} cell columns")
    csv, parquet = fitted_paths(analysis_csv)
    with atomic_target(csv) as tmp:
        table.to_csv(tmp, index=False)  # full precision: rates near their 1e-5 bounds
    twin = table.copy()
    ids = [_cell_ids(name) for name in columns]
    twin.insert(1, "column", [str(c) for c in columns])
    twin.insert(2, "fov", pd.array([i[0] for i in ids], dtype="Int64"))
    twin.insert(3, "cell", pd.array([i[1] for i in ids], dtype="Int64"))
    with atomic_target(parquet) as tmp:
        twin.to_parquet(tmp, index=False)
    return csv, parquet


def _cell_ids(name: str) -> tuple[int | None, int | None]:
    # Columns of analysis CSVs written by other tools need not follow fov_XXX_cell_<id>.
    try:
        return parse_cell_column(name)
    except ValueError:
        return None, None


def read_fit_results(path: str | Path) -> pd.DataFrame:
    """Read a ``_fitted.csv`` (PyAMA's or ours) or its Parquet twin.

    Raises
    ------
    ResultsFileError
        When the file is missing or lacks PyAMA's fit columns.
    """
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ResultsFileError(path, f"cannot read fit results ({exc})") from None
    missing = [c for c in FIT_KEY_COLUMNS if c not in table.columns]
    if missing:
        raise ResultsFileError(path, f"not a fit results file: no column(s) {missing}")
    table["success"] = (
        table["success"].astype(str).str.lower().isin(["true", "1"]).to_numpy(dtype=np.bool_)
    )
    return table
