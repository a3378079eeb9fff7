"""Tests of pyama_lib.processing.extraction and the feature registry."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from scipy import ndimage as ndi

from pyama_lib.core.errors import InputDataError
from pyama_lib.processing.extraction import (
    ExtractionParams,
    extract_frame,
    extract_traces,
    finalize_traces,
)
from pyama_lib.processing.features import (
    LOCAL_BACKGROUND_RING_PX,
    list_features,
    register_feature,
    unregister_feature,
)
from pyama_lib.processing.tracking import TrackingParams, track_masks
from tests.references.extraction import RING_PX, extract_reference

COLUMNS = [
    "fov",
    "cell",
    "frame",
    "time",
    "good",
    "position_x",
    "position_y",
    "intensity_total",
    "area",
]


def two_cells() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((20, 30), dtype=np.uint16)
    labels[2:5, 3:9] = 7  # rows 2..4, cols 3..8
    labels[10:18, 20:22] = 2  # rows 10..17, cols 20..21
    labels[17, 23] = 2  # not 4-connected, still cell 2 (the label image decides)
    fl = np.arange(20 * 30, dtype=np.float32).reshape(20, 30) / 4
    return labels, fl


def stack(n_frames: int, labels: np.ndarray, fl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(labels[None], n_frames, 0), np.repeat(fl[None], n_frames, 0)


# --- one frame -----------------------------------------------------------------------------------


def test_extract_frame_values_by_hand() -> None:
    labels, fl = two_cells()
    rows = extract_frame(labels, fl, frame=3, time_min=30.0)
    assert rows["cell"].tolist() == [2, 7]  # ascending ids, as PyAMA
    assert rows["frame"].tolist() == [3, 3] and rows["time"].tolist() == [30.0, 30.0]
    assert rows["good"].tolist() == [True, True]
    assert rows["area"].tolist() == [17.0, 18.0]
    # bbox centre, max inclusive; x = column, y = row
    assert rows["position_x"].tolist() == [(20 + 23) / 2, (3 + 8) / 2]
    assert rows["position_y"].tolist() == [(10 + 17) / 2, (2 + 4) / 2]
    assert rows["intensity_total"].tolist() == [
        float(fl[labels == 2].sum()),
        float(fl[labels == 7].sum()),
    ]
    assert rows["near_border"].tolist() == [False, False]


def test_intensity_total_is_pyama_float32_sum_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    labels = np.zeros((300, 300), dtype=np.uint16)
    labels[10:290, 10:150] = 1  # 39 200 px: float32 rounding shows
    labels[10:13, 200:203] = 2  # 9 px
    labels[50:60, 200:261] = 3  # 610 px
    fl = (rng.random((300, 300)) * 3000.0 + 0.1).astype(np.float32)
    rows = extract_frame(labels, fl, 0, 0.0)
    for i, c in enumerate(rows["cell"]):
        pyama = fl[labels == c].sum()  # what PyAMA computes (float32 pairwise summation)
        assert rows["intensity_total"][i] == float(pyama)
    exact = fl[labels == 1].astype(np.float64).sum()
    assert rows["intensity_total"][0] != exact  # i.e. really float32 semantics, not float64


def test_uint16_fluorescence_is_summed_as_float32() -> None:
    labels, fl = two_cells()
    raw = (fl * 40).astype(np.uint16)
    rows = extract_frame(labels, raw, 0, 0.0)
    assert rows["intensity_total"][1] == float(raw.astype(np.float32)[labels == 7].sum())


def test_empty_frame_gives_empty_columns() -> None:
    rows = extract_frame(np.zeros((8, 8), np.uint16), np.ones((8, 8), np.float32), 0, 0.0)
    assert all(v.size == 0 for v in rows.values())
    assert "intensity_total" in rows and "area" in rows


def test_bad_frames_raise_input_data_error() -> None:
    labels, fl = two_cells()
    with pytest.raises(InputDataError, match="differ in shape"):
        extract_frame(labels, fl[:, :-1], 0, 0.0)
    with pytest.raises(InputDataError, match="2-D"):
        extract_frame(labels[None], fl[None], 0, 0.0)
    with pytest.raises(InputDataError, match="integer"):
        extract_frame(labels.astype(np.float32), fl, 0, 0.0)
    for bad in (np.nan, np.inf, -np.inf):
        broken = fl.copy()
        broken[0, 0] = bad  # even a background pixel: the frame is damaged
        with pytest.raises(InputDataError, match="1 NaN/inf"):
            extract_frame(labels, broken, 5, 0.0)
    with pytest.raises(InputDataError, match="registered features are: .*intensity_total"):
        extract_frame(labels, fl, 0, 0.0, features=("no_such_feature",))


# --- whole FOV -----------------------------------------------------------------------------------


def test_thirty_frame_filter_boundary() -> None:
    n_frames = 31
    labels = np.zeros((n_frames, 12, 12), dtype=np.uint16)
    labels[:29, 1:4, 1:4] = 1  # 29 frames: dropped
    labels[:30, 6:9, 6:9] = 2  # 30 frames: kept
    labels[:, 9:11, 1:3] = 3  # 31 frames: kept
    fl = np.ones((n_frames, 12, 12), dtype=np.float32)
    df = extract_traces(labels, fl, np.arange(n_frames) * 5.0, fov=2)
    assert sorted(set(df["cell"])) == [2, 3]
    assert (df["cell"] == 2).sum() == 30 and (df["cell"] == 3).sum() == 31
    kept = extract_traces(labels, fl, np.arange(n_frames) * 5.0, 2, ExtractionParams(min_frames=29))
    assert sorted(set(kept["cell"])) == [1, 2, 3]


def test_columns_dtypes_and_pyama_row_order() -> None:
    labels, fl = two_cells()
    lab, img = stack(3, labels, fl)
    df = extract_traces(lab, img, [0.0, 7.5, 15.0], fov=4, params=ExtractionParams(min_frames=3))
    assert list(df.columns) == COLUMNS
    assert df.dtypes.astype(str).tolist() == ["int64"] * 3 + ["float64", "bool"] + ["float64"] * 4
    # PyAMA writes rows frame by frame, cells ascending within a frame
    assert df[["frame", "cell"]].values.tolist() == [[0, 2], [0, 7], [1, 2], [1, 7], [2, 2], [2, 7]]
    assert df["time"].tolist() == [0.0, 0.0, 7.5, 7.5, 15.0, 15.0]
    assert (df["fov"] == 4).all() and df.index.equals(pd.RangeIndex(6))
    by_cell = extract_traces(
        lab, img, [0.0, 7.5, 15.0], 4, ExtractionParams(min_frames=3, sort_by_cell=True)
    )
    assert by_cell[["cell", "frame"]].values.tolist() == [
        [2, 0],
        [2, 1],
        [2, 2],
        [7, 0],
        [7, 1],
        [7, 2],
    ]


def test_fov_without_cells_gives_empty_table_with_header() -> None:
    lab = np.zeros((4, 10, 10), dtype=np.uint16)
    df = extract_traces(lab, np.ones((4, 10, 10)), np.arange(4.0), 0)
    assert df.empty and list(df.columns) == COLUMNS
    assert df.dtypes.astype(str).tolist() == ["int64"] * 3 + ["float64", "bool"] + ["float64"] * 4
    csv = io.StringIO()
    df.to_csv(csv, index=False)
    assert csv.getvalue().strip() == ",".join(COLUMNS)
    empty = finalize_traces([], fov=0, features=("intensity_mean",))
    assert list(empty.columns) == [*COLUMNS, "intensity_mean"] and len(empty) == 0


def test_border_margin_drops_cells_near_the_edge_in_any_frame() -> None:
    labels = np.zeros((3, 20, 20), dtype=np.uint16)
    labels[:, 0:3, 8:11] = 1  # touches the top border
    labels[:, 8:11, 8:11] = 2  # central
    labels[:, 14:17, 8:11] = 3  # 3 px from the bottom (rows 17..19 free)
    labels[1, 14:18, 8:11] = 3  # ... but only 2 px in frame 1
    fl = np.ones((3, 20, 20), dtype=np.float32)
    times = [0.0, 1.0, 2.0]
    keep_all = extract_traces(labels, fl, times, 0, ExtractionParams(min_frames=3))
    assert sorted(set(keep_all["cell"])) == [1, 2, 3]
    for margin, cells in [(0, [1, 2, 3]), (1, [2, 3]), (3, [2]), (9, [])]:
        params = ExtractionParams(min_frames=3, border_margin=margin)
        assert sorted(set(extract_traces(labels, fl, times, 0, params)["cell"])) == cells


def test_extract_traces_checks_frame_counts() -> None:
    labels, fl = two_cells()
    lab, img = stack(3, labels, fl)
    with pytest.raises(InputDataError, match="one entry per frame"):
        extract_traces(lab, img, [0.0, 1.0], 0)


# --- features ------------------------------------------------------------------------------------


def test_intensity_mean_and_local_background_by_hand() -> None:
    labels = np.zeros((40, 40), dtype=np.uint16)
    labels[15:20, 15:20] = 1
    labels[15:20, 22:25] = 2  # neighbour inside cell 1's ring
    fl = np.full((40, 40), 5.0, dtype=np.float32)
    fl[labels == 1] = 100.0
    fl[labels == 2] = 1000.0  # must not leak into cell 1's background
    fl[0:2, :] = 50.0  # outside every ring
    rows = extract_frame(labels, fl, 0, 0.0, features=("intensity_mean", "local_background"))
    assert rows["intensity_mean"].tolist() == [100.0, 1000.0]
    assert rows["local_background"].tolist() == [5.0, 5.0]

    covered = np.ones((6, 6), dtype=np.uint16)  # ring entirely inside other cells
    covered[2:4, 2:4] = 2
    rows = extract_frame(covered, np.ones((6, 6), np.float32), 0, 0.0, ("local_background",))
    assert np.isnan(rows["local_background"]).all()


@pytest.fixture
def intensity_max() -> Iterator[str]:
    @register_feature("intensity_max")
    def _intensity_max(labels, fl, label_ids, context):  # noqa: ANN001, ANN202
        return np.maximum.reduceat(context.values, context.offsets[:-1])

    yield "intensity_max"
    unregister_feature("intensity_max")


def test_custom_feature_becomes_a_column_after_the_builtins(intensity_max: str) -> None:
    assert intensity_max in list_features()
    labels, fl = two_cells()
    lab, img = stack(2, labels, fl)
    params = ExtractionParams(min_frames=1, features=(intensity_max, "area"))
    df = extract_traces(lab, img, [0.0, 1.0], 0, params)
    assert list(df.columns) == [*COLUMNS, "intensity_max"]
    assert df["intensity_max"].tolist() == [fl[labels == 2].max(), fl[labels == 7].max()] * 2
    with pytest.raises(ValueError, match="already registered"):
        register_feature(intensity_max)(lambda *a: None)


def test_registry_rejects_bad_names_and_bad_results() -> None:
    with pytest.raises(ValueError, match="trace column"):
        register_feature("position_x")
    with pytest.raises(ValueError, match="identifier"):
        register_feature("my feature")
    with pytest.raises(ValueError, match="built-in"):
        unregister_feature("area")

    @register_feature("broken_feature")
    def _broken(labels, fl, label_ids, context):  # noqa: ANN001, ANN202
        return np.zeros(1)

    try:
        labels, fl = two_cells()
        with pytest.raises(InputDataError, match="one value per cell"):
            extract_frame(labels, fl, 0, 0.0, features=("broken_feature",))
    finally:
        unregister_feature("broken_feature")


def test_finalize_refuses_rows_without_requested_feature() -> None:
    labels, fl = two_cells()
    rows = [extract_frame(labels, fl, 0, 0.0)]
    with pytest.raises(InputDataError, match="intensity_mean"):
        finalize_traces(rows, 0, 1, features=("intensity_mean",))


def test_params_as_dict() -> None:
    assert ExtractionParams().as_dict() == {
        "min_frames": 30,
        "border_margin": None,
        "features": [],
        "sort_by_cell": False,
    }
    with pytest.raises(ValueError):
        ExtractionParams(border_margin=-1)


# --- fast vs reference ---------------------------------------------------------------------------


def tracked_blobs(n_frames: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.random((h, w))
    masks = []
    for _ in range(n_frames):
        f = ndi.gaussian_filter(base + 0.3 * rng.random((h, w)), 3.0, mode="constant")
        masks.append((f - f.mean()) / f.std() > 0.5)
    labels = track_masks(np.array(masks), TrackingParams(start_new_tracks=True, max_gap=1))
    fl = (rng.normal(200.0, 80.0, (n_frames, h, w)) + 900.0 * np.array(masks)).astype(np.float32)
    return labels, fl


@pytest.mark.parametrize("shape", [(12, 60, 80), (8, 90, 130), (6, 33, 207)])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_equals_reference_exactly(shape: tuple[int, int, int], seed: int) -> None:
    assert RING_PX == LOCAL_BACKGROUND_RING_PX
    labels, fl = tracked_blobs(*shape, seed=seed)
    times = np.arange(shape[0]) * 7.5
    n = shape[0]
    cases = [
        {"min_frames": 0},
        {"min_frames": n // 2, "features": ("intensity_mean", "local_background")},
        {"min_frames": n, "border_margin": 2, "sort_by_cell": True},
    ]
    for kwargs in cases:
        fast = extract_traces(labels, fl, times, 3, ExtractionParams(**kwargs))
        ref = extract_reference(labels, fl, times, 3, **kwargs)
        pdt.assert_frame_equal(fast, ref, check_exact=True)
    assert len(extract_traces(labels, fl, times, 3, ExtractionParams(min_frames=0))) > 20


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_equals_reference_with_default_params(seed: int) -> None:
    """PyAMA's defaults (cells in >= 30 frames kept) on 32 frames: tracks of 30 to 32 frames
    survive, shorter ones (down to single frames) are dropped."""
    n_frames = 32
    labels, fl = tracked_blobs(n_frames, 60, 80, seed=seed)
    times = np.arange(n_frames) * 7.5
    fast = extract_traces(labels, fl, times, 3)  # no params: the defaults
    ref = extract_reference(labels, fl, times, 3)  # the reference's defaults: min_frames=30
    pdt.assert_frame_equal(fast, ref, check_exact=True)
    everything = extract_traces(labels, fl, times, 3, ExtractionParams(min_frames=0))
    assert 0 < len(fast) < len(everything)  # some cells kept, some filtered out
    frames_per_cell = fast["cell"].value_counts()
    assert frames_per_cell.min() >= 30
    all_counts = everything["cell"].value_counts()
    assert 30 in all_counts.values  # the boundary is exercised: exactly 30 frames is kept
    assert set(fast["cell"]) == set(all_counts.index[all_counts >= 30])


def test_intensity_local_ignores_the_residual_background_neighbours_and_the_border() -> None:
    labels = np.zeros((60, 60), dtype=np.uint16)
    labels[20:30, 20:30] = 1  # 100 px
    labels[20:30, 32:40] = 2  # a bright neighbour 2 px away, 80 px
    labels[0:6, 50:60] = 3  # touching the border: its ring is clipped, 60 px
    fl = np.full((60, 60), 7.0, dtype=np.float32)  # what the frame-wide correction left
    fl += np.where(labels == 1, 10.0, 0.0).astype(np.float32)
    fl += np.where(labels == 2, 1000.0, 0.0).astype(np.float32)
    fl += np.where(labels == 3, 4.0, 0.0).astype(np.float32)
    row = extract_frame(labels, fl, 0, 0.0, features=["intensity_local", "local_background"])
    assert row["local_background"].tolist() == [7.0, 7.0, 7.0]
    assert row["intensity_total"].tolist() == [1700.0, 80560.0, 660.0]
    assert row["intensity_local"].tolist() == [1000.0, 80000.0, 240.0]


def test_the_trimmed_ring_mean_leaves_out_outliers_and_the_counts_integer_steps() -> None:
    from scipy.stats import trim_mean

    labels = np.zeros((60, 60), dtype=np.uint16)
    labels[20:30, 20:30] = 1  # 100 px; its ring: the 30x30 window minus the 10x10 box
    fl = np.full((60, 60), 7.0, dtype=np.float32)
    fl[:, ::4] = 8.0  # a quarter of the background one count brighter: its median is 7
    fl[labels == 1] += 10.0
    fl[10:12, 10:13] = 5000.0  # 6 bright outliers in the ring (an unsegmented speck)
    ring = fl[10:40, 10:40][np.pad(np.zeros((10, 10), bool), 10, constant_values=True)]
    feats = ["local_background", "local_background_trimmed", "intensity_local_trimmed"]
    row = extract_frame(labels, fl, 0, 0.0, features=feats)
    assert row["local_background"].tolist() == [7.0]
    trimmed = row["local_background_trimmed"][0]
    assert trimmed == pytest.approx(trim_mean(ring.astype(np.float64), 0.1), rel=1e-12)
    assert 7.1 < trimmed < 7.3  # the outliers cut, the 8s counted
    total = float(row["intensity_total"][0])
    assert row["intensity_local_trimmed"].tolist() == [total - trimmed * 100]

    covered = np.ones((6, 6), dtype=np.uint16)  # no ring: NaN, as intensity_local
    row = extract_frame(covered, np.ones((6, 6), np.float32), 0, 0.0, feats[1:])
    assert np.isnan(row["local_background_trimmed"]).all()
    assert np.isnan(row["intensity_local_trimmed"]).all()
