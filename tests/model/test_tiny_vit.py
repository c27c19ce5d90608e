"""Tests for the TinyViT (MobileSAM ``vit_t``) image encoder.

No MobileSAM reference package is installable here (``mobile-sam`` / ``mobile_sam`` are not on PyPI), so
checkpoint compatibility is checked against the published architecture: the module layout and parameter
names of MobileSAM's ``mobile_sam/modeling/tiny_vit_sam.py`` with ``build_sam_vit_t``'s configuration,
whose ``image_encoder.*`` entries of ``mobile_sam.pt`` that code loads with ``strict=True``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from napari_sam.model.tiny_vit import Attention, TinyViTEncoder, bias_index_table

SMALL = dict(img_size=256, embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4))


@pytest.fixture(scope="module")
def vit_t() -> TinyViTEncoder:
    torch.manual_seed(0)
    return TinyViTEncoder().eval()


def small_encoder(**overrides: object) -> TinyViTEncoder:
    torch.manual_seed(0)
    return TinyViTEncoder(**{**SMALL, "out_chans": 32, **overrides}).eval()  # type: ignore[arg-type]


# --- checkpoint layout of the full vit_t encoder --------------------------------------------------

# (key, shape) pairs as laid out by MobileSAM's TinyViT-5M for SAM (embed_dims 64/128/160/320,
# depths 2/2/6/2, heads 2/4/5/10, windows 7/7/14/7).
EXPECTED_SHAPES = {
    "patch_embed.seq.0.c.weight": (32, 3, 3, 3),
    "patch_embed.seq.0.bn.running_var": (32,),
    "patch_embed.seq.2.c.weight": (64, 32, 3, 3),
    "layers.0.blocks.0.conv1.c.weight": (256, 64, 1, 1),
    "layers.0.blocks.0.conv2.c.weight": (256, 1, 3, 3),
    "layers.0.blocks.1.conv3.c.weight": (64, 256, 1, 1),
    "layers.0.blocks.1.conv3.bn.num_batches_tracked": (),
    "layers.0.downsample.conv1.c.weight": (128, 64, 1, 1),
    "layers.0.downsample.conv2.c.weight": (128, 1, 3, 3),
    "layers.0.downsample.conv3.bn.running_mean": (128,),
    "layers.1.blocks.0.attn.attention_biases": (4, 49),
    "layers.1.blocks.0.attn.norm.weight": (128,),
    "layers.1.blocks.0.attn.qkv.weight": (384, 128),
    "layers.1.blocks.0.attn.proj.weight": (128, 128),
    "layers.1.blocks.1.mlp.norm.bias": (128,),
    "layers.1.blocks.1.mlp.fc1.weight": (512, 128),
    "layers.1.blocks.1.mlp.fc2.weight": (128, 512),
    "layers.1.blocks.1.local_conv.c.weight": (128, 1, 3, 3),
    "layers.1.downsample.conv1.c.weight": (160, 128, 1, 1),
    "layers.2.blocks.0.attn.attention_biases": (5, 196),
    "layers.2.blocks.5.attn.qkv.weight": (480, 160),
    "layers.2.blocks.5.local_conv.bn.running_var": (160,),
    "layers.2.downsample.conv2.c.weight": (320, 1, 3, 3),
    "layers.2.downsample.conv3.c.weight": (320, 320, 1, 1),
    "layers.3.blocks.0.attn.attention_biases": (10, 49),
    "layers.3.blocks.1.mlp.fc1.weight": (1280, 320),
    "norm_head.weight": (320,),
    "head.weight": (1000, 320),
    "head.bias": (1000,),
    "neck.0.weight": (256, 320, 1, 1),
    "neck.1.weight": (256,),
    "neck.1.bias": (256,),
    "neck.2.weight": (256, 256, 3, 3),
    "neck.3.weight": (256,),
    "neck.3.bias": (256,),
}


def test_vit_t_state_dict_has_mobile_sam_keys_and_shapes(vit_t: TinyViTEncoder) -> None:
    state = vit_t.state_dict()
    for key, shape in EXPECTED_SHAPES.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    # 12 (stem) + 54 (stage 0) + 56 (stage 1) + 132 (stage 2) + 38 (stage 3) + 4 (head) + 6 (neck)
    assert len(state) == 302
    # the bias index tables are rebuilt, not stored (a non-persistent buffer in MobileSAM too)
    assert not any("attention_bias_idxs" in key for key in state)
    # every conv+BN carries its running statistics
    n_bn = sum(key.endswith(".bn.weight") for key in state)
    assert n_bn == 27  # stem 2, stage 0: 2*3 + 3, stage 1: 2 + 3, stage 2: 6 + 3, stage 3: 2
    assert sum(key.endswith(".bn.num_batches_tracked") for key in state) == n_bn
    assert sum(key.endswith(".bn.running_mean") for key in state) == n_bn


def test_vit_t_parameter_count(vit_t: TinyViTEncoder) -> None:
    total = sum(p.numel() for p in vit_t.parameters())
    head = sum(p.numel() for name, p in vit_t.named_parameters() if name.startswith(("head.", "norm_head.")))
    neck = sum(p.numel() for name, p in vit_t.named_parameters() if name.startswith("neck."))
    assert total == 6_065_532
    assert head == 321_640  # ImageNet head kept only for checkpoint compatibility
    assert neck == 672_768
    # MobileSAM reports a "5M" TinyViT encoder (9.66M whole model - 3.876M decoder ~ 5.78M)
    assert 5.0e6 < total - head < 5.8e6


def test_vit_t_embeds_a_1024_image_to_a_64x64_grid(vit_t: TinyViTEncoder) -> None:
    with torch.no_grad():
        out = vit_t(torch.randn(1, 3, 1024, 1024))
    assert out.shape == (1, 256, 64, 64)
    assert torch.isfinite(out).all()
    # the neck ends with a channel LayerNorm (weight 1, bias 0 at init): zero mean, unit variance
    assert out.mean(1).abs().max() < 1e-4
    assert torch.allclose(out.var(1, unbiased=False), torch.ones(1, 64, 64), atol=1e-3)


def test_checkpoint_with_image_encoder_prefix_loads_strictly() -> None:
    source = small_encoder()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, buf in source.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buf.normal_()
    checkpoint = {f"image_encoder.{k}": v for k, v in source.state_dict().items()}

    holder = nn.Module()
    holder.image_encoder = small_encoder()
    holder.load_state_dict(checkpoint, strict=True)
    holder.eval()

    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(holder.image_encoder(x), source(x))
    # a key the architecture does not have is refused
    with pytest.raises(RuntimeError, match="Unexpected key"):
        extra = {"image_encoder.layers.1.blocks.0.attn.attention_bias_idxs": torch.zeros(1)}
        holder.load_state_dict({**checkpoint, **extra})


# --- attention details that decide whether official weights mean the same thing ---------------------


def first_seen_offset_table(window: int) -> tuple[torch.Tensor, int]:
    """TinyViT's numbering: each |offset| gets the next index when first met scanning (query, key) pairs."""
    points = list(itertools.product(range(window), range(window)))
    seen: dict[tuple[int, int], int] = {}
    table = []
    for (r1, c1), (r2, c2) in itertools.product(points, points):
        table.append(seen.setdefault((abs(r1 - r2), abs(c1 - c2)), len(seen)))
    return torch.tensor(table).view(len(points), len(points)), len(seen)


