"""Fixtures for the training tests: a tiny SAM built from the same code as the real ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_sam.model import Sam, SamConfig, build_sam
from napari_sam.training.synthetic import TRAIN_PRESET, make_dataset

TINY = SamConfig(
    img_size=128, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4,
    prompt_embed_dim=32, decoder_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32,
)


@pytest.fixture
def tiny_model() -> Sam:
    torch.manual_seed(0)
    return build_sam(TINY)


@pytest.fixture(scope="module")
def tiny_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three small nuclei images (96 x 96) with their instance labels."""
    return make_dataset(3, replace(TRAIN_PRESET, shape=(96, 96), n_objects=(4, 8)), seed=3)
