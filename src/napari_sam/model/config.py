"""Model configurations, the builder, and architecture inference from a state dict."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from napari_sam.model.image_encoder import ImageEncoderViT
from napari_sam.model.mask_decoder import MaskDecoder
from napari_sam.model.prompt_encoder import PromptEncoder
from napari_sam.model.sam import Sam
from napari_sam.model.transformer import TwoWayTransformer


class ArchitectureError(ValueError):
    """A state dict does not fit any SAM architecture we can build (or not the one asked for)."""


@dataclass(frozen=True)
class SamConfig:
    """Every size of a SAM model. The official models are entries of :data:`CONFIGS`.

    ``encoder`` is "vit" (ViT-B/L/H style, fields ``embed_dim`` .. ``window_size``) or
    "tiny_vit" (MobileSAM, fields ``tiny_*``).
    """

    encoder: str = "vit"
    img_size: int = 1024
    in_chans: int = 3
    # ViT encoder
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    # TinyViT encoder
    tiny_embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    tiny_depths: tuple[int, ...] = (2, 2, 6, 2)
    tiny_num_heads: tuple[int, ...] = (2, 4, 5, 10)
    tiny_window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    # prompt encoder and mask decoder
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3

    @property
    def embedding_grid(self) -> int:
        """He = We, the side of the image embedding grid (img_size / 16 for the official models)."""
        if self.encoder == "tiny_vit":
            return self.img_size // 16
        return self.img_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamConfig:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise ArchitectureError(f"unknown model config fields: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


CONFIGS: dict[str, SamConfig] = {
    "vit_b": SamConfig(),
    "vit_l": SamConfig(
        embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)
    ),
    "vit_h": SamConfig(
        embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
    ),
    "vit_t": SamConfig(encoder="tiny_vit"),
}


def build_sam(config: SamConfig) -> Sam:
    """Build an untrained :class:`Sam` with the sizes of ``config`` (weights random, eval mode)."""
    grid = config.embedding_grid
    encoder: nn.Module
    if config.encoder == "vit":
        encoder = ImageEncoderViT(
            img_size=config.img_size,
            patch_size=config.patch_size,
            in_chans=config.in_chans,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            window_size=config.window_size,
            global_attn_indexes=config.global_attn_indexes,
        )
    elif config.encoder == "tiny_vit":
        from napari_sam.model.tiny_vit import TinyViTEncoder

        encoder = TinyViTEncoder(
            img_size=config.img_size,
            in_chans=config.in_chans,
            embed_dims=config.tiny_embed_dims,
            depths=config.tiny_depths,
            num_heads=config.tiny_num_heads,
            window_sizes=config.tiny_window_sizes,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
        )
    else:
        raise ArchitectureError(f"unknown encoder {config.encoder!r}: use 'vit' or 'tiny_vit'")
    model = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                num_heads=config.decoder_heads,
                mlp_dim=config.decoder_mlp_dim,
            ),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
    )
    model.config = config  # type: ignore[assignment]
    return model.eval()


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _shape(state: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ArchitectureError(f"not a SAM state dict: key {key!r} is missing")
    return tuple(state[key].shape)


def infer_config(
    state: Mapping[str, Tensor], hints: Mapping[str, Any] | None = None
) -> SamConfig:
    """Infer the architecture of a SAM state dict (keys without wrapper prefixes) from tensor shapes.

    Sizes that shapes cannot tell (the decoder's and TinyViT's head counts) come from ``hints``
    (e.g. a config stored next to the weights) or default to the official values.

    Raises
    ------
    ArchitectureError
        If the keys or shapes do not describe a model :func:`build_sam` can make; the message names
        what is missing or differs.
    """
    values: dict[str, Any] = dict(hints or {})
    if "image_encoder.patch_embed.proj.weight" in state:
        emb, in_chans, patch, _ = _shape(state, "image_encoder.patch_embed.proj.weight")
        grid = _shape(state, "image_encoder.pos_embed")[1]
        depth = _count(state, "image_encoder.blocks.")
        if depth == 0:
            raise ArchitectureError("ViT image encoder without blocks")
        rel_lengths = [_shape(state, f"image_encoder.blocks.{i}.attn.rel_pos_h")[0] for i in range(depth)]
        head_dim = _shape(state, "image_encoder.blocks.0.attn.rel_pos_h")[1]
        global_idx = tuple(i for i, n in enumerate(rel_lengths) if n == 2 * grid - 1)
        windowed = [n for n in rel_lengths if n != 2 * grid - 1]
        window = (windowed[0] + 1) // 2 if windowed else 14
        hidden = _shape(state, "image_encoder.blocks.0.mlp.lin1.weight")[0]
        values.update(
            encoder="vit",
            img_size=grid * patch,
            in_chans=in_chans,
            patch_size=patch,
            embed_dim=emb,
            depth=depth,
            num_heads=emb // head_dim,
            mlp_ratio=hidden / emb,
            global_attn_indexes=global_idx,
            window_size=window,
        )
    elif any(k.startswith("image_encoder.layers.") for k in state):
        values.setdefault("encoder", "tiny_vit")
        values.setdefault("img_size", 1024)
    else:
        raise ArchitectureError(
            "not a SAM state dict: no 'image_encoder.patch_embed' (ViT) or 'image_encoder.layers' "
            "(TinyViT) keys"
        )
    prompt_dim = _shape(state, "prompt_encoder.no_mask_embed.weight")[1]
    values.update(
        prompt_embed_dim=prompt_dim,
        mask_in_chans=_shape(state, "prompt_encoder.mask_downscaling.3.weight")[0],
        decoder_depth=_count(state, "mask_decoder.transformer.layers."),
        decoder_mlp_dim=_shape(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        iou_head_hidden_dim=_shape(state, "mask_decoder.iou_prediction_head.layers.0.weight")[0],
        num_multimask_outputs=_shape(state, "mask_decoder.mask_tokens.weight")[0] - 1,
    )
    try:
        return SamConfig.from_dict(values)
    except TypeError as exc:
        raise ArchitectureError(f"inconsistent model config: {exc}") from exc


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], max_items: int = 5) -> None:
    """Raise :class:`ArchitectureError` listing missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched)):
        if items:
            more = f" (+{len(items) - max_items} more)" if len(items) > max_items else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:max_items])}{more}")
    if problems:
        raise ArchitectureError("state dict does not fit the model: " + "; ".join(problems))
