"""GradCache: a contrastive step whose batch size does not depend on memory (Gao et al., 2021, chunked two-pass).

Pass 1 embeds every chunk of ``chunk_size`` items without a graph. The loss is computed on all embeddings at once
(gathered over ranks), and backward stops at the embeddings: their gradients are cached. Pass 2 embeds each chunk
again with a graph and backpropagates the cached gradient of its rows, so parameter gradients accumulate chunk by
chunk. The random-number state before each chunk of pass 1 is replayed in pass 2, so dropout masks match and the
result equals one forward/backward over the whole batch (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mmeb_dllm.finetune.distributed import gather_with_grad

if TYPE_CHECKING:
    from mmeb_dllm.embed.embedder import Item

EmbedFn = Callable[[Sequence["Item"]], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
GatherFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ContrastiveBatch:
    """This rank's part of a global batch: queries, their positives (same order) and all hard negatives."""

    queries: list[Item]
    positives: list[Item]
    negatives: list[Item]

    def sides(self) -> list[list[Item]]:
        return [self.queries, self.positives, self.negatives]


def contrastive_step(
    embed: EmbedFn,
    batch: ContrastiveBatch,
    loss_fn: LossFn,
    *,
    chunk_size: int,
    embed_dim: int,
    gather: GatherFn = gather_with_grad,
) -> torch.Tensor:
    """Forward and backward of one batch; parameter gradients accumulate in ``.grad``. Returns the detached loss.

    ``embed`` maps items to ``(n, embed_dim)`` vectors; ``loss_fn(queries, positives, negatives)`` gets the gathered
    embeddings of all ranks. ``chunk_size`` 0 (or one at least as large as every side) runs a single pass.
    """
    sides = batch.sides()
    if not batch.queries:
        raise ValueError("a contrastive batch needs at least one query")
    if chunk_size <= 0 or all(len(side) <= chunk_size for side in sides):
        reps: list[torch.Tensor] = []
        for side in sides:
            reps.append(embed(side) if side else _empty(embed_dim, reps[0]))
        loss = loss_fn(*[gather(rep) for rep in reps])
        loss.backward()
        return loss.detach()

    states: list[list[Any]] = []
    cached: list[torch.Tensor] = []
    with torch.no_grad():
        for side in sides:
            side_states, parts = [], []
            for chunk in _chunks(side, chunk_size):
                side_states.append(_rng_state())
                parts.append(embed(chunk))
            states.append(side_states)
            cached.append(torch.cat(parts) if parts else _empty(embed_dim, cached[0]))
    leaves = [rep.detach().requires_grad_(True) for rep in cached]
    loss = loss_fn(*[gather(leaf) for leaf in leaves])
    loss.backward()
    for side, side_states, leaf in zip(sides, states, leaves, strict=True):
        if leaf.grad is None:
            continue
        start = 0
        for chunk, state in zip(_chunks(side, chunk_size), side_states, strict=True):
            with _replayed_rng(state):
                rep = embed(chunk)
            rep.backward(leaf.grad[start : start + len(chunk)].to(rep.dtype))
            start += len(chunk)
    return loss.detach()


def _empty(embed_dim: int, like: torch.Tensor) -> torch.Tensor:
    """No rows, on the device and in the dtype of the queries' embeddings (so gathers over ranks line up)."""
    return like.new_zeros((0, embed_dim))


def _chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rng_state() -> list[Any]:
    state: list[Any] = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.append(torch.cuda.get_rng_state_all())
    return state


@contextmanager
def _replayed_rng(state: list[Any]) -> Iterator[None]:
    """Run the block from ``state``, then continue from the state the block interrupted."""
    current = _rng_state()
    _set_rng_state(state)
    try:
        yield
    finally:
        _set_rng_state(current)


def _set_rng_state(state: list[Any]) -> None:
    torch.set_rng_state(state[0])
    if len(state) > 1:
        torch.cuda.set_rng_state_all(state[1])
