"""A classical seeded baseline for the interactive protocol: local Otsu threshold plus a marker
watershed from the clicks (scikit-image), as a careful user of classical tools would do it.

For an object started by a positive click:

1. the image is smoothed (Gaussian, ``sigma``) once per image;
2. a threshold is computed by Otsu's method (refined to the midpoint of the two classes' means)
   in a window around the first click (or in the box enlarged by 25 %), so uneven
   illumination is handled locally;
3. markers: the positive clicks (label 1); the negative clicks, everything below the threshold,
   and the centres of the other bright blobs (maxima of the foreground's distance transform
   farther than the clicked blob's radius from every positive click) (label 2);
4. a watershed on the inverted distance transform of the foreground separates touching
   objects; the object is the basin of label 1.

Boxes use the same steps with the box's most interior foreground pixel as the positive click
and everything outside the box as background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed

from napari_sam.preprocess import IntensityNorm, as_yxc, to_network_range

__all__ = ["SeededWatershed"]


class SeededWatershed:
    """Classical interactive segmentation with the :class:`~napari_sam.training.evaluate.
    InteractiveMethod` interface.

    Parameters
    ----------
    sigma : float
        Gaussian smoothing in pixels.
    window : int
        Half-size of the window around the first click in which the threshold is computed.
    min_distance : int
        Smallest distance between two blob centres used as background markers.
    """

    name = "seeded watershed (baseline)"

    def __init__(self, sigma: float = 1.5, window: int = 40, min_distance: int = 4) -> None:
        self.sigma, self.window, self.min_distance = sigma, window, min_distance
        self._smooth: np.ndarray | None = None
        self._threshold = 0.0

    def set_image(self, image: np.ndarray) -> None:
        img = as_yxc(np.asarray(image))
        net = to_network_range(img, IntensityNorm.from_data(img)).mean(axis=2)
        self._smooth = gaussian(net, self.sigma, preserve_range=True)

    @property
    def smooth(self) -> np.ndarray:
        if self._smooth is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._smooth

    def _otsu(self, r0: int, c0: int, r1: int, c1: int) -> float:
        h, w = self.smooth.shape
        patch = self.smooth[max(r0, 0) : min(r1, h), max(c0, 0) : min(c1, w)]
        if np.ptp(patch) == 0:
            return float(patch.mean())
        # Otsu's split, then the midpoint of the two classes' means (stable when few pixels
        # lie between the two modes, where Otsu's optimum is flat)
        split = float(threshold_otsu(patch))
        low, high = patch[patch <= split], patch[patch > split]
        return 0.5 * (float(low.mean()) + float(high.mean())) if low.size and high.size else split

    def _segment(
        self, positives: np.ndarray, negatives: np.ndarray, allowed: np.ndarray | None = None
    ) -> np.ndarray:
        smooth = self.smooth
        fg = smooth > self._threshold
        if allowed is not None:
            fg &= allowed
        pos = np.round(positives).astype(int)
        fg[pos[:, 0], pos[:, 1]] = True
        dist = ndi.distance_transform_edt(fg)
        markers = np.zeros(smooth.shape, dtype=np.int32)
        markers[~fg] = 2
        radius = max(float(dist[pos[:, 0], pos[:, 1]].max()), 1.0)
        peaks = peak_local_max(dist, min_distance=self.min_distance, labels=fg.astype(np.int32))
        if len(peaks):
            gap = np.sqrt(((peaks[:, None, :] - pos[None, :, :]) ** 2).sum(-1)).min(axis=1)
            far = peaks[gap > 1.5 * radius]
            markers[far[:, 0], far[:, 1]] = 2
        for r, c in np.round(negatives).astype(int).reshape(-1, 2):
            markers[r, c] = 2
        markers[pos[:, 0], pos[:, 1]] = 1
        basins = watershed(-dist, markers, mask=fg | (markers > 0))
        return basins == 1

    def click(self, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=float).reshape(-1, 2)
        lab = np.asarray(labels).reshape(-1)
        if len(pts) == 1:
            r, c = np.round(pts[0]).astype(int)
            self._threshold = self._otsu(r - self.window, c - self.window, r + self.window + 1, c + self.window + 1)
        positives = pts[lab == 1]
        if len(positives) == 0:
            return np.zeros(self.smooth.shape, dtype=bool)
        return self._segment(positives, pts[lab == 0])

    def box(self, box: np.ndarray) -> np.ndarray:
        r0, c0, r1, c1 = np.round(np.asarray(box, dtype=float)).astype(int)
        h, w = self.smooth.shape
        r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, h - 1), min(c1, w - 1)
        pad_r, pad_c = max((r1 - r0) // 8, 2), max((c1 - c0) // 8, 2)
        self._threshold = self._otsu(r0 - pad_r, c0 - pad_c, r1 + pad_r + 1, c1 + pad_c + 1)
        inside = np.zeros((h, w), dtype=bool)
        inside[r0 : r1 + 1, c0 : c1 + 1] = True
        fg = (self.smooth > self._threshold) & inside
        if not fg.any():
            return inside
        dist = ndi.distance_transform_edt(fg)
        seed = np.array([np.unravel_index(int(np.argmax(dist)), dist.shape)], dtype=float)
        return self._segment(seed, np.zeros((0, 2)), allowed=inside)
