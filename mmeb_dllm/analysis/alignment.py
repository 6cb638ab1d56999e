"""Alignment metrics of matched query-target pairs (the seed paper's Fig. 4 in numbers).

Inputs are L2-normalised ``(N, D)`` query vectors ``q`` and target vectors ``t`` where row ``i`` of each is a
matched pair. Metrics:

- ``matched_cosine``: mean ``q_i . t_i``; ``mismatched_cosine``: mean ``q_i . t_j`` over ``i != j``; ``margin`` =
  matched - mismatched (how much closer a query is to its own target than to others).
- ``modality_gap``: distance between the query centroid and the target centroid.
- ``alignment`` (Wang & Isola 2020, alpha = 2): mean ``||q_i - t_i||^2`` (lower is better).
- ``uniformity_queries`` / ``uniformity_targets`` (t = 2): ``log mean_{i<j} exp(-2 ||x_i - x_j||^2)`` (lower = more
  uniform).
- ``recall_at_1_q2t`` / ``recall_at_1_t2q``: share of queries whose nearest target is their own, and vice versa.
"""

from __future__ import annotations

import numpy as np


def _uniformity(x: np.ndarray, t: float = 2.0) -> float:
    sq = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    upper = sq[np.triu_indices(len(x), k=1)]
    return float(np.log(np.mean(np.exp(-t * upper))))


def alignment_metrics(q: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """All metrics of the module docstring for matched rows of ``q`` and ``t`` (float64 internally)."""
    q = np.asarray(q, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if q.shape != t.shape or q.ndim != 2 or len(q) < 2:
        raise ValueError(f"need two (N, D) arrays with N >= 2 of equal shape, got {q.shape} and {t.shape}")
    sims = q @ t.T
    n = len(q)
    matched = float(np.mean(np.diag(sims)))
    mismatched = float((sims.sum() - np.trace(sims)) / (n * (n - 1)))
    return {
        "pairs": float(n),
        "matched_cosine": matched,
        "mismatched_cosine": mismatched,
        "margin": matched - mismatched,
        "modality_gap": float(np.linalg.norm(q.mean(0) - t.mean(0))),
        "alignment": float(np.mean(np.sum((q - t) ** 2, axis=1))),
        "uniformity_queries": _uniformity(q),
        "uniformity_targets": _uniformity(t),
        "recall_at_1_q2t": float(np.mean(np.argmax(sims, axis=1) == np.arange(n))),
        "recall_at_1_t2q": float(np.mean(np.argmax(sims, axis=0) == np.arange(n))),
    }