@pytest.mark.parametrize("window", [1, 2, 7, 14])
def test_bias_table_indexes_offsets_in_first_seen_order(window: int) -> None:
    expected, n_offsets = first_seen_offset_table(window)
    assert torch.equal(bias_index_table(window), expected)
    assert n_offsets == window * window  # so attention_biases has window**2 columns


def test_attention_matches_per_head_reference() -> None:
    torch.manual_seed(1)
    dim, heads, window = 12, 3, 3
    attn = Attention(dim=dim, num_heads=heads, window_size=window)
    with torch.no_grad():
        attn.attention_biases.normal_()
        attn.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, window * window, dim)

    # reference: qkv output channels grouped per head as [q_h | k_h | v_h]
    hd = dim // heads
    y = attn.norm(x)
    qkv = y @ attn.qkv.weight.T + attn.qkv.bias
    offsets, _ = first_seen_offset_table(window)
    outs = []
    for h in range(heads):
        base = 3 * hd * h
        q, k, v = (qkv[..., base + i * hd : base + (i + 1) * hd] for i in range(3))
        logits = q @ k.transpose(-1, -2) / math.sqrt(hd) + attn.attention_biases[h][offsets]
        outs.append(logits.softmax(-1) @ v)
    expected = torch.cat(outs, dim=-1) @ attn.proj.weight.T + attn.proj.bias

    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_attention_stays_inside_windows() -> None:
    encoder = small_encoder()
    block = encoder.layers[1].blocks[0]  # window 7 on a 32x32 map (padded to 35x35)
    x = torch.randn(1, 32, 32, 32)
    changed = x.clone()
    changed[0, 0, 0, 0] += 5.0  # one channel of a token in the top-left window
    with torch.no_grad():
        diff = (block._windowed_attention(changed) - block._windowed_attention(x)).abs().amax(-1)[0]
    assert diff[:7, :7].min() > 0  # every token of that window sees it
    assert diff[7:, :].max() == 0
    assert diff[:, 7:].max() == 0


# --- small configurations and user errors ---------------------------------------------------------


def test_small_config_output_shape_and_batch_independence() -> None:
    encoder = small_encoder()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        both = encoder(x)
        first = encoder(x[:1])
    assert both.shape == (2, 32, 16, 16)
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-4)


def test_non_square_input_of_stride_multiples_is_accepted() -> None:
    with torch.no_grad():
        out = small_encoder()(torch.randn(1, 3, 160, 96))
    assert out.shape == (1, 32, 10, 6)


def test_stage_count_sets_output_stride() -> None:
    encoder = small_encoder(
        img_size=64, embed_dims=(16, 32, 48), depths=(1, 1, 1), num_heads=(1, 2, 3), window_sizes=(7, 7, 7)
    )
    assert encoder.stride == 8
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 64, 64)).shape == (1, 32, 8, 8)


def test_head_can_be_left_out() -> None:
    keys = small_encoder(num_classes=0).state_dict().keys()
    assert not any(k.startswith("head.") for k in keys)
    assert "norm_head.weight" in keys


def test_bf16_autocast_is_close_to_fp32() -> None:
    encoder = small_encoder()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        ref = encoder(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = encoder(x)
    cos = nn.functional.cosine_similarity(low.float().flatten(), ref.flatten(), dim=0)
    assert cos > 0.99


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(img_size=250), "multiple of 16"),
        (dict(num_heads=(1, 3, 3, 4)), "divisible"),
        (dict(depths=(1, 1, 2)), "one entry per stage"),
        (dict(local_conv_size=4), "odd"),
    ],
)
def test_invalid_config_is_a_value_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_encoder(**overrides)


@pytest.mark.parametrize("shape", [(3, 256, 256), (1, 1, 256, 256), (1, 3, 250, 256)])
def test_bad_input_shape_is_a_value_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected|multiples"):
        small_encoder()(torch.randn(*shape))
