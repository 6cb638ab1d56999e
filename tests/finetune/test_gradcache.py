"""GradCache equals one full-batch forward/backward: loss and LoRA gradients (fp32), with and without dropout.

Tolerance: 1e-5 on the loss, and on every gradient entry relative to the largest gradient entry of its tensor
when that exceeds 1 (float32 rounding grows with the value: entries reach ~5 here at temperature 0.05).
"""

from __future__ import annotations

import torch

from mmeb_dllm.finetune.gradcache import contrastive_step
from mmeb_dllm.finetune.losses import info_nce
from tests.finetune.conftest import lora_model, mixed_batch, tiny_config, trainable


def _loss(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return info_nce(q, p, n, temperature=0.05)


def _gap(want: torch.Tensor, got: torch.Tensor) -> float:
    return (want - got).abs().max().item() / max(1.0, want.abs().max().item())


def _grads(params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    out = {name: p.grad.detach().clone() for name, p in params.items()}
    for p in params.values():
        p.grad = None
    return out


def test_chunk_size_2_equals_the_full_batch():
    model = lora_model(tiny_config())
    params = trainable(model)
    batch = mixed_batch(6)
    assert len(batch.negatives) == 3 and all(item.image is not None for item in batch.queries)
    embed, dim = model.embedder.forward_items, model.embedder.embed_dim
    full = contrastive_step(embed, batch, _loss, chunk_size=0, embed_dim=dim)
    full_grads = _grads(params)
    chunked = contrastive_step(embed, batch, _loss, chunk_size=2, embed_dim=dim)
    chunked_grads = _grads(params)
    assert abs(full.item() - chunked.item()) <= 1e-5
    assert any(("lora_A" in n) and g.abs().max() > 1e-4 for n, g in full_grads.items())
    assert any(n.startswith("mm_projector") for n in full_grads)
    for name, grad in full_grads.items():
        assert _gap(grad, chunked_grads[name]) <= 1e-5, name


def test_dropout_masks_are_replayed_in_the_second_pass():
    """With LoRA dropout the reference embeds the same chunks in the same order from the same RNG state, with
    gradients; GradCache must draw each chunk's masks again in pass 2, or its gradients differ."""
    model = lora_model(tiny_config(lora_dropout=0.5))
    params = trainable(model)
    batch = mixed_batch(4)
    embed, dim = model.embedder.forward_items, model.embedder.embed_dim

    torch.manual_seed(7)
    reps = [torch.cat([embed(side[i : i + 2]) for i in range(0, len(side), 2)]) for side in batch.sides()]
    reference = _loss(*reps)
    reference.backward()
    want = _grads(params)

    torch.manual_seed(7)
    got_loss = contrastive_step(embed, batch, _loss, chunk_size=2, embed_dim=dim)
    got = _grads(params)
    assert abs(got_loss.item() - reference.item()) <= 1e-5
    for name, grad in want.items():
        assert _gap(grad, got[name]) <= 1e-5, name

    torch.manual_seed(8)  # other masks: other gradients, so the comparison above is not vacuous
    contrastive_step(embed, batch, _loss, chunk_size=2, embed_dim=dim)
    other = _grads(params)
    assert max((want[n] - other[n]).abs().max().item() for n in want) > 1e-4
