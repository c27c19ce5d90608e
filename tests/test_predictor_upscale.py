"""Predictor.upscale's banded resampling equals SAM's two-step bilinear upscale of mask logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_sam.predictor import upscale_logits


def _two_step(low: torch.Tensor, size: int, input_size: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
    """The official postprocessing: bilinear to size x size, crop, bilinear to the original size."""
    x = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original, mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    ("input_size", "original"),
    [((1024, 1024), (512, 512)), ((1024, 683), (600, 400)), ((768, 1024), (1536, 2048)),
     ((1024, 1024), (1024, 1024)), ((1024, 1024), (97, 97)), ((512, 1024), (333, 666))],
)
def test_matches_two_step_interpolation(input_size: tuple[int, int], original: tuple[int, int]) -> None:
    torch.manual_seed(0)
    low = 10 * torch.randn(2, 3, 256, 256)
    got = upscale_logits(low, 1024, input_size, original)
    expected = _two_step(low, 1024, input_size, original)
    assert got.shape == (2, 3, *original)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_small_model_frame() -> None:
    """Tiny models (e.g. 256 px input, 64 px low-res masks) go through the same path."""
    low = torch.randn(1, 1, 64, 64)
    got = upscale_logits(low, 256, (256, 170), (300, 200))
    torch.testing.assert_close(got, _two_step(low, 256, (256, 170), (300, 200)), atol=1e-5, rtol=1e-5)
