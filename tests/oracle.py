"""The official ``segment-anything`` package as a test-only oracle.

segment-anything imports torchvision at module import time, but only for PIL-based resizing
(``utils/transforms.py``) and NMS (``automatic_mask_generator.py``); its modeling code does not use
it. PyPI's torchvision does not work with the CPU torch on these machines, so this module installs a
small stand-in ``torchvision`` into ``sys.modules`` that provides exactly those functions (PIL
bilinear resize, as torchvision does for PIL input, and a plain greedy NMS) before importing the
reference. Nothing of it is used by napari_sam itself.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import torch


def _resize(img: Any, size: Any) -> Any:
    from PIL import Image

    h, w = size if isinstance(size, (tuple, list)) else (size, size)
    return img.resize((int(w), int(h)), Image.BILINEAR)


def _to_pil_image(array: Any) -> Any:
    from PIL import Image

    return Image.fromarray(np.asarray(array))


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = torch.argsort(scores, descending=True)
    keep: list[int] = []
    areas = _box_area(boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    for idx in order.tolist():
        if suppressed[idx]:
            continue
        keep.append(idx)
        x0 = torch.maximum(boxes[idx, 0], boxes[:, 0])
        y0 = torch.maximum(boxes[idx, 1], boxes[:, 1])
        x1 = torch.minimum(boxes[idx, 2], boxes[:, 2])
        y1 = torch.minimum(boxes[idx, 3], boxes[:, 3])
        inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
        iou = inter / (areas[idx] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


def _batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def install_torchvision_standin() -> None:
    """Put the stand-in ``torchvision`` into ``sys.modules`` unless a real one imports."""
    if "torchvision" in sys.modules:
        return
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = _resize  # type: ignore[attr-defined]
    functional.to_pil_image = _to_pil_image  # type: ignore[attr-defined]
    ops = types.ModuleType("torchvision.ops")
    boxes_mod = types.ModuleType("torchvision.ops.boxes")
    boxes_mod.batched_nms = _batched_nms  # type: ignore[attr-defined]
    boxes_mod.box_area = _box_area  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    root.ops = ops  # type: ignore[attr-defined]
    ops.boxes = boxes_mod  # type: ignore[attr-defined]
    for name, mod in {
        "torchvision": root,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
        "torchvision.ops": ops,
        "torchvision.ops.boxes": boxes_mod,
    }.items():
        sys.modules[name] = mod


def segment_anything() -> types.ModuleType:
    """Import and return the reference ``segment_anything`` package (with the stand-in)."""
    install_torchvision_standin()
    import segment_anything as sa

    return sa


def build_reference(arch: str, depth: int | None = None, checkpoint: str | None = None) -> torch.nn.Module:
    """Build an official SAM of ``arch`` ('vit_b' | 'vit_l' | 'vit_h'), optionally with fewer blocks.

    With ``depth`` the encoder keeps the official width, heads and window size but only ``depth``
    blocks, with global attention at the the last block of each half (see :func:`reduced_global_indexes`).
    """
    sa = segment_anything()
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    widths = {"vit_b": (768, 12, 12, [2, 5, 8, 11]), "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
              "vit_h": (1280, 32, 16, [7, 15, 23, 31])}
    if depth is None:
        builder = sa.sam_model_registry[arch]
        return builder(checkpoint=checkpoint).eval()
    emb, _, heads, _ = widths[arch]
    global_idx = reduced_global_indexes(depth)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=emb, img_size=1024, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads, patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=global_idx, window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def reduced_global_indexes(depth: int) -> list[int]:
    """Global-attention block indexes for a reduced ``depth``-block encoder: the last block of each
    half, so windowed and global blocks both occur from depth 3 on (official: last of each quarter)."""
    return sorted({max(0, depth // 2 - 1), depth - 1})


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter and buffer non-trivial random values (zero-initialised tables too)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.state_dict().items():
            if not p.is_floating_point() or name.endswith("positional_encoding_gaussian_matrix"):
                continue
            if name.endswith(("running_var",)):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else max(p.numel(), 1)
                p.copy_(torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)
