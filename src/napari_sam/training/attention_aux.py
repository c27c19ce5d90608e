"""Auxiliary attention supervision, for training a SAM decoder from scratch.

SAM's decoder finds the prompted object only through the positional encodings in its
attention logits; a randomly initialised decoder takes thousands of steps (millions of masks,
in SAM's own training) before its image-to-token attention starts to prefer the prompt tokens
at the prompted object. On a CPU budget that never happens. This optional loss supervises that
attention directly: in each two-way block, the attention that image location *l* pays to the
prompt tokens (positive points and box corners) should be high where *l* lies on the object
and low elsewhere. It changes nothing in the model; it only adds a training signal
(``TrainConfig.attention_weight``; 0 = off, as in SAM's recipe).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from napari_sam.model import Sam

__all__ = ["AttentionProbe", "prompt_token_weights"]


def prompt_token_weights(labels: Tensor | None, n_points: int, has_box: bool, batch: int) -> Tensor:
    """(B, N_sparse) 1 for positive points and box corners, 0 for negative / padding points.

    The token order is the prompt encoder's: points (plus one padding point when there is no
    box), then the two box corners.
    """
    parts = []
    if labels is not None and n_points:
        parts.append((labels == 1).float())
        if not has_box:
            parts.append(labels.new_zeros((batch, 1), dtype=torch.float32))
    if has_box:
        parts.append(torch.ones((batch, 2), device=labels.device if labels is not None else None))
    if not parts:
        return torch.zeros((batch, 0))
    return torch.cat([p.to(parts[0].device) for p in parts], dim=1)


class AttentionProbe:
    """Records the inputs of every block's image-to-token attention during a decode, then
    computes the supervision loss from them. Use as a context manager."""

    def __init__(self, model: Sam) -> None:
        self.records: list[tuple[Any, Tensor, Tensor]] = []
        self._handles = [
            block.cross_attn_image_to_token.register_forward_hook(self._hook)
            for block in model.mask_decoder.transformer.layers
        ]

    def _hook(self, module: Any, args: tuple[Tensor, ...], output: Tensor) -> None:
        self.records.append((module, args[0], args[1]))

    def __enter__(self) -> AttentionProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()

    def loss(self, token_weights: Tensor, target: Tensor) -> Tensor:
        """Balanced BCE between the attention paid to the prompt tokens and the object.

        Parameters
        ----------
        token_weights : (B, N_sparse) from :func:`prompt_token_weights`
        target : (B, 1, H, W) object masks in [0, 1] (any resolution; area-resampled to the
            embedding grid)

        Returns
        -------
        scalar tensor (0 when nothing was recorded or no prompt token is positive); the
        records are cleared.
        """
        records, self.records = self.records, []
        if not records or token_weights.numel() == 0 or not bool(token_weights.any()):
            return target.new_zeros(())
        total = target.new_zeros(())
        for module, image_in, token_in in records:
            q = module._heads(module.q_proj(image_in.float()))
            k = module._heads(module.k_proj(token_in.float()))
            attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
            n_sparse = token_weights.shape[1]
            on_prompt = (attn[..., -n_sparse:] * token_weights[:, None, None, :]).sum(-1).mean(1)
            grid = int(round(math.sqrt(on_prompt.shape[1])))
            w = F.adaptive_avg_pool2d(target.float(), grid).flatten(1)
            p = on_prompt.clamp(1e-6, 1 - 1e-6)
            pos = -(w * p.log()).sum(1) / w.sum(1).clamp(min=1e-6)
            neg = -((1 - w) * (1 - p).log()).sum(1) / (1 - w).sum(1).clamp(min=1e-6)
            total = total + (pos + neg).mean()
        return total / len(records)
