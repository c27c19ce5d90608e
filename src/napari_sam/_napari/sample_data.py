"""Sample data for napari's File > Open Sample menu: synthetic fluorescent nuclei (no download)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from napari_sam.training.synthetic import TRAIN_PRESET, make_image_2d, make_stack_3d

SEED = 7
LayerData = tuple[Any, dict[str, Any], str]


def nuclei_2d() -> list[LayerData]:
    """A (256, 256) uint16 image of synthetic nuclei."""
    image, _ = make_image_2d(replace(TRAIN_PRESET, shape=(256, 256)), SEED)
    return [(image, {"name": "synthetic nuclei 2D", "contrast_limits": _limits(image)}, "image")]


def nuclei_3d() -> list[LayerData]:
    """A (32, 256, 256) uint16 stack of synthetic nuclei, z sampled 2x coarser than y, x."""
    params = replace(TRAIN_PRESET, shape=(32, 256, 256))
    stack, _ = make_stack_3d(params, SEED)
    meta = {
        "name": "synthetic nuclei 3D",
        "scale": (params.z_anisotropy, 1.0, 1.0),
        "contrast_limits": _limits(stack),
    }
    return [(stack, meta, "image")]


def _limits(image: Any) -> tuple[float, float]:
    import numpy as np

    low, high = np.percentile(image, (0.5, 99.8))
    return float(low), float(max(high, low + 1))
