"""Degradation of training images: the image gets worse, the labels stay."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sam.training.augment import degrade
from napari_sam.training.data import planes_from_pairs, sample_example
from napari_sam.training.synthetic import TRAIN_PRESET, make_dataset


@pytest.fixture(scope="module")
def planes() -> list:
    return planes_from_pairs(make_dataset(2, TRAIN_PRESET, 5))


def _background_noise(image: np.ndarray, labels: np.ndarray) -> float:
    background = ~ndi.binary_dilation(labels > 0, iterations=4)
    im = image.astype(np.float64)
    return float((im - ndi.uniform_filter(im, 3))[background].std())


def test_degraded_images_keep_shape_and_get_noisier_or_blurrier(planes: list) -> None:
    plane = planes[0]
    rng = np.random.default_rng(0)
    clean = _background_noise(plane.image, plane.labels)
    noise, changed = [], 0
    for _ in range(20):
        out = degrade(plane.image, rng)
        assert out.shape == plane.image.shape and out.dtype == np.uint8
        changed += not np.array_equal(out, plane.image)
        noise.append(_background_noise(out, plane.labels))
    assert changed >= 15  # nothing at all is applied about 1 time in 12
    assert max(noise) > 1.5 * clean  # extra camera noise
    assert min(noise) < 0.7 * clean  # extra blur smooths the noise away
    # objects stay brighter than the background: the labels still describe the image
    out = degrade(plane.image, np.random.default_rng(1))
    assert out[plane.labels > 0].mean() > out[plane.labels == 0].mean() + 30


def test_colour_planes_are_degraded_per_channel_without_mixing_space() -> None:
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[10:20, 10:20, 1] = 200
    out = degrade(rgb, np.random.default_rng(3))
    assert out.shape == rgb.shape
    # the bright square is still where it was, in its channel only
    assert out[12:18, 12:18, 1].mean() > out[30:, 30:, 1].mean() + 50
    assert abs(out[12:18, 12:18, 0].mean() - out[30:, 30:, 0].mean()) < 15


def test_sample_example_degrades_only_the_image(planes: list) -> None:
    kwargs = dict(max_objects=5, crop_prob=0.0, augment=False)
    img, masks = sample_example(planes, np.random.default_rng(7), **kwargs)
    img2, masks2 = sample_example(planes, np.random.default_rng(7), degrade_prob=1.0, **kwargs)
    np.testing.assert_array_equal(masks, masks2)
    assert img.shape == img2.shape and not np.array_equal(img, img2)
    img3, _ = sample_example(planes, np.random.default_rng(7), degrade_prob=0.0, **kwargs)
    np.testing.assert_array_equal(img, img3)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        degrade(np.zeros((8, 8), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        degrade(np.zeros((2, 8, 8, 1), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):  # a (Z, Y, X) stack is not a plane
        degrade(np.zeros((5, 8, 8), np.uint8), np.random.default_rng(0))
