"""Shared fixtures: a small random SAM (same code as the real ones, reduced config) and tiny-synth."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sam.model import SamConfig, build_sam

# The shipped weights; NAPARI_SAM_TEST_TINY_SYNTH points the tests at another file (e.g. a
# checkpoint being trained).
TINY_SYNTH = Path(
    os.environ.get("NAPARI_SAM_TEST_TINY_SYNTH")
    or Path(__file__).resolve().parents[2] / "src" / "napari_sam" / "weights_data" / "tiny_synth.pt"
)
SMALL = SamConfig(
    img_size=256, embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4,
    prompt_embed_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64,
)


@pytest.fixture(scope="session")
def small_model():  # noqa: ANN201
    """Random weights: masks are arbitrary but deterministic; for API and bookkeeping tests."""
    torch.manual_seed(0)
    model = build_sam(SMALL).eval()
    model.precision = "fp32"
    return model


@pytest.fixture(scope="session")
def tiny_synth():  # noqa: ANN201
    """The shipped model trained on synthetic microscopy; tests that need it skip without it."""
    if not TINY_SYNTH.exists():
        pytest.skip(f"tiny-synth weights not found at {TINY_SYNTH} (trained by napari_sam.training)")
    from napari_sam.weights import load_model

    return load_model(str(TINY_SYNTH), device="cpu", precision="fp32")


@pytest.fixture()
def blobs_stack() -> np.ndarray:
    """(4, 64, 80) float32: smooth bright blobs on a dark background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :80]
    stack = np.zeros((4, 64, 80), np.float32)
    for z in range(4):
        for cy, cx in [(20, 20), (40, 55)]:
            stack[z] += np.exp(-((yy - cy - z) ** 2 + (xx - cx) ** 2) / 60.0)
    return stack + 0.05 * rng.random(stack.shape, dtype=np.float32)
