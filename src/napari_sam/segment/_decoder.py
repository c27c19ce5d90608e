"""Batched single-point decoding for segment everything, with the prompt-independent work shared.

In SAM's mask decoder the image side of the first two-way block does not depend on the prompt
until the image attends to the tokens: the image tokens (embedding + the "no mask" embedding),
their positional encoding, the keys and values the prompt tokens attend to, and the queries of the
image-to-token attention are the same for every point of the grid. :class:`PointDecoder`
computes them once per image and decodes a batch of points with the model's own layers for the
rest, so a batch of B points costs about (B - 1) fewer of those large projections.

The result equals ``model.decode`` up to float rounding; this is checked on each new image (a
small probe batch), and :class:`PointDecoder` falls back to ``model.decode`` if it does not hold
(e.g. a model whose decoder is built differently).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from napari_sam.model import Sam
from napari_sam.predictor import autocast_for

__all__ = ["PROBE_POINTS", "PointDecoder"]

PROBE_POINTS = 3  # points of the check against model.decode, once per image


def _heads(x: Tensor, n: int) -> Tensor:
    """(B, N, C) -> (B, n, N, C / n)."""
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """(B, n, N, d) -> (B, N, n * d)."""
    b, n, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, n * d)


class PointDecoder:
    """Decode single positive points on one image embedding, 3 masks each.

    Parameters
    ----------
    model : Sam
    features : (1, C, He, We) image embedding
    """

    def __init__(self, model: Sam, features: Tensor) -> None:
        self.model = model
        self.features = features
        self.fast = False
        try:
            with torch.inference_mode():
                self._prepare()
                self.fast = self._agrees()
        except (AttributeError, RuntimeError, TypeError, ValueError, IndexError):
            self.fast = False  # a decoder of another design: use model.decode

    def _prepare(self) -> None:
        pe = self.model.prompt_encoder
        dev = self.features.device
        probe = torch.zeros((1, 1, 2), device=dev), torch.ones((1, 1), dtype=torch.int64, device=dev)
        _, dense = pe(probe, None, None)  # the "no mask" embedding, (1, C, He, We)
        self._src = (self.features + dense[:1]).flatten(2).permute(0, 2, 1)  # (1, N, C)
        self._key_pe = pe.get_dense_pe().flatten(2).permute(0, 2, 1)  # (1, N, C)
        self._shape = self.features.shape[1:]
        layer = self.model.mask_decoder.transformer.layers[0]
        keys_pe = self._src + self._key_pe
        t2i = layer.cross_attn_token_to_image
        self._k0 = _heads(t2i.k_proj(keys_pe), t2i.num_heads)  # (1, h, N, d)
        self._v0 = _heads(t2i.v_proj(self._src), t2i.num_heads)
        i2t = layer.cross_attn_image_to_token
        self._q0 = _heads(i2t.q_proj(keys_pe), i2t.num_heads)

    def _agrees(self) -> bool:
        gen = torch.Generator().manual_seed(0)
        s = float(self.model.img_size)
        coords = (torch.rand((PROBE_POINTS, 1, 2), generator=gen) * s).to(self.features.device)
        labels = torch.ones((PROBE_POINTS, 1), dtype=torch.int64, device=self.features.device)
        fast_low, fast_iou = self._decode(coords, labels)
        low, iou = self.model.decode(self.features, points=(coords, labels), multimask_output=True)
        scale = 1.0 + float(low.abs().max())
        return bool((fast_low - low).abs().max() <= 1e-3 * scale and (fast_iou - iou).abs().max() <= 1e-3)

    def __call__(self, coords: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 1, 2) (x, y) model-frame points and (B, 1) labels -> low-res logits (B, 3, Hl, Wl)
        and predicted IoU (B, 3), float32, under the model's precision."""
        with torch.inference_mode(), autocast_for(self.model):
            if self.fast:
                low, iou = self._decode(coords, labels)
            else:
                low, iou = self.model.decode(self.features, points=(coords, labels), multimask_output=True)
        return low.float(), iou.float()

    def _decode(self, coords: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        model = self.model
        decoder = model.mask_decoder
        transformer = decoder.transformer
        sparse, _ = model.prompt_encoder((coords, labels), None, None)
        b = sparse.shape[0]
        output = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output.unsqueeze(0).expand(b, -1, -1), sparse.to(output.dtype)], dim=1)

        # first two-way block, its image side shared by all prompts
        layer = transformer.layers[0]
        queries = tokens
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(queries, queries, queries)
        else:
            q = queries + tokens
            queries = queries + layer.self_attn(q, q, queries)
        queries = layer.norm1(queries)
        t2i = layer.cross_attn_token_to_image
        q = _heads(t2i.q_proj(queries + tokens), t2i.num_heads)  # (B, h, T, d)
        h, t, d = q.shape[1:]
        flat = q.transpose(0, 1).reshape(1, h, b * t, d)  # every prompt's tokens against one image
        out = F.scaled_dot_product_attention(flat, self._k0.to(flat.dtype), self._v0.to(flat.dtype))
        out = out.reshape(h, b, t, d).transpose(0, 1)
        queries = layer.norm2(queries + t2i.out_proj(_merge(out)))
        queries = layer.norm3(queries + layer.mlp(queries))
        i2t = layer.cross_attn_image_to_token
        k = _heads(i2t.k_proj(queries + tokens), i2t.num_heads)
        v = _heads(i2t.v_proj(queries), i2t.num_heads)
        q0 = self._q0.to(k.dtype).expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(q0, k, v)
        keys = layer.norm4(self._src.to(out.dtype) + i2t.out_proj(_merge(out)))

        # the rest with the model's own modules
        key_pe = self._key_pe.to(keys.dtype)
        for layer in transformer.layers[1:]:
            queries, keys = layer(queries, keys, tokens, key_pe)
        q = queries + tokens
        final = transformer.final_attn_token_to_image(q, keys + key_pe, keys)
        queries = transformer.norm_final_attn(queries + final)
        c, he, we = self._shape
        upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(b, c, he, we))
        n = decoder.num_mask_tokens
        mlps = decoder.output_hypernetworks_mlps
        hyper = torch.stack([mlp(queries[:, 1 + i, :]) for i, mlp in enumerate(mlps)], dim=1)
        _, uc, uh, uw = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, uc, uh * uw)).reshape(b, n, uh, uw)
        iou = decoder.iou_prediction_head(queries[:, 0, :])
        return masks[:, 1:], iou[:, 1:]
