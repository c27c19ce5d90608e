"""Image preprocessing for SAM: validation, intensity normalisation, resize of the longest side.

Conventions: a 2D image is (Y, X) or (Y, X, C) with C in {1, 3}. uint8 RGB goes to the network
unchanged, as the official predictor does; everything else (grayscale of any dtype, 1-channel,
uint16, float, bool, non-uint8 RGB) is mapped to 0..255 by robust percentiles that are computed once
for a whole stack (so all its slices are encoded consistently) and are part of the embedding signature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_PERCENTILES = (0.5, 99.5)


class ImageError(ValueError):
    """An image cannot be segmented as given (dimensions, dtype, values); the message says why."""


@dataclass(frozen=True)
class IntensityNorm:
    """How raw intensities become the 0..255 network input.

    ``passthrough`` (uint8 RGB): values used unchanged. Otherwise ``low`` maps to 0 and ``high`` to
    255, clipped; non-finite values map to 0.
    """

    low: float = 0.0
    high: float = 255.0
    passthrough: bool = False

    def signature(self) -> str:
        """A stable string for embedding signatures."""
        if self.passthrough:
            return "passthrough"
        return f"pct:{self.low!r}:{self.high!r}"

    @classmethod
    def from_data(
        cls, data: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    ) -> IntensityNorm:
        """Robust range of ``data`` (an image, a stack, or a sample of slices concatenated).

        uint8 data whose last axis is 3 (RGB) is passed through unchanged.
        """
        data = np.asarray(data)
        if data.dtype == np.uint8 and data.ndim >= 3 and data.shape[-1] == 3:
            return cls(passthrough=True)
        check_dtype(data.dtype)
        values = data.astype(np.float64, copy=False).ravel()
        if values.size > 4_000_000:  # a strided sample keeps this fast on large stacks
            values = values[:: values.size // 4_000_000]
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ImageError("the image has no finite values (all NaN or infinite)")
        low, high = np.percentile(values, percentiles)
        if high <= low:  # flat image, or nearly binary: fall back to the full range
            low, high = float(values.min()), float(values.max())
        if high <= low:
            high = low + 1.0
        return cls(low=float(low), high=float(high))


def check_dtype(dtype: np.dtype) -> None:
    """Accept bool, integer and real floating dtypes; reject the rest with a clear message."""
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating):
        return
    raise ImageError(f"unsupported image dtype {dtype}: use an integer, float or bool image")


def as_yxc(image: np.ndarray) -> np.ndarray:
    """Validate a 2D image and return it as (Y, X, C) with C in {1, 3} (a view when possible)."""
    image = np.asarray(image)
    check_dtype(image.dtype)
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ImageError(
            f"expected a 2D image (Y, X) or (Y, X, C) with C = 1 or 3, got shape {image.shape}; "
            "for a stack use napari_sam.Segmenter, for other channel counts pick one channel or "
            "three channels first"
        )
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ImageError(f"image of shape {image.shape[:2]} is too small to segment")
    return image


def to_network_range(image: np.ndarray, norm: IntensityNorm) -> np.ndarray:
    """(Y, X, C) image -> (Y, X, 3) float32 in 0..255 according to ``norm``."""
    image = as_yxc(image)
    if norm.passthrough:
        out = image.astype(np.float32)
    else:
        x = image.astype(np.float32)
        scale = np.float32(255.0 / (norm.high - norm.low))
        x = (x - np.float32(norm.low)) * scale
        x = np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0)
        out = np.clip(x, 0.0, 255.0)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return out


def resized_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """(h, w) after scaling so the longest side is ``longest`` (rounded like the official code)."""
    scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_model_input(image_255: np.ndarray, img_size: int, round_to_uint8: bool = True) -> torch.Tensor:
    """(Y, X, 3) float in 0..255 -> (1, 3, h, w) float32 tensor with the longest side = img_size.

    Resizing is bilinear with antialiasing (as PIL does for the official predictor); with
    ``round_to_uint8`` the result is rounded to whole values, as the official 8-bit pipeline does.
    """
    h, w = resized_shape(image_255.shape[0], image_255.shape[1], img_size)
    x = torch.from_numpy(np.ascontiguousarray(image_255, dtype=np.float32)).permute(2, 0, 1)[None]
    if (h, w) != tuple(image_255.shape[:2]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        if round_to_uint8:
            x = x.round().clamp_(0, 255)
    return x


def mask_to_logits(mask: np.ndarray, img_size: int, low_res: tuple[int, int], strength: float = 10.0) -> torch.Tensor:
    """A boolean (Y, X) mask -> (1, 1, Hl, Wl) logits usable as SAM's mask prompt.

    The mask is resized like the image, padded to the model frame and area-averaged down to the
    low-res grid; the fraction f in [0, 1] becomes ``strength * (2 f - 1)`` (positive inside).
    """
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    h, w = resized_shape(m.shape[-2], m.shape[-1], img_size)
    m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    m = F.pad(m, (0, img_size - w, 0, img_size - h))
    m = F.interpolate(m, size=low_res, mode="area")
    return strength * (2.0 * m - 1.0)
