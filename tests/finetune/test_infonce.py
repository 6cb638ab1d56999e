"""InfoNCE against an independent float64 computation, and its documented relations."""

from __future__ import annotations

import math

import numpy as np
import torch

from mmeb_dllm.finetune.losses import info_nce


def _reference(q: np.ndarray, p: np.ndarray, n: np.ndarray | None, tau: float) -> float:
    """Row by row: -log(exp(q_i·p_i/τ) / Σ_c exp(q_i·c/τ)) over every positive and negative, float64."""
    candidates = p if n is None else np.concatenate([p, n])
    total = 0.0
    for i in range(len(q)):
        scores = [float(q[i] @ c) / tau for c in candidates]
        top = max(scores)
        total += -(scores[i] - top - math.log(sum(math.exp(s - top) for s in scores)))
    return total / len(q)


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1)


def test_equals_independent_computation_with_and_without_hard_negatives():
    q, p, n = _unit(6, 8, 0), _unit(6, 8, 1), _unit(3, 8, 2)
    for negatives in (None, n):
        got = info_nce(q, p, negatives, temperature=0.05).item()
        want = _reference(q.numpy(), p.numpy(), None if negatives is None else negatives.numpy(), 0.05)
        assert abs(got - want) < 1e-9


def test_relations_single_pair_row_permutation_and_negative_order():
    q, p, n = _unit(5, 8, 3), _unit(5, 8, 4), _unit(4, 8, 5)
    assert info_nce(q[:1], p[:1], None, temperature=0.02).item() == 0.0
    perm = torch.tensor([3, 0, 4, 1, 2])
    base = info_nce(q, p, n, temperature=0.1)
    assert torch.allclose(info_nce(q[perm], p[perm], n, temperature=0.1), base)
    assert torch.allclose(info_nce(q, p, n.flip(0), temperature=0.1), base)
    assert torch.equal(info_nce(q, p, n[:0], temperature=0.1), info_nce(q, p, None, temperature=0.1))


def test_hard_negative_close_to_the_query_raises_the_loss():
    q, p = _unit(4, 8, 6), _unit(4, 8, 7)
    far = -q[:1]
    near = torch.nn.functional.normalize(q[:1] + 0.01, dim=-1)
    assert info_nce(q, p, near, temperature=0.05) > info_nce(q, p, far, temperature=0.05)
