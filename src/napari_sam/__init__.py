"""napari-sam: Segment Anything for microscopy, in napari and from scripts.

Importing this package is cheap: torch-heavy modules load on first use of the
names below, so napari starts fast and the model loads only when needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "list_models": "napari_sam.weights",
    "load_model": "napari_sam.weights",
    "ModelInfo": "napari_sam.weights",
    "Predictor": "napari_sam.predictor",
    "Prediction": "napari_sam.predictor",
    "EmbeddingCache": "napari_sam.embeddings",
    "Segmenter": "napari_sam.segment",
    "LabelScheme": "napari_sam.labels",
    "write_mask": "napari_sam.labels",
    "SamWidget": "napari_sam._napari.widget",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam._napari.widget import SamWidget
    from napari_sam.embeddings import EmbeddingCache
    from napari_sam.labels import LabelScheme, write_mask
    from napari_sam.predictor import Prediction, Predictor
    from napari_sam.segment import Segmenter
    from napari_sam.weights import ModelInfo, list_models, load_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_sam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
