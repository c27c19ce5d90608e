"""Training data: (image, instance labels) pairs -> 2D planes in the network's intensity range,
random crops, flips and (optionally) degradation.

Images are normalised once per pair (the whole 2D image or the whole 3D stack) with
:class:`napari_sam.preprocess.IntensityNorm`, exactly as inference does, and kept as uint8
(Y, X) or (Y, X, 3) planes, so a pool of hundreds of planes fits in memory and sampling a
training example costs no more than a crop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from napari_sam.preprocess import IntensityNorm, to_network_range
from napari_sam.training.augment import degrade

__all__ = ["DataError", "Plane", "planes_from_pairs", "sample_example"]


class DataError(ValueError):
    """Training data that cannot be used as given; the message says why."""


@dataclass
class Plane:
    """One 2D training plane.

    Attributes
    ----------
    image : (Y, X) or (Y, X, 3) uint8
        Intensities already mapped to the network's 0..255 range.
    labels : (Y, X) uint16 (int64 for more than 65535 objects)
        Instance labels, 0 = background.
    """

    image: np.ndarray
    labels: np.ndarray


def _split(image: np.ndarray, labels: np.ndarray, index: int) -> tuple[np.ndarray, bool]:
    """Return image as (..., Y, X[, C]) and whether it has a channel axis."""
    if labels.ndim not in (2, 3):
        raise DataError(
            f"pair {index}: labels must be (Y, X) or (Z, Y, X), got shape {labels.shape}"
        )
    if image.shape == labels.shape:
        return image, False
    if image.ndim == labels.ndim + 1 and image.shape[:-1] == labels.shape and image.shape[-1] in (1, 3):
        return image, True
    raise DataError(
        f"pair {index}: image shape {image.shape} does not match labels shape {labels.shape}; "
        "expected the same (Y, X) / (Z, Y, X) shape, optionally with a last channel axis of 1 or 3"
    )


def planes_from_pairs(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], min_objects: int = 1
) -> list[Plane]:
    """Turn (image, labels) pairs into 2D training planes.

    Parameters
    ----------
    pairs : iterable of (image, labels)
        2D: image (Y, X) or (Y, X, C) with C in {1, 3}, labels (Y, X).
        3D: image (Z, Y, X) or (Z, Y, X, C), labels (Z, Y, X); every z plane with at least
        ``min_objects`` objects becomes a plane. Labels are instance IDs (any integer dtype),
        0 = background.
    min_objects : int
        Planes with fewer labelled objects are skipped.

    Returns
    -------
    list of Plane

    Raises
    ------
    DataError
        Mismatched shapes, non-integer labels, or no plane with objects at all.
    """
    planes: list[Plane] = []
    for index, (image, labels) in enumerate(pairs):
        img, lab = np.asarray(image), np.asarray(labels)
        if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == np.bool_):
            raise DataError(f"pair {index}: labels must be integer instance IDs, got dtype {lab.dtype}")
        img, has_channels = _split(img, lab, index)
        norm = IntensityNorm.from_data(img)
        stack_img = img if lab.ndim == 3 else img[None]
        stack_lab = lab if lab.ndim == 3 else lab[None]
        for plane_img, plane_lab in zip(stack_img, stack_lab):
            if len(np.unique(plane_lab[plane_lab > 0])) < min_objects:
                continue
            net = to_network_range(plane_img if has_channels else plane_img[..., None], norm)
            grey = bool(np.all(net[..., 0] == net[..., 1]) and np.all(net[..., 0] == net[..., 2]))
            net8 = np.rint(net).astype(np.uint8)
            small = np.uint16 if plane_lab.max() < 2**16 else np.int64
            planes.append(Plane(net8[..., 0] if grey else net8, plane_lab.astype(small)))
    if not planes:
        raise DataError(
            f"no training plane has at least {min_objects} labelled object(s); check that the "
            "labels are instance IDs (0 = background) matching the images"
        )
    return planes


def _crop(
    plane: Plane, rng: np.random.Generator, crop_prob: float, min_crop: int
) -> tuple[np.ndarray, np.ndarray]:
    img, lab = plane.image, plane.labels
    height, width = lab.shape
    if rng.random() >= crop_prob or min(height, width) <= min_crop:
        return img, lab
    # log-uniform side: as many zoomed-in crops (large objects) as wide ones
    side = int(round(np.exp(rng.uniform(np.log(min_crop), np.log(min(height, width))))))
    aspect = float(np.exp(rng.uniform(-0.4, 0.4))) if rng.random() < 0.25 else 1.0
    ch = int(np.clip(round(side * aspect), min_crop, height))
    cw = int(np.clip(round(side / aspect), min_crop, width))
    r0 = int(rng.integers(0, height - ch + 1))
    c0 = int(rng.integers(0, width - cw + 1))
    return img[r0 : r0 + ch, c0 : c0 + cw], lab[r0 : r0 + ch, c0 : c0 + cw]


def _flip(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(4))
    img, lab = np.rot90(img, k, axes=(0, 1)), np.rot90(lab, k, axes=(0, 1))
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def sample_example(
    planes: list[Plane],
    rng: np.random.Generator,
    *,
    max_objects: int,
    crop_prob: float = 0.5,
    min_crop: int = 128,
    augment: bool = True,
    min_area: int = 20,
    tries: int = 20,
    degrade_prob: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one training example: a (cropped, flipped) plane and up to ``max_objects`` masks.
    With probability ``degrade_prob`` the image is also blurred, noised, unevenly lit and/or
    gamma-changed (:func:`napari_sam.training.augment.degrade`); the masks stay as they are.

    Returns
    -------
    image : (y, x) or (y, x, 3) uint8
    masks : (B, y, x) bool, 1 <= B <= max_objects, objects with at least ``min_area`` pixels

    Raises
    ------
    DataError
        If ``tries`` draws in a row found no object of ``min_area`` pixels.
    """
    for _ in range(tries):
        plane = planes[int(rng.integers(len(planes)))]
        img, lab = _crop(plane, rng, crop_prob, min_crop)
        if augment:
            img, lab = _flip(img, lab, rng)
        ids, counts = np.unique(lab, return_counts=True)
        keep = ids[(ids > 0) & (counts >= min_area)]
        if keep.size == 0:
            continue
        chosen = rng.choice(keep, size=min(max_objects, keep.size), replace=False)
        if degrade_prob > 0 and rng.random() < degrade_prob:
            img = degrade(img, rng)
        return img, lab[None] == chosen[:, None, None]
    raise DataError(
        f"{tries} random crops in a row held no object of at least {min_area} pixels; "
        "use larger crops (min_crop) or check the labels"
    )
