"""QC figures are real pictures: PNG files with content where the data are."""

from __future__ import annotations

import base64

import numpy as np
from matplotlib.image import imread

from pyama_lib.analysis.figures import (
    fit_examples_figure,
    histograms_figure,
    png_data_uri,
    save_png,
    segmentation_figure,
    traces_figure,
)


def _image(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image[..., :3]


def test_traces_figure_draws_every_cell_and_the_median(tmp_path):
    t = np.linspace(0, 10, 40)
    values = np.stack([np.exp(-t / k) * 100 for k in (2, 4, 8)], axis=1)
    path = save_png(traces_figure(t, values, "sample A"), tmp_path / "traces.png")
    image = _image(path)
    blue = (image[..., 2] > 0.5) & (image[..., 0] < 0.5)
    dark = image.sum(axis=2) < 0.3
    assert blue.sum() > 200 and dark.sum() > 200  # cells' traces and the median line


def test_fit_examples_figure_shows_points_and_curves(tmp_path):
    t = np.linspace(0, 10, 30)
    values = np.stack([t * k for k in range(1, 6)], axis=1)
    path = save_png(
        fit_examples_figure(t, values, t, values, np.linspace(0.5, 1, 5), list("abcde"), "s"),
        tmp_path / "fits.png",
    )
    image = _image(path)
    red = (image[..., 0] > 0.6) & (image[..., 1] < 0.4) & (image[..., 2] < 0.4)
    assert red.sum() > 100


def test_histograms_figure_skips_non_finite_values(tmp_path):
    columns = {"ktl": np.array([1.0, 2.0, np.nan, np.inf, 2.5]), "r_squared": np.ones(5)}
    fig = histograms_figure(columns, "sample A")
    assert [len(ax.patches) > 0 for ax in fig.axes] == [True, True]
    assert _image(save_png(fig, tmp_path / "hist.png")).std() > 0.01


def test_segmentation_figure_outlines_cells_and_names_tracks(tmp_path):
    rng = np.random.default_rng(0)
    frame = rng.normal(100, 5, (64, 64))
    labels = np.zeros((64, 64), dtype=np.uint16)
    labels[10:20, 10:20], labels[40:55, 30:50] = 3, 7
    fig = segmentation_figure([frame, frame], [labels, labels], [0, 5], "fov_000")
    assert [t.get_text() for t in fig.axes[0].texts] == ["3", "7"]
    image = _image(save_png(fig, tmp_path / "seg.png"))
    yellow = (image[..., 0] > 0.8) & (image[..., 1] > 0.7) & (image[..., 2] < 0.3)
    assert yellow.sum() > 50  # the outlines


def test_a_preview_is_an_embeddable_png():
    uri = png_data_uri(traces_figure(np.arange(3.0), np.ones((3, 1)), "s"), width_px=200)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
