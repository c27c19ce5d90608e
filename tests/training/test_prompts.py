"""Click and box placement for training and for the evaluation protocol."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam.training.prompts import (
    box_of,
    interior_point,
    jitter_box,
    largest_error_click,
    perturb_mask,
    random_error_click,
    random_point,
    sample_correction,
)


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def test_interior_point_is_the_centre_of_a_disc_and_inside_the_thick_part() -> None:
    assert interior_point(_disc((40, 40), (17, 22), 8)) == (17, 22)
    shape = np.zeros((30, 30), bool)
    shape[2:28, 2:6] = True  # thin bar
    shape[10:24, 6:20] = True  # thick block
    r, c = interior_point(shape)
    assert 13 <= r <= 20 and 6 <= c <= 13  # in the block, about 7 px from its edges


def test_interior_point_treats_the_image_border_as_boundary() -> None:
    mask = np.zeros((20, 40), bool)
    mask[:, :30] = True  # touches top, bottom and left border
    r, c = interior_point(mask)
    assert 8 <= r <= 11 and 9 <= c <= 20


def test_empty_mask_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        interior_point(np.zeros((5, 5), bool))


def test_missed_object_gets_a_positive_click_at_its_centre() -> None:
    target = _disc((50, 50), (20, 30), 6)
    click = largest_error_click(np.zeros_like(target), target)
    assert click is not None and click.positive and click.label == 1
    assert click.point == (20, 30)


def test_largest_false_positive_gets_a_negative_click_inside_it() -> None:
    target = _disc((60, 60), (15, 15), 6)
    pred = target.copy()
    pred[10:12, 10:12] = False  # small false negative
    leak = _disc((60, 60), (45, 45), 8)
    pred |= leak  # large false positive
    click = largest_error_click(pred, target)
    assert click is not None and not click.positive and click.label == 0
    assert leak[click.point] and not target[click.point]
    assert click.point == (45, 45)


def test_no_error_gives_no_click_and_valid_restricts_clicks() -> None:
    target = _disc((30, 30), (15, 15), 5)
    assert largest_error_click(target, target) is None
    pred = target.copy()
    pred[:, 25:] = True  # false positive only outside the valid area
    valid = np.ones_like(target)
    valid[:, 25:] = False
    assert largest_error_click(pred, target, valid) is None


def test_random_error_click_labels_false_negatives_positive_and_false_positives_negative() -> None:
    rng = np.random.default_rng(0)
    target = _disc((40, 40), (20, 20), 10)
    pred_fn = target & ~_disc((40, 40), (20, 27), 4)  # missing a bite
    for _ in range(20):
        click = random_error_click(pred_fn, target, rng)
        assert click is not None and click.positive and target[click.point] and not pred_fn[click.point]
    pred_fp = target | _disc((40, 40), (5, 5), 3)
    for _ in range(20):
        click = sample_correction(pred_fp, target, rng, center_prob=0.5)
        assert click is not None and not click.positive and pred_fp[click.point] and not target[click.point]


def test_random_point_is_inside_the_mask() -> None:
    rng = np.random.default_rng(1)
    mask = _disc((30, 30), (10, 12), 3)
    assert all(mask[random_point(mask, rng)] for _ in range(50))


def test_box_of_has_inclusive_maxima_and_jitter_stays_valid() -> None:
    mask = np.zeros((50, 60), bool)
    mask[10:21, 5:31] = True
    box = box_of(mask)
    assert box.tolist() == [10, 5, 20, 30]
    rng = np.random.default_rng(2)
    boxes = np.array([jitter_box(box, rng, mask.shape, noise=0.3) for _ in range(200)])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 49 and boxes[:, [1, 3]].max() <= 59
    assert np.abs(boxes - box).max() <= 20 + 1e-9  # the largest shift is bounded
    assert np.abs(boxes - box).mean() > 0.5  # and it does move


def test_perturbed_mask_stays_close_and_non_empty() -> None:
    rng = np.random.default_rng(3)
    mask = _disc((40, 40), (20, 20), 8)
    for _ in range(20):
        rough = perturb_mask(mask, rng)
        assert rough.any()
        inter = (rough & mask).sum() / (rough | mask).sum()
        assert inter > 0.4
