"""Tests of pyama_lib.processing.tracking against hand-made frames and the plain reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pyama_lib.core.errors import InputDataError
from pyama_lib.processing.tracking import (
    IouTracker,
    TrackingParams,
    bbox_iou,
    label_mask,
    measure_regions,
    track_frames,
    track_masks,
)
from tests.references.tracking import bbox_iou_pair, track_reference

H, W = 40, 60


def frame(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean frame with filled rectangles given as (y0, x0, y1, x1), exclusive ends."""
    m = np.zeros((H, W), dtype=bool)
    for y0, x0, y1, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def ids_at(labels: np.ndarray, *points: tuple[int, int]) -> list[int]:
    return [int(labels[y, x]) for y, x in points]


def random_blobs(n_frames: int, h: int, w: int, seed: int) -> np.ndarray:
    """Correlated noise thresholded: blobs that drift, split, merge, vanish and appear."""
    rng = np.random.default_rng(seed)
    base = rng.random((h, w))
    frames = []
    for _ in range(n_frames):
        f = ndi.gaussian_filter(base + 0.3 * rng.random((h, w)), 3.0, mode="constant")
        frames.append((f - f.mean()) / f.std() > 0.5)
    return np.array(frames)


# --- hand-made cases ---------------------------------------------------------------------------


def test_track_ids_follow_frame0_raster_order_and_persist() -> None:
    # first pixels in raster order: (2, 40) -> 1, (5, 3) -> 2, (20, 10) -> 3
    f0 = frame((5, 3, 12, 10), (2, 40, 8, 50), (20, 10, 30, 20))
    f1 = frame((6, 4, 13, 11), (3, 41, 9, 51), (21, 10, 31, 21))
    out = track_masks([f0, f1])
    assert out.dtype == np.uint16 and out.shape == (2, H, W)
    assert ids_at(out[0], (2, 40), (5, 3), (20, 10)) == [1, 2, 3]
    assert ids_at(out[1], (3, 41), (6, 4), (21, 10)) == [1, 2, 3]
    # every region pixel carries its id, background stays 0
    assert np.array_equal(out[1] > 0, f1)
    assert np.count_nonzero(out[1] == 2) == 7 * 7


def test_split_track_follows_larger_part_other_part_ignored() -> None:
    f0 = frame((10, 10, 20, 30))
    f1 = frame((10, 10, 20, 24), (10, 25, 20, 30))  # 14-wide and 5-wide halves
    out = track_masks([f0, f1])
    assert ids_at(out[1], (15, 12), (15, 27)) == [1, 0]


def test_merge_continues_one_track_and_the_other_never_resumes() -> None:
    f0 = frame((10, 5, 20, 15), (10, 16, 20, 40))
    f1 = frame((10, 5, 20, 40))  # merged: IoU with the wide one is larger
    f2 = frame((10, 5, 20, 15), (10, 16, 20, 40))  # separated again
    out = track_masks([f0, f1, f2])
    assert ids_at(out[0], (12, 6), (12, 20)) == [1, 2]
    assert ids_at(out[1], (12, 6)) == [2]
    # track 2 follows the box closest to the merged one; track 1 ended at the merge
    assert ids_at(out[2], (12, 6), (12, 20)) == [0, 2]


def test_disappearing_region_ends_its_track_unless_max_gap() -> None:
    a, b = (5, 5, 15, 15), (20, 30, 30, 45)
    frames = [frame(a, b), frame(b), frame(a, b), frame(a, b)]
    default = track_masks(frames)
    assert ids_at(default[0], (6, 6), (21, 31)) == [1, 2]
    assert ids_at(default[2], (6, 6), (21, 31)) == [0, 2]
    assert ids_at(default[3], (6, 6)) == [0]

    bridged = track_masks(frames, TrackingParams(max_gap=1))
    assert ids_at(bridged[1], (6, 6), (21, 31)) == [0, 2]
    assert ids_at(bridged[2], (6, 6), (21, 31)) == [1, 2]
    assert ids_at(bridged[3], (6, 6), (21, 31)) == [1, 2]

    # a gap of two frames is longer than max_gap=1
    long_gap = [frame(a, b), frame(b), frame(b), frame(a, b)]
    assert ids_at(track_masks(long_gap, TrackingParams(max_gap=1))[3], (6, 6)) == [0]
    assert ids_at(track_masks(long_gap, TrackingParams(max_gap=2))[3], (6, 6)) == [1]


