"""Multi-process training helpers: process-group setup from ``torchrun`` / ``accelerate launch`` environment
variables, an all-gather that keeps gradients, and the gradient sum over ranks.

How the ranks cooperate: every rank embeds its slice of the global batch; :func:`gather_with_grad` puts the slices
of all ranks side by side in rank order (rank 0's rows first), so every rank computes the same loss over the whole
global batch. A rank's own slice keeps its autograd graph, the others are constants, so backward gives each rank
the gradient through its own rows; :func:`all_reduce_gradients` sums those into the full gradient. One process with
the same global batch (rows in the same order) therefore computes the same loss and the same gradient.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

from mmeb_dllm.embed.distributed import RankGroup


def setup(use_cuda: bool) -> RankGroup:
    """Join the process group when launched with ``WORLD_SIZE`` > 1 (nccl on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return RankGroup()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return RankGroup(rank=dist.get_rank(), world_size=dist.get_world_size(),
                     local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``(sum of rows over ranks, ...)``: every rank's rows in rank order; ranks may hold different row counts.

    This rank's rows are ``tensor`` itself (gradients flow into it); the other ranks' rows carry no gradient.
    Without a process group the input is returned unchanged.
    """
    if not _active():
        return tensor
    counts = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device))
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    if longest == 0:
        return tensor
    padded = tensor.detach().new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    slots = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(slots, padded.contiguous())
    parts = [slot[:size] for slot, size in zip(slots, sizes, strict=True)]
    parts[dist.get_rank()] = tensor
    return torch.cat(parts)


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Sum the ``.grad`` of ``parameters`` over ranks (one flat buffer; missing grads count as zero)."""
    if not _active():
        return
    params = list(parameters)
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    flat = torch.cat([param.grad.reshape(-1) for param in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for param in params:
        count = param.numel()
        param.grad.copy_(flat[offset : offset + count].view_as(param.grad))
        offset += count


def broadcast_parameters(parameters: Iterable[torch.nn.Parameter], src: int = 0) -> None:
    """Copy rank ``src``'s values of ``parameters`` to every rank (identical starting adapters)."""
    if not _active():
        return
    with torch.no_grad():
        for param in parameters:
            dist.broadcast(param.data, src=src)


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(value: object, src: int = 0) -> object:
    """Rank ``src``'s ``value`` on every rank."""
    if not _active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
