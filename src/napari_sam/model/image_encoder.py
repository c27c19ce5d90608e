"""The ViT image encoder of SAM (ViT-B/L/H): windowed and global attention with decomposed
relative position bias, followed by a convolutional neck.

Parameter names and shapes match the official checkpoints, so they load with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_sam._allocator import tune_allocator
from napari_sam.model.common import LayerNorm2d, MLPBlock


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: (B, C, H, W) -> (B, H/p, W/p, embed_dim)."""

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def relative_positions(rel_pos: Tensor, q_size: int, k_size: int) -> Tensor:
    """Look up the relative position embeddings for every (query, key) pair along one axis.

    Parameters
    ----------
    rel_pos : Tensor
        (L, C) learned table; resized linearly when L != 2 * max(q_size, k_size) - 1.
    q_size, k_size : int
        Number of query and key positions along the axis.

    Returns
    -------
    Tensor
        (q_size, k_size, C).
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(
            rel_pos.T.unsqueeze(0), size=length, mode="linear"
        )[0].T
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    index = (q_coords - k_coords) + (k_size - 1) * k_scale
    return rel_pos[index.long()]


# CPU attention works on blocks of query rows whose score matrix takes about this many bytes, so
# the scores stay in cache, stay below glibc's mmap threshold (32 MiB, see napari_sam._allocator)
# and the (heads, N, N) table of a global block is never built whole (for ViT-B at 1024 px it
# would take 400 MB in bf16, 800 MB in fp32).
_SCORE_CHUNK_BYTES = 24 * 2**20


def _one_hot_grid(h: int, w: int, like: Tensor) -> Tensor:
    """(h * w, h + w): for each key position (ky, kx) of a row-major grid, one-hot ky then one-hot kx."""
    rows = torch.eye(h, dtype=like.dtype, device=like.device).repeat_interleave(w, dim=0)
    cols = torch.eye(w, dtype=like.dtype, device=like.device).repeat(h, 1)
    return torch.cat([rows, cols], dim=1)


class Attention(nn.Module):
    """Multi-head self-attention on a (B, H, W, C) token grid with decomposed relative position bias.

    The bias of query (qy, qx) towards key (ky, kx) is ``q . R_h[qy - ky] + q . R_w[qx - kx]``
    (Li et al., MViTv2), with the unscaled query. Two numerically equivalent kernels:

    - CUDA / MPS: :func:`torch.nn.functional.scaled_dot_product_attention` with the bias as an
      additive mask (fused kernels there).
    - CPU: explicit ``softmax(q k^T * scale + bias) v`` in blocks of query rows, measured faster
      than the CPU SDPA kernel (which has to read a materialised mask): small grids (windows) fold
      the bias into the ``q k^T`` product by appending the row/column bias terms to q and one-hot
      key coordinates to k; large grids (global blocks) add the two terms to each score block.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("relative position bias needs the token grid size (input_size)")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        n = h * w
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.contiguous().unbind(0)  # each (B, heads, N, head_dim)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        elif x.device.type == "cpu":
            out = self._attend_cpu(q, k, v, h, w)
        else:
            out = self._attend_sdpa(q, k, v, h, w)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))

    def _rel_pos_terms(self, q: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        """Row and column bias terms from unscaled queries q (B, heads, N, head_dim).

        Returns (B, heads, N, h) and (B, heads, N, w): the bias of each query towards key row ky
        and towards key column kx.
        """
        b, heads, n, c = q.shape
        rh = relative_positions(self.rel_pos_h, h, h).to(q.dtype)  # (h, h, c)
        rw = relative_positions(self.rel_pos_w, w, w).to(q.dtype)  # (w, w, c)
        grid_q = q.reshape(b * heads, h, w, c)
        bias_h = torch.einsum("bhwc,hkc->bhwk", grid_q, rh).reshape(b, heads, n, h)
        bias_w = torch.einsum("bhwc,wkc->bhwk", grid_q, rw).reshape(b, heads, n, w)
        return bias_h, bias_w

    def _attend_sdpa(self, q: Tensor, k: Tensor, v: Tensor, h: int, w: int) -> Tensor:
        """SDPA with the bias materialised as a (B, heads, N, N) additive mask."""
        b, heads, n, _ = q.shape
        bias_h, bias_w = self._rel_pos_terms(q, h, w)
        mask = torch.empty((b, heads, n, n), dtype=q.dtype, device=q.device)
        torch.add(
            bias_h.view(b, heads, n, h, 1), bias_w.view(b, heads, n, 1, w),
            out=mask.view(b, heads, n, h, w),
        )
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def _attend_cpu(self, q: Tensor, k: Tensor, v: Tensor, h: int, w: int) -> Tensor:
        """Blocked ``softmax(q k^T * scale + bias) v``; (B, heads, N, head_dim) in and out."""
        b, heads, n, c = q.shape
        bias_h, bias_w = self._rel_pos_terms(q, h, w)
        fold = h + w <= c  # small grid: fold the bias into the product
        if fold:
            q = torch.cat([q * self.scale, bias_h, bias_w], dim=-1)
            k = torch.cat([k, _one_hot_grid(h, w, k).expand(b, heads, n, h + w)], dim=-1)
        k_t = k.transpose(-1, -2)
        out = torch.empty((b, heads, n, c), dtype=q.dtype, device=q.device)
        budget = _SCORE_CHUNK_BYTES // q.element_size()
        if heads * n * n <= budget:  # whole images (e.g. windows) at a time
            step = max(1, budget // (heads * n * n))
            spans = [(slice(i, i + step), slice(None)) for i in range(0, b, step)]
            block = (min(step, b), heads, n, n)
        else:  # blocks of query rows of one image
            rows = max(1, budget // (heads * n))
            spans = [(slice(i, i + 1), slice(r, r + rows)) for i in range(b) for r in range(0, n, rows)]
            block = (1, heads, min(rows, n), n)
        # Without autograd, two score buffers are reused by every block (fresh multi-MB
        # temporaries would each cost page faults); with autograd, plain differentiable ops.
        grad = torch.is_grad_enabled()
        if not grad:
            scores_buf = torch.empty(block, dtype=q.dtype, device=q.device)
            probs_buf = torch.empty(block, dtype=q.dtype, device=q.device)
        for bs, rs in spans:
            qb = q[bs, :, rs] if fold else q[bs, :, rs] * self.scale
            if grad:
                scores = torch.matmul(qb, k_t[bs])
            else:
                shape = (qb.shape[0], heads, qb.shape[2], n)
                scores = scores_buf.view(-1)[: math.prod(shape)].view(shape)
                torch.matmul(qb, k_t[bs], out=scores)
            if not fold:
                grid = scores.view(*scores.shape[:3], h, w)
                grid.add_(bias_h[bs, :, rs, :, None]).add_(bias_w[bs, :, rs, None, :])
            if grad:
                probs = torch.softmax(scores, dim=-1)
            else:
                probs = probs_buf.view(-1)[: scores.numel()].view(scores.shape)
                torch.softmax(scores, dim=-1, out=probs)
            out[bs, :, rs] = torch.matmul(probs, v[bs])
        return out


def window_partition(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into (B * nWin, window, window, C), zero-padding H and W to a multiple of window."""
    b, h, w, c = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nWin, window, window, C) -> (B, H, W, C).

    The result is a view into a padded tensor when H or W was padded (not contiguous).
    """
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :]


class Block(nn.Module):
    """Transformer block: (windowed or global) attention then MLP, both pre-norm with residuals."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim=dim, num_heads=num_heads, input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if torch.is_autocast_enabled(x.device.type):
            # Cast once here, not after padding and partitioning (half the bytes to move).
            x = x.to(torch.get_autocast_dtype(x.device.type))
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, padded = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM's ViT image encoder: (B, 3, S, S) normalised pixels -> (B, out_chans, S/p, S/p) embedding.

    Parameters
    ----------
    img_size : int
        S, the square input side (1024 for the official models).
    patch_size : int
        p, the patch side; the embedding grid is S/p on each side.
    embed_dim, depth, num_heads : int
        Width, number of blocks and heads of the transformer.
    global_attn_indexes : tuple of int
        Blocks that attend globally; all others attend within ``window_size`` windows.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu":
            tune_allocator()  # see napari_sam._allocator: large temporaries without page faults
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2)).contiguous()
