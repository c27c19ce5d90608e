"""The offline demo: a generated sample segmented from clicks, written as TIFF + PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from napari_sam.model import Sam
from napari_sam.training.demo import overlay_rgb, run_demo


def test_demo_writes_labels_overlay_and_clicks(tiny_model: Sam, tmp_path: Path) -> None:
    tiny_model.precision = "fp32"
    result = run_demo(tmp_path / "out", model=tiny_model, seed=1, shape=(96, 96))
    image = tifffile.imread(result.image)
    labels = tifffile.imread(result.labels)
    truth = tifffile.imread(result.ground_truth)
    assert image.shape == labels.shape == truth.shape == (96, 96)
    assert labels.dtype == np.uint32
    assert result.n_objects == len(np.unique(truth)) - 1 > 0
    assert 0.0 <= result.mean_iou <= 1.0
    rows = result.points.read_text().splitlines()
    assert rows[0] == "row,col" and len(rows) == result.n_objects + 1
    overlay = np.asarray(Image.open(result.overlay))
    assert overlay.shape == (96, 96, 3) and overlay.dtype == np.uint8


def test_overlay_colours_labelled_pixels_only() -> None:
    image = np.tile(np.arange(10, dtype=np.uint16), (10, 1))
    labels = np.zeros((10, 10), np.uint32)
    labels[2:5, 2:5] = 7
    rgb = overlay_rgb(image, labels)
    grey = rgb[labels == 0]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    coloured = rgb[labels == 7]
    assert not ((coloured[:, 0] == coloured[:, 1]) & (coloured[:, 1] == coloured[:, 2])).all()
