"""Resumable training checkpoints under ``<out>/checkpoints/step-<N>/``.

A checkpoint holds everything the next step depends on: the trainable weights (``trainable.safetensors``), the
optimizer and scheduler states, each rank's random-number states (``rng-rank<r>.pt``: torch, CUDA, Python, NumPy)
and ``state.json`` (step, data position, the recipe, losses so far, elapsed training time, world size). The data
order is a function of the seed and the step, so the step is the data position.

Writing is atomic: the files go to a hidden staging folder that is renamed into place once complete, so a run
killed at any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mmeb_dllm.embed.distributed import RankGroup
from mmeb_dllm.errors import CheckpointError
from mmeb_dllm.finetune import distributed

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
WEIGHTS_FILE = "trainable.safetensors"
PREFIX = "step-"


def checkpoint_root(out: Path) -> Path:
    return out / CHECKPOINTS


def latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the highest step, or ``None``."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return None
    complete = [p for p in root.glob(f"{PREFIX}*") if (p / STATE_FILE).is_file()]
    return max(complete, key=lambda p: int(p.name.removeprefix(PREFIX)), default=None)


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out: Path,
    step: int,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
    ctx: RankGroup,
) -> Path:
    """Write the checkpoint after ``step`` optimizer steps (every rank calls this); keep only the newest."""
    root = checkpoint_root(out)
    final = root / f"{PREFIX}{step:08d}"
    staging = root / f".{final.name}.partial"
    if ctx.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    distributed.barrier()
    torch.save(capture_rng(), staging / f"rng-rank{ctx.rank}.pt")
    if ctx.is_main:
        save_file({name: t.detach().to("cpu").contiguous() for name, t in trainable.items()},
                  str(staging / WEIGHTS_FILE))
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    distributed.barrier()
    if ctx.is_main:
        (staging / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for older in root.glob(f"{PREFIX}*"):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
    distributed.barrier()
    return final


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); delete it to restart the run") from None


def load_checkpoint(
    path: Path,
    *,
    parameters: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ctx: RankGroup,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this rank's RNG from ``path``; return its ``state.json``."""
    state = read_state(path)
    if state.get("world_size", 1) != ctx.world_size:
        raise CheckpointError(
            f"checkpoint {path} was written by a run on {state.get('world_size')} process(es); resume it with the "
            f"same number (this run has {ctx.world_size}) or start in a new --out folder"
        )
    weights = load_file(str(path / WEIGHTS_FILE))
    if set(weights) != set(parameters):
        raise CheckpointError(
            f"checkpoint {path} holds other trainable tensors than this run builds "
            f"({sorted(set(weights) ^ set(parameters))[:4]}...); start in a new --out folder"
        )
    with torch.no_grad():
        for name, param in parameters.items():
            param.copy_(weights[name].to(param.device, param.dtype))
    device = next(iter(parameters.values())).device
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    restore_rng(torch.load(path / f"rng-rank{ctx.rank}.pt", weights_only=False))
    return state


def remove_checkpoints(out: Path) -> None:
    shutil.rmtree(checkpoint_root(out), ignore_errors=True)
