"""Prompts for training and evaluation: clicks from masks and from error regions, boxes.

Everything here works on 2D boolean masks of shape (Y, X) and returns napari-order
coordinates: points (row, col), boxes (min_row, min_col, max_row, max_col) with the maxima
inclusive (the last row/column that belongs to the object, as SAM's ``mask_to_box`` gives).

Two kinds of click:

- deterministic, for the evaluation protocol: :func:`interior_point` (the object's pixel
  farthest from its boundary) and :func:`largest_error_click` (the centre of the largest
  error region, positive on a false negative, negative on a false positive);
- random, for training: :func:`random_point` (uniform inside a mask),
  :func:`random_error_click` (uniform over all error pixels) and :func:`sample_correction`,
  which mixes the two kinds of correction click.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "Click",
    "box_of",
    "interior_point",
    "jitter_box",
    "largest_error_click",
    "perturb_mask",
    "random_error_click",
    "random_point",
    "sample_correction",
]


@dataclass(frozen=True)
class Click:
    """One click: ``point`` (row, col) in pixels, ``positive`` True for foreground."""

    point: tuple[int, int]
    positive: bool

    @property
    def label(self) -> int:
        """SAM's point label: 1 positive, 0 negative."""
        return int(self.positive)


def _as_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2D (Y, X) array, got shape {m.shape}")
    return m.astype(bool, copy=False)


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The pixel of ``mask`` farthest from its boundary (the image border counts as boundary).

    Parameters
    ----------
    mask : (Y, X) bool

    Returns
    -------
    (row, col) of the maximum of the Euclidean distance transform; ties go to the first pixel
    in row-major order.

    Raises
    ------
    ValueError
        If the mask is empty.
    """
    m = _as_mask(mask)
    if not m.any():
        raise ValueError("cannot place a click in an empty mask")
    dist = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(dist)), m.shape)
    return int(row), int(col)


def _largest_component(region: np.ndarray) -> tuple[np.ndarray, int]:
    labels, n = ndi.label(region)
    if n == 0:
        return np.zeros_like(region), 0
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    return labels == best, int(sizes[best - 1])


def largest_error_click(
    pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None
) -> Click | None:
    """The evaluation protocol's next click: the centre of the largest error region.

    The false negatives (``target & ~pred``) and false positives (``pred & ~target``) are split
    into 4-connected regions; the largest region by area (ties: false negatives first) gets a
    click at its :func:`interior_point`, positive if it is a false negative, else negative.

    Parameters
    ----------
    pred, target : (Y, X) bool
        Current prediction and ground truth.
    valid : (Y, X) bool, optional
        Where clicks may go (e.g. the image inside a padded frame); default everywhere.

    Returns
    -------
    Click or None
        None when the prediction has no error (inside ``valid``).
    """
    p, t = _as_mask(pred, "pred"), _as_mask(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} must have the same shape")
    fn, fp = t & ~p, p & ~t
    if valid is not None:
        fn, fp = fn & valid, fp & valid
    fn_region, fn_size = _largest_component(fn)
    fp_region, fp_size = _largest_component(fp)
    if fn_size == 0 and fp_size == 0:
        return None
    positive = fn_size >= fp_size
    return Click(interior_point(fn_region if positive else fp_region), positive)


def random_point(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A pixel of ``mask`` drawn uniformly, as (row, col)."""
    m = _as_mask(mask)
    flat = np.flatnonzero(m)
    if flat.size == 0:
        raise ValueError("cannot place a click in an empty mask")
    row, col = np.unravel_index(int(flat[rng.integers(flat.size)]), m.shape)
    return int(row), int(col)


def random_error_click(
    pred: np.ndarray,
    target: np.ndarray,
    rng: np.random.Generator,
    valid: np.ndarray | None = None,
) -> Click | None:
    """A click drawn uniformly from all error pixels (SAM's training recipe).

    Positive where the drawn pixel is a false negative, negative where it is a false positive.
    None when there is no error.
    """
    p, t = _as_mask(pred, "pred"), _as_mask(target, "target")
    error = p ^ t
    if valid is not None:
        error &= valid
    if not error.any():
        return None
    row, col = random_point(error, rng)
    return Click((row, col), bool(t[row, col]))


def sample_correction(
    pred: np.ndarray,
    target: np.ndarray,
    rng: np.random.Generator,
    center_prob: float = 0.5,
    valid: np.ndarray | None = None,
) -> Click | None:
    """A training correction click: with probability ``center_prob`` the centre of the largest
    error region (as in evaluation), else a uniformly drawn error pixel."""
    if rng.random() < center_prob:
        return largest_error_click(pred, target, valid)
    return random_error_click(pred, target, rng, valid)


def box_of(mask: np.ndarray) -> np.ndarray:
    """Tight box of a mask as (min_row, min_col, max_row, max_col), maxima inclusive, float64."""
    m = _as_mask(mask)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        raise ValueError("an empty mask has no box")
    return np.array([rows[0], cols[0], rows[-1], cols[-1]], dtype=np.float64)


def jitter_box(
    box: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, int],
    noise: float = 0.1,
    max_shift: float = 20.0,
) -> np.ndarray:
    """Move each box side by Gaussian noise, as SAM's training does for box prompts.

    Parameters
    ----------
    box : (4,) (min_row, min_col, max_row, max_col)
    rng : numpy Generator
    shape : (Y, X) of the image; the result is clipped to it.
    noise : float
        Standard deviation of each side's shift as a fraction of the box's extent on that axis.
    max_shift : float
        Largest shift of a side in pixels.

    Returns
    -------
    (4,) float64 box, still with min < max on both axes.
    """
    b = np.asarray(box, dtype=np.float64).reshape(4)
    extent = np.array([b[2] - b[0] + 1, b[3] - b[1] + 1, b[2] - b[0] + 1, b[3] - b[1] + 1])
    shift = np.clip(rng.normal(0.0, 1.0, 4) * noise * extent, -max_shift, max_shift)
    out = b + shift
    out[[0, 2]] = np.clip(out[[0, 2]], 0, shape[0] - 1)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, shape[1] - 1)
    for lo, hi, size in ((0, 2, shape[0]), (1, 3, shape[1])):
        if out[hi] - out[lo] < 1:
            mid = 0.5 * (out[lo] + out[hi])
            out[lo], out[hi] = max(mid - 0.5, 0), min(mid + 0.5, size - 1)
    return out


def perturb_mask(mask: np.ndarray, rng: np.random.Generator, max_radius: int = 2) -> np.ndarray:
    """A rough version of ``mask`` to train mask-only prompts (a neighbouring slice's mask, a
    coarse painted label): dilated or eroded by up to ``max_radius`` pixels and shifted by up to
    ``max_radius`` pixels. Never returns an empty mask for a non-empty input."""
    m = _as_mask(mask)
    radius = int(rng.integers(0, max_radius + 1))
    out = m
    if radius:
        structure = ndi.generate_binary_structure(2, 1)
        op = ndi.binary_dilation if rng.random() < 0.5 else ndi.binary_erosion
        out = op(m, structure, iterations=radius)
    shift = rng.integers(-max_radius, max_radius + 1, size=2)
    out = ndi.shift(out, shift, order=0, mode="constant", cval=False)
    return out if out.any() else m