def test_region_touching_the_border_is_tracked_like_any_other() -> None:
    f0 = frame((0, 0, 8, 8), (20, 52, 30, 60))
    f1 = frame((0, 0, 9, 8), (21, 51, 31, 60))
    out = track_masks([f0, f1])
    assert ids_at(out[1], (0, 0), (30, 59)) == [1, 2]
    assert np.count_nonzero(out[1] == 1) == 9 * 8


def test_empty_frame_ends_every_track() -> None:
    a, b = (5, 5, 15, 15), (20, 30, 30, 45)
    frames = [frame(a, b), frame(), frame(a, b)]
    out = track_masks(frames)
    assert not out[1].any() and not out[2].any()
    fresh = track_masks(frames, TrackingParams(start_new_tracks=True))
    assert ids_at(fresh[2], (6, 6), (21, 31)) == [3, 4]
    resumed = track_masks(frames, TrackingParams(max_gap=1))
    assert ids_at(resumed[2], (6, 6), (21, 31)) == [1, 2]


def test_new_region_ignored_by_default_new_track_on_request() -> None:
    a, new = (5, 5, 15, 15), (25, 40, 35, 50)
    frames = [frame(a), frame(a, new), frame(a, new)]
    assert ids_at(track_masks(frames)[2], (6, 6), (26, 41)) == [1, 0]
    out = track_masks(frames, TrackingParams(start_new_tracks=True))
    assert ids_at(out[1], (6, 6), (26, 41)) == [1, 2]
    assert ids_at(out[2], (6, 6), (26, 41)) == [1, 2]


def test_empty_first_frame_gives_no_tracks_unless_new_tracks_started() -> None:
    frames = [frame(), frame((5, 5, 15, 15))]
    assert not track_masks(frames).any()
    assert ids_at(track_masks(frames, TrackingParams(start_new_tracks=True))[1], (6, 6)) == [1]


def test_area_filter_applies_before_matching_and_shifts_ids() -> None:
    tiny, small, big = (2, 2, 4, 4), (10, 5, 15, 10), (20, 20, 30, 40)  # areas 4, 25, 200
    f0 = frame(tiny, small, big)
    f2 = frame(tiny, (10, 5, 21, 16), big)  # the small one grows to 121 px
    out = track_masks([f0, f0, f2], TrackingParams(min_area=5, max_area=100))
    # the tiny region is not a track, so the small one is track 1; the big one is never tracked
    assert ids_at(out[0], (2, 2), (10, 5), (20, 20)) == [0, 1, 0]
    assert ids_at(out[1], (10, 5)) == [1]
    assert ids_at(out[2], (10, 5)) == [0]  # above max_area: filtered, track ends
    # bounds are inclusive
    out = track_masks([f0], TrackingParams(min_area=25, max_area=25))
    assert ids_at(out[0], (2, 2), (10, 5), (20, 20)) == [0, 1, 0]


def test_min_iou_is_inclusive() -> None:
    a, b = (10, 10, 20, 20), (10, 17, 20, 27)  # inter 30, union 170
    iou = 30 / 170
    frames = [frame(a), frame(b)]
    assert ids_at(track_masks(frames, TrackingParams(min_iou=iou))[1], (12, 20)) == [1]
    after = np.nextafter(iou, 1.0)
    assert ids_at(track_masks(frames, TrackingParams(min_iou=after))[1], (12, 20)) == [0]
    assert ids_at(track_masks(frames)[1], (12, 20)) == [1]


def test_bbox_iou_matches_pairwise_values() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 25], [30, 30, 31, 31]])
    b = np.array([[0, 5, 10, 15], [20, 20, 40, 40], [0, 0, 10, 10], [30, 30, 31, 31]])
    iou = bbox_iou(a, b)
    assert iou.shape == (3, 4) and iou.dtype == np.float64
    expected = [[bbox_iou_pair(tuple(x), tuple(y)) for y in b] for x in a]
    assert np.array_equal(iou, np.array(expected))
    assert iou[0, 0] == 50 / 150 and iou[0, 2] == 1.0 and iou[2, 3] == 1.0 and iou[0, 1] == 0


