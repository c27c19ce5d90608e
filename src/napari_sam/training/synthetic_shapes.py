"""Object geometry for synthetic microscopy: ellipses/ellipsoids and tessellations.

Everything works for 2D (row, col) and 3D (z, row, col) alike. Physical
distances use ``spacing`` (pixel size per axis, lateral = 1), so objects stay
round in physical space when z is sampled more coarsely.

These are internals of :mod:`napari_sam.training.synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

__all__ = [
    "MIN_PIXELS",
    "MIN_VISIBLE_FRACTION",
    "Patch",
    "ellipsoid_patch",
    "place_ellipsoids",
    "tessellate",
    "relabel_consecutive",
]

#: Smallest object (in pixels / voxels) kept in the ground truth.
MIN_PIXELS = 20
#: Objects hidden by later ones below this fraction of their area are dropped.
MIN_VISIBLE_FRACTION = 0.5


@dataclass(frozen=True)
class Patch:
    """One rasterised ellipse/ellipsoid inside its bounding box.

    Attributes
    ----------
    slices : tuple of slice
        Bounding box in the image, napari axis order.
    mask : numpy.ndarray
        bool, the box's shape: pixels inside the object.
    rho : numpy.ndarray
        float32, the box's shape: normalised radius (0 at the centre, 1 on the
        outline); only meaningful where ``mask`` is True.
    """

    slices: tuple[slice, ...]
    mask: np.ndarray
    rho: np.ndarray

    @property
    def size(self) -> int:
        """Number of pixels inside the object (within the image)."""
        return int(np.count_nonzero(self.mask))


def random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """Uniformly random rotation matrix of shape (ndim, ndim), ndim in {2, 3}."""
    if ndim == 2:
        theta = rng.uniform(0.0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        return np.array([[c, -s], [s, c]])
    w, x, y, z = rng.standard_normal(4)
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def axis_radii(rng: np.random.Generator, radius: float, eccentricity: float, ndim: int) -> np.ndarray:
    """Semi-axes with the area (2D) / volume (3D) of a disc/ball of ``radius``.

    The longest and shortest axes have the given eccentricity
    ``sqrt(1 - (short / long) ** 2)``; in 3D the middle axis is random in between.
    """
    ratio = np.sqrt(max(1.0 - eccentricity**2, 1e-4))  # short / long
    if ndim == 2:
        axes = np.array([1.0, ratio])
    else:
        axes = np.array([1.0, rng.uniform(ratio, 1.0), ratio])
    axes *= radius / np.prod(axes) ** (1.0 / ndim)
    return axes


def ellipsoid_patch(
    center: np.ndarray,
    radii: np.ndarray,
    rotation: np.ndarray,
    shape: tuple[int, ...],
    spacing: np.ndarray,
) -> Patch | None:
    """Rasterise an ellipse/ellipsoid, clipped to the image.

    Parameters
    ----------
    center : numpy.ndarray
        (ndim,) centre in pixel index coordinates, napari order.
    radii : numpy.ndarray
        (ndim,) semi-axes in physical units (lateral pixels).
    rotation : numpy.ndarray
        (ndim, ndim); column k is the direction of semi-axis k (napari order).
    shape : tuple of int
        Image shape.
    spacing : numpy.ndarray
        (ndim,) physical size of a pixel along each axis.

    Returns
    -------
    Patch or None
        None when the object does not touch the image.
    """
    half = np.sqrt(((rotation * radii[None, :]) ** 2).sum(axis=1)) / spacing
    lo = np.maximum(np.floor(center - half).astype(int), 0)
    hi = np.minimum(np.ceil(center + half).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    offsets = [
        ((np.arange(a, b, dtype=np.float32) - np.float32(c)) * np.float32(sp))
        for a, b, c, sp in zip(lo, hi, center, spacing)
    ]
    ndim = len(shape)
    grids = np.ix_(*offsets)
    rho2 = np.zeros(tuple(hi - lo), dtype=np.float32)
    for k in range(ndim):
        q = sum(np.float32(rotation[i, k]) * grids[i] for i in range(ndim))
        rho2 += (q / np.float32(radii[k])) ** 2
    mask = rho2 <= 1.0
    if not mask.any():
        return None
    slices = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return Patch(slices=slices, mask=mask, rho=np.sqrt(rho2))


def _random_direction(rng: np.random.Generator, ndim: int) -> np.ndarray:
    v = rng.standard_normal(ndim)
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _candidate_center(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    centers: list[np.ndarray],
    sizes: list[float],
    radius: float,
    cluster: float,
    distance_factor: tuple[float, float],
) -> np.ndarray:
    """Draw a centre: next to an existing object with probability ``cluster``, else uniform."""
    if centers and rng.random() < cluster:
        j = int(rng.integers(len(centers)))
        dist = (sizes[j] + radius) * rng.uniform(*distance_factor)
        center = centers[j] + _random_direction(rng, len(shape)) * dist / spacing
        if np.all(center >= 0) and np.all(center <= np.asarray(shape) - 1):
            return center
    return rng.uniform(0.0, 1.0, size=len(shape)) * (np.asarray(shape) - 1)


def relabel_consecutive(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Map the ids in ``keep`` (sorted, > 0) to 1..len(keep); everything else to 0."""
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint32)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.uint32)
    return lut[labels]


def _paint(labels: np.ndarray, patches: list[Patch]) -> None:
    labels.fill(0)
    for k, patch in enumerate(patches, start=1):
        labels[patch.slices][patch.mask] = k


