"""The encoder's two attention kernels (CPU blocked matmul, SDPA with a mask) agree, with autograd.

The CPU kernel is what runs on CPUs; the SDPA kernel runs on CUDA/MPS and is only reachable here by
calling it directly. Both are checked against a plain formula of SAM's attention with decomposed
relative position bias, for a windowed-size grid (bias folded into the product) and a global-size
grid (bias added per block of query rows, several blocks).
"""

from __future__ import annotations

import pytest
import torch

from napari_sam.model import image_encoder
from napari_sam.model.image_encoder import Attention, relative_positions


def _plain(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T * scale + rel_h + rel_w) v, written out as in the SAM paper."""
    b, h, w, _ = x.shape
    qkv = attn.qkv(x).reshape(b, h * w, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    scores = (q * attn.scale) @ k.transpose(-1, -2)
    rh = relative_positions(attn.rel_pos_h, h, h)
    rw = relative_positions(attn.rel_pos_w, w, w)
    grid_q = q.reshape(b, attn.num_heads, h, w, -1)
    bias_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, rh)
    bias_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, rw)
    bias = bias_h[..., :, None] + bias_w[..., None, :]
    scores = scores + bias.reshape(scores.shape)
    out = torch.softmax(scores, dim=-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(b, h, w, -1))


def _module(grid: tuple[int, int], dim: int = 32, heads: int = 2) -> Attention:
    torch.manual_seed(0)
    attn = Attention(dim=dim, num_heads=heads, input_size=grid)
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 0.5)
        attn.rel_pos_w.normal_(0, 0.5)
    return attn


@pytest.mark.parametrize("grid", [(4, 5), (12, 10)], ids=["folded-bias", "added-bias"])
@pytest.mark.parametrize("kernel", ["cpu", "sdpa"])
def test_kernels_match_plain_formula(grid: tuple[int, int], kernel: str, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(image_encoder, "_SCORE_CHUNK_BYTES", 4000)  # several blocks
    attn = _module(grid)
    if kernel == "sdpa":
        monkeypatch.setattr(attn, "_attend_cpu", attn._attend_sdpa)
    x = torch.randn(3, *grid, 32)
    with torch.inference_mode():
        expected = _plain(attn, x)
        got = attn(x)
    assert got.shape == (3, *grid, 32)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("grid", [(4, 5), (12, 10)], ids=["folded-bias", "added-bias"])
def test_cpu_kernel_gradients(grid: tuple[int, int], monkeypatch) -> None:  # noqa: ANN001
    """Training backpropagates through the CPU kernel: gradients equal the plain formula's."""
    monkeypatch.setattr(image_encoder, "_SCORE_CHUNK_BYTES", 4000)
    attn = _module(grid)
    x = torch.randn(2, *grid, 32, requires_grad=True)
    grads = []
    for fn in (_plain, lambda a, t: a(t)):
        attn.zero_grad()
        x.grad = None
        (fn(attn, x) ** 2).sum().backward()
        grads.append((x.grad.clone(), attn.rel_pos_h.grad.clone(), attn.qkv.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_bf16_close_to_fp32() -> None:
    attn = _module((12, 10))
    x = torch.randn(1, 12, 10, 32)
    with torch.inference_mode():
        ref = attn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(x).float()
    assert ((low - ref).norm() / ref.norm()).item() < 0.02