# --- fast vs reference ---------------------------------------------------------------------------

PARAMS = [
    {},
    {"min_area": 15, "max_area": 400},
    {"start_new_tracks": True},
    {"max_gap": 2},
    {"start_new_tracks": True, "max_gap": 1, "min_iou": 0.3},
]


@pytest.mark.parametrize("shape", [(10, 60, 80), (8, 90, 130), (6, 33, 207)])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_equals_reference_on_random_blobs(shape: tuple[int, int, int], seed: int) -> None:
    masks = random_blobs(*shape, seed=seed)
    n_tracks = []
    for kwargs in PARAMS:
        params = TrackingParams(**kwargs)
        fast = track_masks(masks, params)
        assert np.array_equal(fast, track_reference(masks, **kwargs)), kwargs
        # the streaming API gives the same frames from a one-shot iterator
        streamed = np.array(list(track_frames(iter(masks), params)))
        assert np.array_equal(streamed, fast), kwargs
        n_tracks.append(int(fast.max()))
    # the data really exercises several tracks, and new tracks appear along the way
    assert n_tracks[0] >= 2 and n_tracks[2] > n_tracks[0]


def test_tracker_steps_return_small_dicts_of_region_label_to_track_id() -> None:
    f0 = frame((5, 3, 12, 10), (2, 40, 8, 50))
    f1 = frame((3, 41, 9, 51), (6, 4, 13, 11), (30, 30, 35, 35))
    tracker = IouTracker()
    labels, n = label_mask(f0)
    assert labels.dtype == np.uint16 and n == 2
    assert tracker.step(measure_regions(labels, n, tracker.params)) == {1: 1, 2: 2}
    # frame 1 labels in raster order: (3, 41) -> 1, (6, 4) -> 2, (30, 30) -> 3 (untracked)
    labels, n = label_mask(f1)
    assert tracker.step(measure_regions(labels, n, tracker.params)) == {1: 1, 2: 2}


def test_more_components_than_uint16_labels_still_tracks() -> None:
    m = np.zeros((600, 600), dtype=bool)
    m[::2, ::2] = True  # 90 000 single pixels
    m[90:130, 90:140] = False
    m[100:120, 100:130] = True  # one real cell among them, not touching any dot
    out = track_masks([m, m], TrackingParams(min_area=2))
    assert out.dtype == np.uint16
    assert set(np.unique(out[1]).tolist()) == {0, 1}
    assert np.count_nonzero(out[1] == 1) == 20 * 30


# --- errors and parameters -----------------------------------------------------------------------


def test_more_than_65535_tracks_is_a_clear_error() -> None:
    m = np.zeros((600, 600), dtype=bool)
    m[::2, ::2] = True
    with pytest.raises(InputDataError, match="65535"):
        track_masks([m])


def test_bad_inputs_raise_input_data_error() -> None:
    with pytest.raises(InputDataError, match="no segmentation frames"):
        track_masks([])
    with pytest.raises(InputDataError, match="no segmentation frames"):
        list(track_frames(iter([])))
    with pytest.raises(InputDataError, match="same size"):
        track_masks([frame(), np.zeros((H, W + 1), dtype=bool)])
    with pytest.raises(InputDataError, match="same size"):
        list(track_frames([frame(), np.zeros((H + 1, W), dtype=bool)]))
    with pytest.raises(InputDataError, match="2-D"):
        list(track_frames([np.zeros((2, H, W), dtype=bool)]))


def test_params_validation_and_as_dict() -> None:
    assert TrackingParams().as_dict() == {
        "min_iou": 0.1,
        "min_area": None,
        "max_area": None,
        "start_new_tracks": False,
        "max_gap": 0,
    }
    bad_params = [{"min_iou": 1.5}, {"min_area": 0}, {"min_area": 50, "max_area": 10}]
    for bad in [*bad_params, {"max_gap": -1}]:
        with pytest.raises(ValueError):
            TrackingParams(**bad)
