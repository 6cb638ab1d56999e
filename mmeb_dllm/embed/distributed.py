"""Multi-process encoding under ``torchrun`` / ``accelerate launch``.

Every rank runs the same evaluation (same tasks, same data, same order), so every rank builds the same list of
items to encode. The embedder then lets each rank push only its share of the missing items through the network
and gathers the vectors back to every rank with ``torch.distributed``; each rank also writes its share into the
shared embedding cache. Every rank therefore holds every vector and scores the task (cheap), but only rank 0 writes
result files (:func:`results_written_by_rank_zero`, used by ``mmeb-dllm run``).

Launch::

    torchrun --nproc_per_node 4 -m mmeb_dllm run -m lavida-embed -t MMEB-mini --output-folder results
    accelerate launch --num_processes 4 -m mmeb_dllm run -m lavida-embed -t MMEB-mini --output-folder results

Rank, world size and local rank come from ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (both launchers set them).
CPU ranks talk over gloo, GPU ranks over NCCL, each GPU rank on ``cuda:<LOCAL_RANK>``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankGroup:
    """This process's place among the encoding processes (``world_size == 1``: a plain single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> RankGroup:
        """From ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (torchrun and accelerate set them); one process if unset."""
        world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world_size <= 1:
            return cls()
        rank = int(os.environ.get("RANK", "0") or 0)
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)) or rank)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- process group ------------------------------------------------------------------------------------------------

    def init(self, device: torch.device) -> None:
        """Join the process group (gloo on CPU, NCCL on CUDA) unless the launcher's code already did."""
        if not self.is_distributed:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            if dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
                raise RuntimeError(
                    f"torch.distributed is initialised as rank {dist.get_rank()}/{dist.get_world_size()} but the "
                    f"environment says rank {self.rank}/{self.world_size}"
                )
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)
        atexit.register(_destroy_process_group)
        logger.info("rank %d/%d joined the %s process group", self.rank, self.world_size, backend)

    def _collective_device(self) -> torch.device:
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    # --- collectives (every rank must call them with the same arguments' shapes) ---------------------------------

    def found_everywhere(self, found_here: np.ndarray) -> np.ndarray:
        """Element-wise AND over ranks of a boolean vector: an item counts as cached only if every rank read it, so
        all ranks agree on what to encode even while other ranks are filling the cache."""
        if not self.is_distributed or found_here.size == 0:
            return found_here
        import torch.distributed as dist

        flags = torch.as_tensor(found_here.astype(np.int32), device=self._collective_device())
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        return flags.cpu().numpy().astype(bool)

    def gather(self, local: np.ndarray, counts: list[int], dim: int) -> list[np.ndarray]:
        """All ranks' ``(counts[r], dim)`` float32 arrays, in rank order, on every rank (``local`` is this rank's)."""
        if not self.is_distributed:
            return [local]
        import torch.distributed as dist

        width = max(counts)
        device = self._collective_device()
        padded = torch.zeros((width, dim), dtype=torch.float32, device=device)
        if local.shape[0]:
            padded[: local.shape[0]] = torch.as_tensor(local, dtype=torch.float32, device=device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return [part[:count].cpu().numpy() for part, count in zip(parts, counts, strict=True)]

    def barrier(self) -> None:
        if self.is_distributed:
            import torch.distributed as dist

            dist.barrier()

    # --- work split ---------------------------------------------------------------------------------------------------

    def batch_count(self, items: int, batch_size: int) -> int:
        """How many batches ``items`` items make: ``ceil(items / batch_size)``, raised to a multiple of the world size
        (never above ``items``) so that no rank idles while another encodes."""
        batches = math.ceil(items / batch_size)
        if self.is_distributed:
            batches = min(items, math.ceil(batches / self.world_size) * self.world_size)
        return batches

    def assign(self, costs: list[int]) -> list[int]:
        """The rank that encodes each batch: batches in the given (longest-first) order each go to the rank with the
        least work so far (ties to the lower rank). Deterministic, so every rank computes the same split."""
        load = [0] * self.world_size
        owners = []
        for cost in costs:
            rank = min(range(self.world_size), key=lambda r: (load[r], r))
            load[rank] += cost
            owners.append(rank)
        return owners


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def current_group() -> RankGroup:
    return RankGroup.from_env()


def is_main_process() -> bool:
    """True outside a multi-process launch and on rank 0 inside one."""
    return current_group().is_main


def rank_device(device: str) -> str:
    """``cuda`` -> ``cuda:<LOCAL_RANK>`` inside a multi-process launch (one GPU per rank); anything else unchanged."""
    group = current_group()
    if group.is_distributed and device == "cuda":
        return f"cuda:{group.local_rank}"
    return device


@contextlib.contextmanager
def results_written_by_rank_zero() -> Iterator[None]:
    """Inside a multi-process launch, make mteb's CLI on ranks other than 0 read results but never write them.

    Ranks must see the same existing results (so they skip the same tasks and stay in step), hence a read-only
    result cache rather than a separate folder. Outside a launch, or on rank 0, nothing changes.
    """
    if is_main_process():
        yield
        return
    from mteb.cache import ResultCache
    from mteb.cli import build_cli

    class ReadOnlyResultCache(ResultCache):
        def save_to_cache(self, *args: object, **kwargs: object) -> None:
            return None

    original = build_cli.ResultCache
    build_cli.ResultCache = ReadOnlyResultCache  # type: ignore[misc]
    try:
        yield
    finally:
        build_cli.ResultCache = original  # type: ignore[misc]
