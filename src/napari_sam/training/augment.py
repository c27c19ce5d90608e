"""Image degradation for training: blur, uneven illumination, gamma, a background offset and
camera noise on a plane that is already in the network's 0..255 range.

A model trained on clean images over-segments blurred objects (it takes the halo for the object)
and misses dim ones. Degrading a share of the training examples teaches it that the labels stay
the same when the optics and the camera get worse. The result is clipped to 0..255, the range
inference produces after its own intensity normalisation.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["degrade"]


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A degraded copy of ``image``; each effect is applied independently with its own chance.

    In the order they are applied:

    - blur (40 %): Gaussian, sigma 0.5-1.6 px (extra PSF width);
    - uneven illumination (30 %): a linear ramp down to 55-100 % of the brightness;
    - gamma (30 %): 0.75-1.35;
    - background offset (30 %): up to 30 grey levels added, the contrast above it compressed to
      keep the range (autofluorescence, a camera offset);
    - noise (60 %): Gaussian with a signal-dependent part, std 2-14 grey levels plus up to
      ~24 at full brightness (fewer photons, a noisier camera).

    Parameters
    ----------
    image : (Y, X) or (Y, X, 3) uint8
        A plane in the network's range.
    rng : numpy.random.Generator

    Returns
    -------
    (Y, X) or (Y, X, 3) uint8, the same shape as ``image``.
    """
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ValueError(f"degrade takes a (Y, X) or (Y, X, 3) uint8 plane, got {image.dtype} {image.shape}")
    out = image.astype(np.float32)
    spatial = (1.0, 1.0, 0.0)[: out.ndim]
    if rng.random() < 0.4:
        sigma = float(rng.uniform(0.5, 1.6))
        out = ndi.gaussian_filter(out, sigma=[s * sigma for s in spatial])
    if rng.random() < 0.3:
        height, width = out.shape[:2]
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = np.cos(angle) * yy / max(height - 1, 1) + np.sin(angle) * xx / max(width - 1, 1)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        factor = 1.0 - float(rng.uniform(0.0, 0.45)) * ramp
        out = out * (factor[..., None] if out.ndim == 3 else factor)
    if rng.random() < 0.3:
        gamma = float(rng.uniform(0.75, 1.35))
        out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** gamma
    if rng.random() < 0.3:
        offset = float(rng.uniform(0.0, 30.0))
        out = offset + out * (1.0 - offset / 255.0)
    if rng.random() < 0.6:
        read = float(rng.uniform(2.0, 14.0))
        shot = float(rng.uniform(0.0, 1.5))
        std = np.sqrt(read**2 + shot**2 * np.clip(out, 0, None))
        out = out + rng.standard_normal(out.shape).astype(np.float32) * std
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
