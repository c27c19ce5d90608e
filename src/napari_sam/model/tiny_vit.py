"""The TinyViT image encoder of MobileSAM (``vit_t``), with SAM's convolutional neck.

TinyViT (Wu et al., ECCV 2022) is a hierarchical vision transformer: a convolutional stem (stride 4),
one stage of inverted-residual (MBConv) blocks, then stages of windowed attention with a learned
relative-position bias table per head (as in LeViT), separated by convolutional patch-merging layers.
MobileSAM distils SAM's ViT-H encoder into TinyViT-5M and drops the last down-sampling, so the output
grid has stride 16 like SAM's ViT; a SAM-style neck maps it to ``out_chans`` channels.

Module and parameter names follow MobileSAM's ``mobile_sam.pt`` checkpoint, so its ``image_encoder.*``
entries load into :class:`TinyViTEncoder` with ``strict=True``. That includes the unused ImageNet
classification head (``norm_head``, ``head``) which the checkpoint carries. The index table of the
attention bias is a non-persistent buffer (not in the checkpoint); it is rebuilt from the window size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_sam.model.common import LayerNorm2d


class ConvBN(nn.Module):
    """A bias-free convolution followed by batch normalisation: (B, C_in, H, W) -> (B, C_out, H', W').

    Parameters
    ----------
    in_chans, out_chans : int
        Input and output channels.
    kernel_size, stride, groups : int
        As for :class:`torch.nn.Conv2d`; the padding is ``kernel_size // 2``.
    bn_weight_init : float
        Initial scale of the batch norm (0 makes a residual branch start as the identity).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        *,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.c(x))


