"""Tests for the synthetic fluorescence microscopy generator."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import regionprops
from skimage.segmentation import find_boundaries

from napari_sam.training.synthetic import (
    HELDOUT_PRESET,
    TRAIN_PRESET,
    SynthParams,
    iter_dataset,
    make_dataset,
    make_image_2d,
    make_sample,
    make_stack_3d,
)

SMALL_2D = replace(TRAIN_PRESET, shape=(128, 160))
SMALL_3D = replace(TRAIN_PRESET, shape=(12, 64, 80))


def _check_instances(labels: np.ndarray) -> None:
    """Ids are 1..N, each object >= 20 px and in one face-connected piece."""
    ids = np.unique(labels)
    assert ids[0] == 0 or labels.min() > 0
    n = int(labels.max())
    assert np.array_equal(ids[ids > 0], np.arange(1, n + 1)), "labels are not consecutive"
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    assert counts.min() >= 20, f"an object has only {counts.min()} pixels"
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        _, pieces = ndimage.label(labels[box] == k)
        assert pieces == 1, f"object {k} is split into {pieces} pieces"


@pytest.mark.parametrize("kind", ["nuclei", "cells"])
@pytest.mark.parametrize("maker,params", [(make_image_2d, SMALL_2D), (make_stack_3d, SMALL_3D)])
def test_same_seed_same_arrays_different_seed_differs(maker, params, kind):
    params = replace(params, kind=kind)
    image_a, labels_a = maker(params, 7)
    image_b, labels_b = maker(params, 7)
    assert np.array_equal(image_a, image_b)
    assert np.array_equal(labels_a, labels_b)
    image_c, labels_c = maker(params, 8)
    assert not np.array_equal(image_a, image_c)
    assert not np.array_equal(labels_a, labels_c)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("kind", ["nuclei", "cells"])
def test_2d_dtype_shape_and_valid_instances(dtype, kind):
    image, labels = make_image_2d(replace(SMALL_2D, dtype=dtype, kind=kind), 1)
    assert image.shape == labels.shape == (128, 160)
    assert image.dtype == np.dtype(dtype)
    assert labels.dtype == np.uint32
    assert labels.max() >= 5
    _check_instances(labels)


def test_512_image_has_many_touching_objects():
    image, labels = make_image_2d(replace(TRAIN_PRESET, shape=(512, 512)), 0)
    _check_instances(labels)
    assert labels.max() > 100
    # Neighbouring pixels with two different object ids: objects touch/overlap.
    a, b = labels[:, :-1], labels[:, 1:]
    touching = (a > 0) & (b > 0) & (a != b)
    assert touching.sum() > 50


def test_nuclei_are_brighter_than_background():
    for seed in range(3):
        for preset in (TRAIN_PRESET, HELDOUT_PRESET):
            image, labels = make_image_2d(replace(preset, shape=(160, 160)), seed)
            far = ~ndimage.binary_dilation(labels > 0, iterations=4)
            offset = np.percentile(image, 0.5)
            inside = image[labels > 0].mean() - offset
            outside = image[far].mean() - offset
            assert inside > 3 * outside


def test_cells_membranes_brighter_than_interiors():
    for seed in range(3):
        image, labels = make_image_2d(replace(SMALL_2D, kind="cells", shape=(192, 192)), seed)
        assert labels.max() >= 10
        membrane = find_boundaries(labels, connectivity=1, mode="inner")
        interior = (labels > 0) & ~ndimage.binary_dilation(membrane)
        assert interior.sum() > 200
        assert image[membrane].mean() > 1.2 * image[interior].mean()


def test_cells_touch_each_other():
    _, labels = make_image_2d(replace(SMALL_2D, kind="cells"), 2)
    a, b = labels[:-1, :], labels[1:, :]
    assert ((a > 0) & (b > 0) & (a != b)).sum() > 50


@pytest.mark.parametrize("kind", ["nuclei", "cells"])
def test_3d_ids_are_contiguous_through_z(kind):
    image, labels = make_stack_3d(replace(SMALL_3D, kind=kind), 3)
    assert image.shape == labels.shape == (12, 64, 80)
    assert labels.dtype == np.uint32
    _check_instances(labels)  # 6-connected pieces
    spans_several_planes = 0
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        planes = np.flatnonzero((labels[box] == k).any(axis=(1, 2))) + box[0].start
        assert np.array_equal(planes, np.arange(planes[0], planes[-1] + 1)), f"object {k} has gaps in z"
        spans_several_planes += len(planes) > 1
    assert spans_several_planes > 0.8 * labels.max()


def test_3d_objects_are_not_all_aligned_spheres():
    _, labels = make_stack_3d(replace(SMALL_3D, shape=(16, 96, 96), eccentricity=(0.8, 0.8)), 0)
    orientations = [p.orientation for p in regionprops(labels[8]) if p.area > 40]
    assert len(orientations) > 5
    assert np.std(orientations) > 0.3


def test_eccentricity_controls_elongation():
    def mean_ecc(ecc):
        _, labels = make_image_2d(replace(SMALL_2D, eccentricity=ecc, max_overlap=0.0), 4)
        props = [p for p in regionprops(labels) if p.area > 60 and 0 not in p.bbox[:2]]
        return np.mean([p.eccentricity for p in props])

    assert mean_ecc((0.0, 0.0)) < 0.35
    assert mean_ecc((0.85, 0.85)) > 0.7


def test_uint16_uses_range_sensibly():
    image, labels = make_image_2d(replace(TRAIN_PRESET, dtype="uint16", shape=(192, 192)), 5)
    assert np.percentile(image[labels > 0], 90) > 4096  # beyond 12 bits: not an 8-bit image in disguise
    assert image.max() < 65535 or (image == 65535).mean() < 1e-4  # no large-scale saturation
    assert (image == 0).mean() < 1e-4  # the offset keeps dark noise from clipping
    for preset in (TRAIN_PRESET, HELDOUT_PRESET):
        noisy, _ = make_image_2d(replace(preset, dtype="uint16", shape=(128, 128)), 0)
        assert (noisy == 0).mean() < 1e-3


def test_uint8_uses_range_sensibly():
    image, labels = make_image_2d(replace(TRAIN_PRESET, dtype="uint8", shape=(192, 192)), 5)
    assert np.percentile(image[labels > 0], 90) > 80
    assert (image == 255).mean() < 0.01


@pytest.mark.parametrize("kind", ["nuclei", "cells"])
@pytest.mark.parametrize("shape", [(64, 64), (4, 32, 32)])
def test_zero_objects_gives_empty_labels_and_valid_image(kind, shape):
    image, labels = make_sample(replace(TRAIN_PRESET, shape=shape, kind=kind, n_objects=0), 0)
    assert labels.shape == image.shape == shape
    assert labels.dtype == np.uint32 and not labels.any()
    assert image.dtype == np.uint16
    assert image.std() > 0  # camera noise, not a constant array


def test_n_objects_is_respected():
    _, labels = make_image_2d(replace(SMALL_2D, n_objects=(6, 6), shape=(256, 256)), 0)
    assert 5 <= labels.max() <= 6


def test_heldout_differs_from_train():
    def width(r):
        return r[1] - r[0]

    assert width(HELDOUT_PRESET.radius) > width(TRAIN_PRESET.radius)
    assert HELDOUT_PRESET.photon_scale != TRAIN_PRESET.photon_scale
    a, _ = make_image_2d(replace(TRAIN_PRESET, shape=(96, 96)), 0)
    b, _ = make_image_2d(replace(HELDOUT_PRESET, shape=(96, 96)), 0)
    assert not np.array_equal(a, b)


def test_dataset_matches_iterator_and_reports_progress():
    calls = []
    params = replace(TRAIN_PRESET, shape=(64, 64))
    data = make_dataset(3, params, seed=11, progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert len(data) == 3
    assert not np.array_equal(data[0][0], data[1][0])
    stream = iter_dataset(params, seed=11)
    for image, labels in data:
        s_image, s_labels = next(stream)
        assert np.array_equal(image, s_image) and np.array_equal(labels, s_labels)
    assert len(list(iter_dataset(SMALL_3D, seed=0, n=1))) == 1
    assert make_dataset(1, SMALL_3D, seed=0)[0][0].ndim == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "membrane"},
        {"dtype": "float32"},
        {"shape": (1, 2, 3, 4)},
        {"shape": (0, 10)},
        {"radius": (8.0, 4.0)},
        {"density": 0.0},
        {"max_overlap": 0.9},
        {"eccentricity": (0.0, 1.0)},
        {"n_objects": (-1, 3)},
        {"photon_scale": 0.0},
    ],
)
def test_invalid_params_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        SynthParams(**kwargs)


def test_bad_calls_raise_actionable_errors():
    with pytest.raises(TypeError):
        SynthParams(radius="big")
    with pytest.raises(ValueError, match="replace"):
        make_stack_3d(SMALL_2D, 0)
    with pytest.raises(ValueError, match="replace"):
        make_image_2d(SMALL_3D, 0)
    with pytest.raises(ValueError):
        make_image_2d(SMALL_2D, -1)
    with pytest.raises(TypeError):
        make_image_2d(SMALL_2D, 1.5)
    with pytest.raises(ValueError):
        make_dataset(-1, SMALL_2D, 0)


def test_scalar_ranges_are_accepted_and_hashable():
    params = SynthParams(radius=8, blur_sigma=1.0, n_objects=4)
    assert params.radius == (8.0, 8.0) and params.n_objects == (4, 4)
    assert hash(params) == hash(SynthParams(radius=8, blur_sigma=1.0, n_objects=4))


def test_heavily_overlapping_objects_stay_visible():
    """Even with much overlap, every kept object shows >= half of itself, in one piece."""
    from napari_sam.training.synthetic_shapes import place_ellipsoids

    for ndim_shape in [(128, 128), (16, 48, 48)]:
        rng = np.random.default_rng(0)
        labels, patches = place_ellipsoids(
            rng, ndim_shape, np.ones(len(ndim_shape)), 200, (4.0, 12.0), (0.0, 0.8), 0.5, 1.0
        )
        assert len(patches) == labels.max() > 10
        visible = np.bincount(labels.ravel(), minlength=len(patches) + 1)[1:]
        assert all(v >= 0.5 * p.size for v, p in zip(visible, patches))
        _check_instances(labels)
    image, labels = make_image_2d(replace(SMALL_2D, max_overlap=0.5, cluster=1.0, density=1.0), 0)
    _check_instances(labels)
