"""The auxiliary attention supervision used to train tiny-synth from scratch."""

from __future__ import annotations

import torch

from napari_sam.model import Sam
from napari_sam.training.attention_aux import AttentionProbe, prompt_token_weights


def test_prompt_token_weights_follow_the_prompt_encoder_token_order() -> None:
    labels = torch.tensor([[1, 0], [0, 1]])
    assert prompt_token_weights(labels, 2, has_box=False, batch=2).tolist() == [[1, 0, 0], [0, 1, 0]]
    assert prompt_token_weights(labels, 2, has_box=True, batch=2).tolist() == [[1, 0, 1, 1], [0, 1, 1, 1]]
    assert prompt_token_weights(None, 0, has_box=True, batch=1).tolist() == [[1, 1]]
    assert prompt_token_weights(None, 0, has_box=False, batch=3).shape == (3, 0)


def _decode_with_probe(model: Sam, point_xy: tuple[float, float]) -> tuple[AttentionProbe, torch.Tensor]:
    he = model.prompt_encoder.image_embedding_size[0]
    embedding = torch.randn(1, model.prompt_encoder.embed_dim, he, he)
    probe = AttentionProbe(model)
    points = (torch.tensor([[point_xy]]), torch.ones(1, 1, dtype=torch.long))
    model.decode(embedding, points=points, multimask_output=True)
    return probe, prompt_token_weights(points[1], 1, has_box=False, batch=1)


def test_probe_loss_trains_attention_towards_the_object(tiny_model: Sam) -> None:
    size = tiny_model.img_size
    target = torch.zeros(1, 1, size, size)
    target[..., : size // 4, : size // 4] = 1.0  # object in the top-left corner
    params = [p for b in tiny_model.mask_decoder.transformer.layers
              for p in b.cross_attn_image_to_token.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(30):
        probe, weights = _decode_with_probe(tiny_model, (size / 8, size / 8))
        with probe:
            loss = probe.loss(weights, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[0] > 0 and all(map(lambda x: x == x, losses))
    assert losses[-1] < 0.7 * losses[0]


def test_probe_without_positive_prompt_tokens_gives_zero(tiny_model: Sam) -> None:
    probe, weights = _decode_with_probe(tiny_model, (10.0, 10.0))
    with probe:
        loss = probe.loss(torch.zeros_like(weights), torch.ones(1, 1, 8, 8))
    assert float(loss) == 0.0
    assert probe.records == []
