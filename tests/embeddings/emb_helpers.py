"""Fixtures for the embedding engine tests: a small random SAM (same code as the real ones)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch

from napari_sam.model import SamConfig, build_sam

# The reduced config of /tmp/api.md: a 256 px input, 16 x 16 x 64 embeddings, ~5 ms per encode.
TEST_CONFIG = SamConfig(
    img_size=256, embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4,
    prompt_embed_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64,
)


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_sam(TEST_CONFIG).eval()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run 100x slower when two threads spin on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model() -> torch.nn.Module:
    return make_model(0)


@dataclass
class EncoderCounter:
    """How many times the model's encoder ran, and on how many images in all."""

    calls: int = 0
    images: int = 0
    sizes: list[int] = field(default_factory=list)


@pytest.fixture
def encoder(model: torch.nn.Module) -> Iterator[EncoderCounter]:
    """Counts real encoder runs by wrapping ``model.encode`` for one test."""
    counter = EncoderCounter()
    original = model.encode

    def counting(x: torch.Tensor) -> torch.Tensor:
        counter.calls += 1
        counter.images += int(x.shape[0])
        counter.sizes.append(int(x.shape[0]))
        return original(x)

    model.encode = counting
    yield counter
    del model.encode
