"""Log-std segmentation: known answers, PyAMA equivalence of the fast morphology, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pyama_lib.core.errors import InputDataError, ParamsError
from pyama_lib.processing.morphology import dilate_square, erode_square, fill_holes, open_close
from pyama_lib.processing.segmentation import (
    SegmentationParams,
    _histogram_counts,
    log_std,
    segment_frame,
    threshold_by_histogram,
)
from tests.references.segmentation import (
    log_std_reference,
    morphology_reference,
    segment_frame_reference,
)

SHAPES = [(64, 64), (200, 300), (600, 700)]


def phase_contrast(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint16 frame: flat noisy background and textured discs, some cut by the border."""
    rng = np.random.default_rng(seed)
    img = rng.normal(1000.0, 4.0, (height, width))
    yy, xx = np.mgrid[:height, :width]
    n_cells = max(1, height * width // 6000)
    r_max = min(26, min(height, width) // 4)
    # one central cell, two cut by the image border, then random ones
    centres = [(height // 2, width // 3), (0, 0), (height - 1, width // 2)]
    centres += [(rng.integers(0, height), rng.integers(0, width)) for _ in range(n_cells)]
    for k, (cy, cx) in enumerate(centres):
        radius = r_max if k == 0 else rng.integers(r_max // 2, r_max + 1)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        img[disc] += rng.normal(0.0, 80.0, int(disc.sum()))
    return np.clip(img, 0, 65535).astype(np.uint16)


def random_mask(height: int, width: int, seed: int, density: float = 0.5) -> np.ndarray:
    """Blobby random mask with structure at the 10-40 px scale, touching the borders."""
    rng = np.random.default_rng(seed)
    noise = ndi.uniform_filter(rng.random((height, width)), 9)
    return noise > np.quantile(noise, 1.0 - density)


# --- log-std -------------------------------------------------------------------------------


def test_log_std_of_single_bright_pixel():
    img = np.zeros((9, 9), dtype=np.uint16)
    img[4, 4] = 3
    out = log_std(img)
    assert out.dtype == np.float32
    # centre: mean 3/9, mean of squares 9/9, variance 8/9
    assert out[4, 4] == pytest.approx(0.5 * np.log(8 / 9), rel=1e-5)
    # a neighbour: mean 1/3 and mean of squares 1 as well
    assert out[3, 5] == pytest.approx(0.5 * np.log(8 / 9), rel=1e-5)
    assert np.all(out[:3] == 0) and np.all(out[:, 6:] == 0)  # variance 0 -> log-std 0


@pytest.mark.parametrize("value", [0, 1234])
def test_log_std_of_constant_frame_is_zero(value):
    out = log_std(np.full((32, 48), value, dtype=np.uint16))
    assert out.shape == (32, 48)
    assert not out.any()


@pytest.mark.parametrize("shape", SHAPES + [(5, 7), (2048 // 8, 40)])
@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_log_std_equals_scipy_uniform_filter_version(shape, dtype):
    rng = np.random.default_rng(shape[0])
    img = (rng.random(shape) * 4000).astype(dtype)
    np.testing.assert_array_equal(log_std(img), log_std_reference(img))


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.bool_])
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_log_std_of_integer_frames_equals_scipy_at_the_extremes(dtype, size):
    # the row-wise path for integer frames claims exact sums: 0 next to 65535, negatives, etc.
    rng = np.random.default_rng(size)
    lo, hi = (0, 1) if dtype is np.bool_ else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    img = rng.choice(np.array([lo, hi]), size=(70, 45)).astype(dtype)
    img[::7] = rng.integers(lo, hi, size=(10, 45), endpoint=True).astype(dtype)
    for frame in (img, img[:2], img[:, :1]):  # also frames barely taller than the window
        np.testing.assert_array_equal(log_std(frame, size), log_std_reference(frame, size))


# --- threshold -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_histogram_counts_equal_numpys(seed):
    rng = np.random.default_rng(seed)
    n_bins = int(rng.integers(2, 300))
    edges = np.histogram_bin_edges(rng.normal(size=50).astype(np.float32), n_bins)
    cases = [
        rng.normal(size=5000).astype(np.float32),
        rng.integers(0, 2 * n_bins, 5000).astype(np.float32),  # many values on bin edges
        (1000 + rng.random(5000) * 0.5).astype(np.float32),  # narrow range, large values
        np.concatenate([edges, rng.choice(edges, 500)]).astype(np.float32),  # exactly edges
    ]
    for values in cases:
        counts, got_edges = _histogram_counts(values, n_bins)
        want_counts, want_edges = np.histogram(values, n_bins)
        np.testing.assert_array_equal(counts, want_counts)
        np.testing.assert_array_equal(got_edges, want_edges)


def test_threshold_tie_takes_first_bin():
    values = np.array([0, 0, 1, 1], dtype=np.float32)
    # bins 0 and 199 both hold 2 values; bin 0 (centre 0.0025) wins, sigma of [0, 0] = 0
    assert threshold_by_histogram(values) == pytest.approx(0.0025, rel=1e-5)


def test_threshold_known_mode_and_sigma():
    values = np.array([0, 1, 1, 1.5, 4], dtype=np.float32)
    # 2 bins over [0, 4]: [0, 2) holds 4 values -> mode 1.0; values <= 1 are 0, 1, 1
    sigma = np.std([0.0, 1.0, 1.0])
    assert threshold_by_histogram(values, n_bins=2) == pytest.approx(1 + 3 * sigma, rel=1e-6)
    assert threshold_by_histogram(values, n_bins=2, n_sigma=0) == pytest.approx(1.0)


def test_threshold_of_constant_values_lies_above_them():
    # numpy's histogram of a constant spans [v - 0.5, v + 0.5]; the mode bin's centre is above v
    assert threshold_by_histogram(np.zeros(100, dtype=np.float32)) == pytest.approx(0.0025)


def test_threshold_of_a_range_too_narrow_for_the_bins_is_a_clear_error():
    values = np.float32(1000) + np.arange(20, dtype=np.float32) * np.float32(6.1e-5)
    with pytest.raises(InputDataError, match="too narrow"):
        threshold_by_histogram(values)


def test_threshold_rejects_nan_and_empty():
    with pytest.raises(InputDataError, match="finite"):
        threshold_by_histogram(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(InputDataError):
        threshold_by_histogram(np.array([], dtype=np.float32))


# --- morphology ----------------------------------------------------------------------------


def test_fill_holes_known_answer():
    mask = np.zeros((9, 12), dtype=bool)
    mask[1:6, 1:6] = True
    mask[2:5, 2:5] = False  # a hole: filled
    mask[3:8, 7:11] = True
    mask[4:6, 8:12] = False  # a notch open to the right border: not a hole
    expected = mask.copy()
    expected[2:5, 2:5] = True
    np.testing.assert_array_equal(fill_holes(mask), expected)


def test_fill_holes_background_connects_by_edges_only():
    # a background pixel touching the outside region only diagonally is a hole (4-connectivity)
    mask = np.ones((5, 5), dtype=bool)
    mask[0, 0] = False
    mask[1, 1] = False
    expected = np.ones((5, 5), dtype=bool)
    expected[0, 0] = False
    np.testing.assert_array_equal(fill_holes(mask), expected)
    np.testing.assert_array_equal(ndi.binary_fill_holes(mask), expected)


@pytest.mark.parametrize("seed", range(4))
def test_fill_holes_equals_scipy(seed):
    mask = random_mask(150, 170, seed, density=0.6)
    np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
    assert not fill_holes(np.zeros((4, 4), dtype=bool)).any()
    assert fill_holes(np.ones((4, 4), dtype=bool)).all()


def test_erosion_treats_outside_as_background():
    full = np.ones((30, 30), dtype=bool)
    expected = np.zeros_like(full)
    expected[9:21, 9:21] = True
    np.testing.assert_array_equal(erode_square(full, 19), expected)
    assert not erode_square(np.ones((15, 15), dtype=bool), 19).any()  # smaller than the square


@pytest.mark.parametrize("size", [1, 3, 7, 19, 37])
@pytest.mark.parametrize("shape", [(64, 64), (23, 91), (10, 5)])
def test_square_erosion_dilation_equal_scipy(size, shape):
    mask = random_mask(*shape, seed=size, density=0.7)
    square = np.ones((size, size), dtype=bool)
    np.testing.assert_array_equal(erode_square(mask, size), ndi.binary_erosion(mask, square))
    np.testing.assert_array_equal(dilate_square(mask, size), ndi.binary_dilation(mask, square))


def test_open_close_of_region_touching_the_corner():
    # A 30x30 block in the corner: the opening keeps it, the closing's final erosion (outside
    # counts as 0) strips the 9 px next to the border, as PyAMA's binary_closing does.
    mask = np.zeros((100, 100), dtype=bool)
    mask[:30, :30] = True
    expected = np.zeros_like(mask)
    expected[9:30, 9:30] = True
    np.testing.assert_array_equal(open_close(mask), expected)
    square = np.ones((7, 7), dtype=bool)
    scipy_result = ndi.binary_closing(
        ndi.binary_opening(mask, square, iterations=3), square, iterations=3
    )
    np.testing.assert_array_equal(scipy_result, expected)


def test_open_close_removes_small_and_keeps_large_regions():
    mask = np.zeros((120, 120), dtype=bool)
    mask[10:25, 10:25] = True  # 15 px wide < 19: removed by the opening
    mask[50:100, 40:100] = True  # 50 x 60: kept
    out = open_close(mask)
    assert not out[:40].any()
    np.testing.assert_array_equal(out[50:100, 40:100], True)
    assert out.sum() == 50 * 60


@pytest.mark.parametrize("shape", SHAPES + [(37, 500), (12, 12)])
@pytest.mark.parametrize("density", [0.3, 0.7])
def test_fast_morphology_equals_iterated_binary_morphology(shape, density):
    mask = random_mask(*shape, seed=shape[0] + int(density * 10), density=density)
    fast = open_close(fill_holes(mask))
    np.testing.assert_array_equal(fast, morphology_reference(mask))


@pytest.mark.parametrize(("size", "iterations"), [(5, 2), (3, 1), (7, 4)])
def test_fast_morphology_other_parameters(size, iterations):
    mask = random_mask(90, 110, seed=size, density=0.5)
    np.testing.assert_array_equal(
        open_close(fill_holes(mask), size, iterations),
        morphology_reference(mask, size, iterations),
    )


# --- whole frame ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_segment_frame_equals_pyama_reference(shape):
    pc = phase_contrast(*shape, seed=shape[1])
    mask = segment_frame(pc)
    assert mask.dtype == bool and mask.shape == shape
    assert 0.02 < mask.mean() < 0.6  # the test frame really has cells and background
    np.testing.assert_array_equal(mask, segment_frame_reference(pc))


def test_segment_frame_float_input_equals_reference():
    pc = phase_contrast(128, 160, seed=3).astype(np.float64) + 0.25
    np.testing.assert_array_equal(segment_frame(pc), segment_frame_reference(pc))


def test_segment_frame_finds_the_cell():
    rng = np.random.default_rng(7)
    pc = rng.normal(500.0, 2.0, (160, 160))
    yy, xx = np.mgrid[:160, :160]
    cell = (yy - 80) ** 2 + (xx - 80) ** 2 < 30**2
    pc[cell] += rng.normal(0.0, 100.0, int(cell.sum()))
    mask = segment_frame(pc.astype(np.uint16))
    iou = (mask & cell).sum() / (mask | cell).sum()
    assert iou > 0.85
    assert not mask[:30].any() and not mask[:, :30].any()


@pytest.mark.parametrize("value", [0, 700])
def test_segment_constant_frame_is_empty(value):
    mask = segment_frame(np.full((50, 60), value, dtype=np.uint16))
    assert mask.shape == (50, 60) and not mask.any()


def test_segment_frame_rejects_bad_input():
    with pytest.raises(InputDataError, match="2-D"):
        segment_frame(np.zeros((2, 10, 10), dtype=np.uint16))
    with pytest.raises(InputDataError, match="empty"):
        segment_frame(np.zeros((0, 10), dtype=np.uint16))
    bad = np.ones((10, 10), dtype=np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        segment_frame(bad)
    bad[3, 3] = np.inf
    with pytest.raises(InputDataError, match="NaN or infinite"):
        segment_frame(bad)
    with pytest.raises(InputDataError, match="dtype"):
        segment_frame(np.ones((10, 10), dtype=np.complex64))


def test_params_defaults_are_pyama_and_validated():
    assert SegmentationParams().as_dict() == {
        "filter_size": 3,
        "n_bins": 200,
        "n_sigma": 3.0,
        "structure_size": 7,
        "iterations": 3,
    }
    for bad in ({"filter_size": 4}, {"structure_size": 0}, {"iterations": 0}, {"n_bins": 0}):
        with pytest.raises(ParamsError, match="SegmentationParams"):
            SegmentationParams(**bad)
    with pytest.raises(ParamsError, match="n_sigma"):
        SegmentationParams(n_sigma=float("nan"))


def test_non_default_params_change_the_result():
    pc = phase_contrast(128, 128, seed=5)
    loose = segment_frame(pc, SegmentationParams(n_sigma=1.0, iterations=1))
    assert loose.sum() > segment_frame(pc).sum()