class PatchEmbed(nn.Module):
    """Convolutional stem: two stride-2 3x3 conv+BN with GELU between, (B, C, H, W) -> (B, D, H/4, W/4)."""

    def __init__(self, *, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, kernel_size=3, stride=2),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, kernel_size=3, stride=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project), (B, C, H, W) -> same shape."""

    def __init__(self, *, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, kernel_size=3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(x + self.conv3(y))


class PatchMerging(nn.Module):
    """Change the width (and usually halve the grid) between stages: (B, C, H, W) -> (B, D, H/s, W/s).

    1x1 conv, GELU, 3x3 depthwise conv with stride ``stride``, GELU, 1x1 conv (all with batch norm).
    """

    def __init__(self, *, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, kernel_size=3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


def bias_index_table(window_size: int) -> Tensor:
    """Index of the learned bias for every (query, key) pair of positions in a square window.

    Positions are numbered row-major, p = row * window_size + col. The pair (p, q) uses the bias of the
    absolute offset (|row_p - row_q|, |col_p - col_q|), stored at ``drow * window_size + dcol`` (the
    order in which TinyViT first meets each offset, which the checkpoints' bias tables follow).

    Returns
    -------
    Tensor
        (N, N) int64 with N = window_size**2, values in [0, N).
    """
    rows = torch.arange(window_size).repeat_interleave(window_size)
    cols = torch.arange(window_size).repeat(window_size)
    d_row = (rows[:, None] - rows[None, :]).abs()
    d_col = (cols[:, None] - cols[None, :]).abs()
    return d_row * window_size + d_col


class Attention(nn.Module):
    """Multi-head self-attention inside windows, with a learned bias per head and relative offset.

    Input and output are (B', N, C) token sequences, B' = batch * windows, N = window_size**2.
    Layer norm is applied inside, to the raw tokens. The qkv projection is laid out per head as
    [q_h, k_h, v_h] (each ``C / num_heads`` wide), as in the checkpoints.
    """

    def __init__(self, *, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("attention_bias_idxs", bias_index_table(window_size), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)  # each (B', heads, N, hd)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # (heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """Pre-norm feed-forward block: LayerNorm, Linear, GELU, Linear on (..., C)."""

    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise conv, MLP (residual) on a (B, C, H, W) map.

    The map is zero-padded at the bottom and right to a multiple of ``window_size``; the padded tokens
    take part in attention as keys (as in TinyViT) and are cropped afterwards.
    """

    def __init__(
        self, *, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = Attention(dim=dim, num_heads=num_heads, window_size=window_size)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, kernel_size=local_conv_size, groups=dim)

    def _windowed_attention(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C), attention within each window."""
        batch, height, width, dim = x.shape
        ws = self.window_size
        pad_h, pad_w = (-height) % ws, (-width) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        n_h, n_w = (height + pad_h) // ws, (width + pad_w) // ws
        windows = x.view(batch, n_h, ws, n_w, ws, dim).transpose(2, 3).reshape(-1, ws * ws, dim)
        out = self.attn(windows)
        out = out.view(batch, n_h, n_w, ws, ws, dim).transpose(2, 3)
        out = out.reshape(batch, n_h * ws, n_w * ws, dim)
        return out[:, :height, :width]

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        tokens = tokens + self._windowed_attention(tokens)
        tokens = self.local_conv(tokens.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        tokens = tokens + self.mlp(tokens)
        return tokens.permute(0, 3, 1, 2).contiguous()


class Stage(nn.Module):
    """A sequence of blocks of one width, optionally followed by a :class:`PatchMerging`."""

    def __init__(self, blocks: list[nn.Module], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


def _check_config(
    embed_dims: Sequence[int],
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_sizes: Sequence[int],
) -> None:
    n = len(depths)
    if n < 2 or not len(embed_dims) == len(num_heads) == len(window_sizes) == n:
        raise ValueError(
            "embed_dims, depths, num_heads and window_sizes need one entry per stage and at least 2 "
            f"stages; got lengths {len(embed_dims)}, {n}, {len(num_heads)}, {len(window_sizes)}"
        )
    for i in range(1, n):
        if embed_dims[i] % num_heads[i] != 0:
            raise ValueError(
                f"stage {i}: embed_dims[{i}]={embed_dims[i]} is not divisible by "
                f"num_heads[{i}]={num_heads[i]}"
            )
        if window_sizes[i] < 1:
            raise ValueError(f"stage {i}: window_sizes[{i}] must be >= 1, got {window_sizes[i]}")


class TinyViTEncoder(nn.Module):
    """MobileSAM's image encoder: TinyViT followed by SAM's neck.

    The defaults are MobileSAM's ``vit_t`` (TinyViT-5M at 1024 x 1024). Stage 0 holds MBConv blocks,
    later stages attention blocks; a patch merging follows every stage but the last. All merges halve
    the grid except the last one, so the output stride is ``4 * 2 ** (len(depths) - 2)`` (16 for four
    stages, matching SAM).

    Parameters
    ----------
    img_size : int
        Side of the square input the model is meant for (SAM pads to it); must be a multiple of the
        output stride. Inputs of other sizes that are multiples of the stride also work.
    in_chans : int
        Input channels.
    embed_dims, depths, num_heads, window_sizes : sequence of int
        Per stage: width, number of blocks, attention heads and window side (the last two are unused
        for stage 0, which has no attention).
    mlp_ratio : float
        MLP hidden width relative to the stage width.
    mbconv_expand_ratio : float
        Hidden width of the MBConv blocks relative to the stage width.
    local_conv_size : int
        Kernel of the depthwise convolution between attention and MLP (odd).
    out_chans : int
        Channels of the output embedding.
    num_classes : int
        Width of the ImageNet classification head kept for checkpoint compatibility (unused in
        :meth:`forward`); 0 leaves the head out of the state dict.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        _check_config(embed_dims, depths, num_heads, window_sizes)
        n_stages = len(depths)
        self.stride = 4 * 2 ** (n_stages - 2)
        if img_size <= 0 or img_size % self.stride != 0:
            raise ValueError(f"img_size must be a positive multiple of {self.stride}, got {img_size}")
        if local_conv_size < 1 or local_conv_size % 2 == 0:
            raise ValueError(f"local_conv_size must be odd and positive, got {local_conv_size}")
        self.img_size = img_size
        self.in_chans = in_chans

        self.patch_embed = PatchEmbed(in_chans=in_chans, embed_dim=embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(n_stages):
            dim = embed_dims[i]
            blocks: list[nn.Module]
            if i == 0:
                blocks = [MBConv(dim=dim, expand_ratio=mbconv_expand_ratio) for _ in range(depths[i])]
            else:
                blocks = [
                    TinyViTBlock(
                        dim=dim,
                        num_heads=num_heads[i],
                        window_size=window_sizes[i],
                        mlp_ratio=mlp_ratio,
                        local_conv_size=local_conv_size,
                    )
                    for _ in range(depths[i])
                ]
            downsample = None
            if i < n_stages - 1:
                stride = 1 if i == n_stages - 2 else 2
                downsample = PatchMerging(dim=dim, out_dim=embed_dims[i + 1], stride=stride)
            self.layers.append(Stage(blocks, downsample))

        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_linear)

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch of normalised images.

        Parameters
        ----------
        x : Tensor
            (B, in_chans, H, W), SAM-normalised pixels; H and W multiples of ``self.stride``
            (normally both ``img_size``).

        Returns
        -------
        Tensor
            (B, out_chans, H / stride, W / stride) image embedding.
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected a (B, {self.in_chans}, H, W) tensor, got shape {tuple(x.shape)}"
            )
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ValueError(
                f"image height and width must be multiples of {self.stride}, got {tuple(x.shape[2:])}"
            )
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


def _init_linear(module: nn.Module) -> None:
    """Truncated-normal weights (std 0.02) and zero bias for linear layers, as TinyViT initialises."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
