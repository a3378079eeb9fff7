"""Tiled-median background correction: known answers, PyAMA equivalence, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pyama_lib.core.errors import InputDataError, ParamsError
from pyama_lib.processing.background import (
    BackgroundParams,
    correct_frame,
    estimate_background,
    interpolate_background,
    mask_foreground,
    window_centres,
    window_edges,
    window_medians,
)
from tests.references.background import correct_frame_reference, masked_reference

# 1x1, 1x3 and 3x1 windows (PyAMA cannot fit these), then 5x5 and 5x7 (PyAMA's cubic path)
SHAPES = [(64, 64), (200, 300), (300, 200), (600, 700), (520, 900)]


def fluorescence(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint16 frame with a smooth uneven background and bright cells, and the cell mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    background = 300 + 60 * np.sin(xx / 150.0) + 40 * np.cos(yy / 110.0)
    img = rng.normal(background, 6.0)
    seg = np.zeros((height, width), dtype=bool)
    centres = [(0, 0)] + [
        (rng.integers(0, height), rng.integers(0, width))
        for _ in range(max(2, height * width // 8000))
    ]
    for cy, cx in centres:
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(6, 20) ** 2
        seg |= disc
        img[disc] += 800
    return np.clip(img, 0, 65535).astype(np.uint16), seg


def ramp(height: int, width: int) -> np.ndarray:
    """100 + 2x + 3y, exactly representable in float32."""
    yy, xx = np.mgrid[:height, :width]
    return (100 + 2 * xx + 3 * yy).astype(np.float32)


# --- windows -------------------------------------------------------------------------------


def test_window_edges_follow_the_design_formula():
    np.testing.assert_array_equal(window_edges(2048), np.arange(0, 2049, 128))
    np.testing.assert_array_equal(window_edges(256), [0, 128, 256])
    np.testing.assert_array_equal(window_edges(512), [0, 128, 256, 384, 512])
    np.testing.assert_array_equal(window_edges(700), [0, 117, 233, 350, 467, 583, 700])
    np.testing.assert_array_equal(window_edges(1), [0, 0, 1])  # rint: 0.5 rounds to 0
    np.testing.assert_array_equal(
        window_centres(window_edges(700)), [116.5, 233.5, 350, 466.5, 583.5]
    )


def test_window_medians_equal_nanmedian_loop():
    rng = np.random.default_rng(1)
    masked = rng.integers(0, 1000, (600, 700)).astype(np.float32)
    masked[rng.random(masked.shape) < 0.4] = np.nan
    masked[:300, :250] = np.nan  # windows (0, 0) and (0, 1)... have no background pixel
    edges_y, edges_x = window_edges(600), window_edges(700)
    expected = np.empty((edges_y.size - 2, edges_x.size - 2), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i in range(expected.shape[0]):
            for j in range(expected.shape[1]):
                window = masked[edges_y[i] : edges_y[i + 2], edges_x[j] : edges_x[j + 2]]
                expected[i, j] = np.nanmedian(window)
    assert np.isnan(expected[0, 0])
    expected[np.isnan(expected)] = np.nanmedian(masked)
    support = window_medians(masked, edges_y, edges_x)
    assert support.dtype == np.float32
    np.testing.assert_array_equal(support, expected)


def test_window_median_of_even_count_averages_in_float32():
    masked = np.array([[1.0, 2.0, np.nan, 4.0]], dtype=np.float32)
    support = window_medians(masked, np.array([0, 0, 1]), np.array([0, 2, 4]))
    assert support.tolist() == [[2.0]]  # median of 1, 2, 4
    masked[0, 2] = 3.0
    assert window_medians(masked, np.array([0, 0, 1]), np.array([0, 2, 4])).tolist() == [[2.5]]


def test_window_medians_without_any_background_are_nan():
    masked = np.full((40, 50), np.nan, dtype=np.float32)
    assert np.isnan(window_medians(masked, window_edges(40), window_edges(50))).all()


# --- masking -------------------------------------------------------------------------------


def test_mask_dilation_is_21_square_including_the_border():
    fl = np.arange(60 * 70, dtype=np.uint16).reshape(60, 70)
    seg = np.zeros((60, 70), dtype=bool)
    seg[0, 0] = True
    seg[30, 40] = True
    masked = mask_foreground(fl, seg)
    expected_nan = np.zeros_like(seg)
    expected_nan[:11, :11] = True
    expected_nan[20:41, 30:51] = True
    np.testing.assert_array_equal(np.isnan(masked), expected_nan)
    np.testing.assert_array_equal(masked[~expected_nan], fl[~expected_nan])


@pytest.mark.parametrize("shape", [(64, 64), (200, 300)])
def test_mask_equals_maximum_filter_version(shape):
    fl, seg = fluorescence(*shape, seed=3)
    np.testing.assert_array_equal(mask_foreground(fl, seg), masked_reference(fl, seg))


# --- interpolation -------------------------------------------------------------------------


def test_interpolation_reproduces_a_plane_and_is_constant_outside():
    cy, cx = np.array([100.0, 200.0, 300.0, 400.0]), np.array([50.0, 150.0, 250.0, 350.0])
    support = (5 + 2 * cx[None, :] + 3 * cy[:, None]).astype(np.float32)
    out = interpolate_background(cy, cx, support, (450, 420))
    yy, xx = np.mgrid[:450, :420]
    expected = 5 + 2 * np.clip(xx, 50, 350) + 3 * np.clip(yy, 100, 400)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


# --- whole frame ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_correct_frame_equals_pyama_reference(shape):
    fl, seg = fluorescence(*shape, seed=shape[0])
    out = correct_frame(fl, seg)
    assert out.dtype == np.float32 and out.shape == shape
    expected = correct_frame_reference(fl, seg)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    # the background was removed: background pixels end up near 0 and no more spread out
    assert abs(float(np.median(out[~seg]))) < 10
    assert np.std(out[~seg]) <= np.std(fl[~seg].astype(np.float32)) + 1e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_correct_ramp_known_answer(shape):
    # Window medians of a plane are its values at the windows' pixel centres, which lie half
    # a pixel before PyAMA's nominal centres (edges[i] + edges[i + 2]) / 2. The spline then
    # reproduces the plane shifted by half a pixel, held constant beyond the outer centres.
    h, w = shape
    fl = ramp(h, w)
    cy, cx = window_centres(window_edges(h)), window_centres(window_edges(w))
    yy, xx = np.mgrid[:h, :w]
    yc = np.clip(yy, cy[0], cy[-1]) - 0.5
    xc = np.clip(xx, cx[0], cx[-1]) - 0.5
    expected_bg = 100 + 2 * xc + 3 * yc
    bg = estimate_background(fl, np.zeros(shape, dtype=bool))
    np.testing.assert_allclose(bg, expected_bg, rtol=1e-5, atol=1e-2)
    corrected = correct_frame(fl, np.zeros(shape, dtype=bool))
    np.testing.assert_allclose(corrected, fl - expected_bg, rtol=1e-5, atol=1e-2)


def test_constant_frame_with_cells():
    fl = np.full((300, 600), 50, dtype=np.uint16)
    seg = np.zeros(fl.shape, dtype=bool)
    seg[100:140, 200:260] = True
    fl[seg] = 1050
    out = correct_frame(fl, seg)
    np.testing.assert_array_equal(out[seg], 1000.0)
    np.testing.assert_array_equal(out[~seg], 0.0)


def test_all_zero_frame_corrects_to_zero():
    out = correct_frame(np.zeros((100, 120), dtype=np.uint16), np.zeros((100, 120), dtype=bool))
    assert out.dtype == np.float32 and not out.any()


def test_windows_without_background_take_the_frame_median():
    # Left third 10, rest 40; the top-left windows are fully covered by cells and fall back to
    # the frame-wide median (40), so the surface there is 40 rather than 10.
    fl = np.full((600, 700), 40, dtype=np.uint16)
    fl[:, :200] = 10
    seg = np.zeros(fl.shape, dtype=bool)
    seg[:260, :260] = True
    out = correct_frame(fl, seg)
    np.testing.assert_allclose(out, correct_frame_reference(fl, seg), rtol=1e-5, atol=1e-3)
    assert out[0, 0] == pytest.approx(10 - 40)  # window (0, 0) took the fallback 40


def test_all_foreground_gives_nan_like_pyama():
    fl = np.ones((80, 80), dtype=np.uint16)
    seg = np.zeros(fl.shape, dtype=bool)
    seg[10::20, 10::20] = True  # dilated by 21x21 this covers every pixel
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = correct_frame(fl, seg)
    assert out.dtype == np.float32 and np.isnan(out).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float64])
def test_any_real_dtype_and_label_masks(dtype):
    fl, seg = fluorescence(120, 140, seed=9)
    fl = (fl // 8).astype(dtype)  # fits in uint8
    labels = seg.astype(np.uint16) * 7  # integer labels: non-zero = cell
    out = correct_frame(fl, labels)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, correct_frame(fl.astype(np.float32), seg))


def test_bad_input_raises_input_data_error():
    fl = np.ones((50, 60), dtype=np.uint16)
    seg = np.zeros((50, 60), dtype=bool)
    with pytest.raises(InputDataError, match="shape"):
        correct_frame(fl, seg[:, :59])
    with pytest.raises(InputDataError, match="2-D"):
        correct_frame(fl[None], seg[None])
    with pytest.raises(InputDataError, match="empty"):
        correct_frame(fl[:0], seg[:0])
    with pytest.raises(InputDataError, match="dtype"):
        correct_frame(fl, seg.astype(np.float32))
    bad = fl.astype(np.float32)
    bad[5, 5] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        correct_frame(bad, seg)
    bad[5, 5] = -np.inf
    with pytest.raises(InputDataError, match="infinite"):
        correct_frame(bad, seg)


def test_params_defaults_are_pyama_and_validated():
    assert BackgroundParams().as_dict() == {
        "dilation_size": 21,
        "tile_height": 256,
        "tile_width": 256,
    }
    for bad in ({"dilation_size": 20}, {"tile_height": 3}, {"tile_width": 1.5}):
        with pytest.raises(ParamsError, match="BackgroundParams"):
            BackgroundParams(**bad)
    # smaller tiles give more windows: still a valid correction of a plane
    fl = ramp(300, 300)
    out = correct_frame(
        fl,
        np.zeros(fl.shape, dtype=bool),
        BackgroundParams(dilation_size=3, tile_height=64, tile_width=64),
    )
    assert np.abs(out[64:-64, 64:-64] - 2.5).max() < 1e-2
    for n in range(1, 60):  # the smallest tiles still give distinct centres on any axis
        for tile in (4, 5, 7):
            assert np.all(np.diff(window_centres(window_edges(n, tile))) > 0)