def _is_connected(labels: np.ndarray, patch: Patch, label: int) -> bool:
    _, n = ndimage.label(labels[patch.slices] == label)
    return n == 1


def place_ellipsoids(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    n: int,
    radius: tuple[float, float],
    eccentricity: tuple[float, float],
    max_overlap: float,
    cluster: float,
    tries: int = 20,
) -> tuple[np.ndarray, list[Patch]]:
    """Place up to ``n`` ellipses/ellipsoids one after another.

    A candidate is rejected when more than ``max_overlap`` of it lies on
    objects already placed. In overlaps the later object wins. Objects that end
    up with less than half of their pixels visible, fewer than
    :data:`MIN_PIXELS` pixels, or in more than one piece (face connectivity;
    in 3D this also keeps every object's z-extent contiguous) are removed,
    which can only uncover earlier objects, and the check is repeated.

    Returns
    -------
    labels : numpy.ndarray
        uint32 of ``shape``; 0 = background, objects 1..N in placement order.
    patches : list of Patch
        The N kept objects; ``patches[k - 1]`` is label ``k``.
    """
    ndim = len(shape)
    labels = np.zeros(shape, dtype=np.uint32)
    patches: list[Patch] = []
    centers: list[np.ndarray] = []
    sizes: list[float] = []
    for _ in range(n):
        for _attempt in range(tries):
            r = rng.uniform(*radius)
            radii = axis_radii(rng, r, rng.uniform(*eccentricity), ndim)
            center = _candidate_center(rng, shape, spacing, centers, sizes, r, cluster, (0.8, 1.05))
            patch = ellipsoid_patch(center, radii, random_rotation(rng, ndim), shape, spacing)
            if patch is None or patch.size < MIN_PIXELS:
                continue
            region = labels[patch.slices]
            if np.count_nonzero(region[patch.mask]) > max_overlap * patch.size:
                continue
            region[patch.mask] = len(patches) + 1
            patches.append(patch)
            centers.append(center)
            sizes.append(r)
            break
    while True:
        visible = np.bincount(labels.ravel(), minlength=len(patches) + 1)
        keep = []
        for k, patch in enumerate(patches, start=1):
            v = int(visible[k])
            ok = v >= MIN_PIXELS and v >= MIN_VISIBLE_FRACTION * patch.size
            if ok and v < patch.size:  # partly covered: it may have been cut in two
                ok = _is_connected(labels, patch, k)
            if ok:
                keep.append(patch)
        if len(keep) == len(patches):
            return labels, patches
        patches = keep
        _paint(labels, patches)


def _dart_seeds(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    n: int,
    radius: tuple[float, float],
    cluster: float,
    tries: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres no closer than 0.8 x the sum of their radii (physical units)."""
    ndim = len(shape)
    centers: list[np.ndarray] = []
    radii: list[float] = []
    phys = np.empty((n, ndim))
    rad = np.empty(n)
    for _ in range(n):
        for _attempt in range(tries):
            r = rng.uniform(*radius)
            c = _candidate_center(rng, shape, spacing, centers, radii, r, cluster, (0.85, 1.0))
            k = len(centers)
            if k:
                d = np.sqrt(((phys[:k] - c * spacing) ** 2).sum(axis=1))
                if np.any(d < 0.8 * (rad[:k] + r)):
                    continue
            phys[k] = c * spacing
            rad[k] = r
            centers.append(c)
            radii.append(r)
            break
    return np.array(centers).reshape(-1, ndim), np.array(radii)


def tessellate(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    n: int,
    radius: tuple[float, float],
    eccentricity: tuple[float, float],
    cluster: float,
    wobble: np.ndarray,
) -> np.ndarray:
    """Touching cells: a watershed tessellation of a union of ellipses/ellipsoids.

    Seeds are spread by dart throwing (clustered with probability ``cluster``,
    so cells form sheets and colonies); each seed's ellipse, enlarged by 20 %,
    defines the foreground; a watershed from the seeds on "distance to the
    nearest seed + ``wobble``" splits it into cells with irregular borders.

    Parameters
    ----------
    wobble : numpy.ndarray
        float32 of ``shape``: smooth noise added to the distance landscape, in
        physical units; makes cell borders wavy instead of straight.

    Returns
    -------
    numpy.ndarray
        uint32 labels of ``shape``; 0 = background, cells 1..N, each connected
        and at least :data:`MIN_PIXELS` pixels.
    """
    ndim = len(shape)
    centers, radii = _dart_seeds(rng, shape, spacing, n, radius, cluster)
    if len(centers) == 0:
        return np.zeros(shape, dtype=np.uint32)
    foreground = np.zeros(shape, dtype=bool)
    markers = np.zeros(shape, dtype=np.int32)
    for k, (center, r) in enumerate(zip(centers, radii), start=1):
        axes = axis_radii(rng, 1.2 * r, rng.uniform(*eccentricity), ndim)
        patch = ellipsoid_patch(center, axes, random_rotation(rng, ndim), shape, spacing)
        if patch is not None:
            foreground[patch.slices] |= patch.mask
        markers[tuple(np.rint(center).astype(int))] = k
    markers[~foreground] = 0
    distance = ndimage.distance_transform_edt(markers == 0, sampling=spacing).astype(np.float32)
    labels = watershed(distance + wobble, markers=markers, mask=foreground, connectivity=1)
    counts = np.bincount(labels.ravel(), minlength=len(centers) + 1)
    keep = np.flatnonzero(counts >= MIN_PIXELS)
    keep = keep[keep > 0]
    return relabel_consecutive(labels.astype(np.uint32), keep)
