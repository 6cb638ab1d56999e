"""InfoNCE with in-batch negatives and optional hard negatives (VLM2Vec's contrastive loss).

Inputs:
    queries ``(N, D)``: query embeddings (normalised when the recipe normalises: the dot product is then cosine).
    positives ``(N, D)``: ``positives[i]`` is the target of ``queries[i]``.
    negatives ``(M, D)`` or ``None``: hard negatives of any rows of the batch, ``M >= 0``.
    temperature: softmax temperature ``τ > 0``.

Output: the scalar mean over queries of ``-log softmax(s_i)[i]``, where ``s_i = queries[i] @ [positives; negatives].T
/ τ``. Every positive of another row and every hard negative (whichever row brought it) is a negative of every
query: the candidates are shared by the whole (gathered) batch, so the loss does not depend on which rank or chunk
an embedding came from, only on the row order.

Relations: with no negatives and ``N = 1`` the loss is 0; it is invariant to permuting rows of queries and positives
together and to permuting negatives; a candidate identical to a row's positive counts as a negative (VLM2Vec does
not mask such duplicates).
"""

from __future__ import annotations

import torch
from torch.nn import functional


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    temperature: float,
) -> torch.Tensor:
    """Mean InfoNCE loss of ``queries`` against ``positives`` (row ``i`` ↔ row ``i``) plus shared ``negatives``."""
    if queries.shape != positives.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and positives {tuple(positives.shape)} must match")
    candidates = positives if negatives is None or negatives.shape[0] == 0 else torch.cat([positives, negatives])
    logits = queries @ candidates.T / temperature
    labels = torch.arange(queries.shape[0], device=queries.device)
    return functional.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels)
