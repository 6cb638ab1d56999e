"""The contrastive LoRA training loop: data → shared embedder → GradCache InfoNCE step → AdamW; checkpoints; card.

One step: the global batch of the step (a pure function of seed and step) is split over ranks; queries,
positives and hard negatives are embedded by the one shared :class:`~mmeb_dllm.embed.embedder.Embedder` (so the
trained adapter sees exactly the prompts, pooling and normalisation evaluation uses); the InfoNCE loss over the
gathered batch is backpropagated chunk by chunk (:mod:`~mmeb_dllm.finetune.gradcache`); gradients are summed over
ranks, clipped, and AdamW steps with a warm-up schedule. The language model (and whatever ``lora_targets`` names)
gets peft LoRA layers; the vision tower stays frozen unless named.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import ConfigError, MmebDllmError
from mmeb_dllm.finetune import checkpoint as ckpt
from mmeb_dllm.finetune import distributed
from mmeb_dllm.finetune.card import CARD_FILE, CARD_FORMAT, EMBEDDING_FIELDS, software_versions, write_card
from mmeb_dllm.finetune.config import REGEX_PREFIX, FinetuneConfig, parse_list, recipe_differences
from mmeb_dllm.finetune.data import TrainData, load_train_data
from mmeb_dllm.finetune.gradcache import ContrastiveBatch, contrastive_step
from mmeb_dllm.finetune.losses.infonce import info_nce
from mmeb_dllm.finetune.vision_cache import install_vision_cache, remove_vision_cache

logger = logging.getLogger(__name__)

PART_PREFIXES = {"language_model": "language_model.", "projector": "mm_projector.", "vision_tower": "vision_tower."}


class NonFiniteLossError(MmebDllmError, FloatingPointError):
    """The loss became NaN or infinite; training stopped before the optimizer applied it."""


@dataclass
class StepInfo:
    """What :func:`train` reports to its ``on_step`` callback after each optimizer step (1-based ``step``)."""

    step: int
    loss: float
    lr: float
    samples_per_s: float


@dataclass
class TrainResult:
    """``finished`` is False when the run stopped early (``stop_after_steps``); the adapter is then not written."""

    out: Path
    finished: bool
    steps_done: int
    losses: list[float] = field(default_factory=list)
    card: dict[str, Any] | None = None


# --- LoRA ---------------------------------------------------------------------------------------------------------


def lora_target_modules(backbone: nn.Module, targets: str) -> list[str]:
    """Full names of the ``nn.Linear`` modules that get LoRA, for ``--lora-targets`` (see FinetuneConfig)."""
    linear = [name for name, module in backbone.named_modules() if isinstance(module, nn.Linear)]
    chosen: dict[str, None] = {}
    for target in parse_list(targets):
        if target.startswith(REGEX_PREFIX):
            pattern = re.compile(target.removeprefix(REGEX_PREFIX))
            matches = [name for name in linear if pattern.fullmatch(name)]
        else:
            prefix = PART_PREFIXES[target]
            matches = [name for name in linear if name.startswith(prefix)]
        if not matches:
            raise ConfigError(
                f"--lora-targets entry {target!r} matches no linear layer of {type(backbone).__name__}; "
                f"linear layers look like {linear[:3]}"
            )
        chosen.update(dict.fromkeys(matches))
    return list(chosen)


def add_lora(backbone: nn.Module, config: FinetuneConfig, base_name: str) -> tuple[nn.Module, list[str]]:
    """Freeze ``backbone``, inject peft LoRA layers in place; return the peft wrapper and the target names."""
    from peft import LoraConfig, get_peft_model

    backbone.requires_grad_(False)
    backbone.name_or_path = base_name  # peft records it as adapter_config.json's base_model_name_or_path
    targets = lora_target_modules(backbone, config.lora_targets)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        use_dora=config.dora,
        target_modules=targets,
        bias="none",
    )
    return get_peft_model(backbone, lora), targets


def _enable_gradient_checkpointing(backbone: nn.Module) -> None:
    enabled = 0
    for module in backbone.language_model.modules():
        if hasattr(module, "gradient_checkpointing_enable") and getattr(module, "supports_gradient_checkpointing", 0):
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            enabled += 1
    if not enabled:
        raise ConfigError(f"--gradient-checkpointing: {type(backbone).__name__}'s language model does not support it")


# --- schedule -----------------------------------------------------------------------------------------------------


def lr_factor(config: FinetuneConfig, step: int) -> float:
    """Multiplier of the peak learning rate at 0-based ``step``: linear warm-up from 0, then the schedule."""
    if step < config.warmup_steps:
        return step / max(1, config.warmup_steps)
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.lr_schedule == "linear":
        return max(0.0, 1.0 - progress)
    if config.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


@dataclass
class PreparedModel:
    """The base model with LoRA layers, the shared embedder around it, and what the card records."""

    backbone: nn.Module
    embedder: Embedder
    peft_model: nn.Module
    recipe: EmbeddingRecipe
    targets: list[str]


def prepare_model(config: FinetuneConfig, device: torch.device) -> PreparedModel:
    """Load ``config.model``, wrap it in the shared embedder (recipe from the config or the model's defaults), add
    LoRA (seeded by ``config.seed``) and put it in training mode with a frozen vision tower unless it is targeted."""
    from mmeb_dllm.zoo import get_spec, load_backbone, resolve_checkpoint

    spec = get_spec(config.model)
    checkpoint = resolve_checkpoint(spec)
    dtype = "bfloat16" if config.precision == "bf16" else "float32"
    backbone = load_backbone(spec, checkpoint, dtype=dtype, device=str(device))
    recipe = EmbeddingRecipe(
        model=spec.full_name,
        checkpoint=spec.checkpoint,
        revision=spec.revision,
        resolved_revision=checkpoint.revision,
        pooling=config.pooling or spec.pooling,
        attention=config.attention or spec.attention,
        dtype=dtype,
    )
    embedder = Embedder(backbone, recipe, device=device)
    torch.manual_seed(config.seed)
    peft_model, targets = add_lora(backbone, config, spec.full_name)
    peft_model.train()
    tower = getattr(backbone, "vision_tower", None)
    if tower is not None and not any(p.requires_grad for p in tower.parameters()):
        tower.eval()  # frozen: no dropout, and its features can be cached
    if config.gradient_checkpointing:
        _enable_gradient_checkpointing(backbone)
    return PreparedModel(backbone, embedder, peft_model, recipe, targets)


# --- the loop -----------------------------------------------------------------------------------------------------


def _device(config: FinetuneConfig, ctx: distributed.RankGroup) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    return torch.device(f"cuda:{ctx.local_rank}" if torch.cuda.is_available() else "cpu")


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _check_out(out: Path, config: FinetuneConfig) -> Path | None:
    """The checkpoint to resume from, if ``out`` holds one of the same recipe; refuse a finished or foreign run."""
    if (out / CARD_FILE).exists():
        raise ConfigError(
            f"{out} already holds a finished adapter ({CARD_FILE}); choose another --out or delete the folder"
        )
    latest = ckpt.latest_checkpoint(out)
    if latest is None:
        return None
    details = recipe_differences(ckpt.read_state(latest).get("recipe", {}), config.recipe())
    if details:
        raise ConfigError(
            f"{out} holds a checkpoint of another run ({latest.name}; {details}). Resume it with the same options, "
            f"or use another --out"
        )
    return latest


def train(
    config: FinetuneConfig,
    *,
    stop_after_steps: int | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Fine-tune ``config.model`` and write the adapter folder ``config.out`` (resuming a checkpoint found there).

    ``stop_after_steps`` ends the run after that many steps of this invocation without writing the adapter (the
    periodic checkpoints stay); ``on_step`` is called after every step (after its checkpoint).
    """
    started = time.perf_counter()
    ctx = distributed.setup(use_cuda=config.device.startswith("cuda") or (config.device == "auto"
                                                                         and torch.cuda.is_available()))
    device = _device(config, ctx)
    if config.global_batch_size % ctx.world_size:
        raise ConfigError(
            f"--global-batch-size {config.global_batch_size} is not divisible by the {ctx.world_size} processes"
        )
    out = Path(config.out)
    resume_from = _check_out(out, config)
    distributed.barrier()

    _seed_everything(config.seed)
    data = load_train_data(config.train, split=config.split, samples_per_task=config.samples_per_task,
                           seed=config.seed, hard_negatives=config.hard_negatives,
                           homogeneous=config.homogeneous_batches)
    model = prepare_model(config, device)
    backbone, embedder, peft_model, recipe = model.backbone, model.embedder, model.peft_model, model.recipe
    vision_cache = install_vision_cache(backbone) if config.cache_vision_features else None
    parameters = {name: p for name, p in backbone.named_parameters() if p.requires_grad}
    distributed.broadcast_parameters(parameters.values())
    optimizer = torch.optim.AdamW(
        parameters.values(), lr=config.learning_rate, weight_decay=config.weight_decay,
        betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step))
    torch.manual_seed(config.seed + ctx.rank)

    start_step, losses, elapsed, resumed = 0, [], 0.0, []
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, parameters=parameters, optimizer=optimizer, scheduler=scheduler,
                                     ctx=ctx)
        start_step, losses, elapsed = state["step"], list(state["losses"]), float(state["elapsed_s"])
        resumed = [*state.get("resumed_from_steps", []), start_step]
        if ctx.is_main:
            logger.warning("resuming %s from step %d (%s)", out, start_step, resume_from)

    def embed(items: Sequence[Item]) -> torch.Tensor:
        bf16 = config.precision == "bf16"
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            return embedder.forward_items(items)

    def loss_fn(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        return info_nce(queries, positives, negatives, temperature=config.temperature)

    local = config.global_batch_size // ctx.world_size
    progress = _progress_bar(config, ctx, start_step)
    loop_started = time.perf_counter()
    step = start_step
    try:
        while step < config.steps:
            if stop_after_steps is not None and step - start_step >= stop_after_steps:
                break
            step_started = time.perf_counter()
            pairs = data.batch(step, config.global_batch_size)[ctx.rank * local : (ctx.rank + 1) * local]
            batch = ContrastiveBatch(
                queries=[pair.query.load() for pair in pairs],
                positives=[pair.positive.load() for pair in pairs],
                negatives=[negative.load() for pair in pairs for negative in pair.negatives],
            )
            optimizer.zero_grad(set_to_none=True)
            loss = contrastive_step(embed, batch, loss_fn, chunk_size=config.chunk_size,
                                    embed_dim=embedder.embed_dim).item()
            lr = optimizer.param_groups[0]["lr"]
            if not math.isfinite(loss):
                raise NonFiniteLossError(_non_finite_message(loss, step + 1, lr, config, pairs, out))
            distributed.all_reduce_gradients(parameters.values())
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(list(parameters.values()), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss)
            rate = config.global_batch_size / max(time.perf_counter() - step_started, 1e-9)
            if progress is not None:
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.1f}", refresh=False)
                progress.update(1)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                ckpt.save_checkpoint(
                    out, step, trainable=parameters, optimizer=optimizer, scheduler=scheduler, ctx=ctx,
                    state=_state(config, data, step, losses, elapsed + time.perf_counter() - loop_started,
                                 ctx, resumed),
                )
            if on_step is not None:
                on_step(StepInfo(step=step, loss=loss, lr=lr, samples_per_s=rate))
    finally:
        if progress is not None:
            progress.close()
        remove_vision_cache(backbone)
    train_time = elapsed + time.perf_counter() - loop_started
    if step < config.steps:
        return TrainResult(out=out, finished=False, steps_done=step, losses=losses)

    card = None
    if ctx.is_main:
        card = _save_adapter(
            peft_model, out, config=config, recipe=recipe, data=data, targets=model.targets, losses=losses,
            train_time=train_time, run_time=time.perf_counter() - started, world_size=ctx.world_size,
            resumed=resumed, trainable=sum(p.numel() for p in parameters.values()),
            cache_stats=(vision_cache.hits, vision_cache.misses) if vision_cache else None,
        )
        if not config.keep_checkpoints:
            ckpt.remove_checkpoints(out)
    distributed.barrier()
    return TrainResult(out=out, finished=True, steps_done=step, losses=losses, card=card)


def _progress_bar(config: FinetuneConfig, ctx: distributed.RankGroup, start: int) -> Any:
    if not (config.progress and ctx.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.steps, initial=start, desc="Fine-tuning", unit="step", dynamic_ncols=True)


def _state(
    config: FinetuneConfig, data: TrainData, step: int, losses: list[float], elapsed: float,
    ctx: distributed.RankGroup, resumed: list[int],
) -> dict[str, Any]:
    epoch, offset = data.position(step, config.global_batch_size)
    return {
        "recipe": config.recipe(),
        "data_position": {"epoch": epoch, "offset": offset, "pairs": len(data), "homogeneous": data.homogeneous},
        "losses": losses,
        "elapsed_s": elapsed,
        "world_size": ctx.world_size,
        "resumed_from_steps": resumed,
    }


def _non_finite_message(
    loss: float, step: int, lr: float, config: FinetuneConfig, pairs: list[Any], out: Path
) -> str:
    datasets = sorted({pair.dataset for pair in pairs})
    latest = ckpt.latest_checkpoint(out)
    resume = f"; the last checkpoint ({latest}) can be resumed" if latest else ""
    return (
        f"the training loss is {loss} at step {step} (lr {lr:.3g}, temperature {config.temperature}, precision "
        f"{config.precision}, batch from {datasets}); training stopped before this update. Lower --learning-rate, "
        f"raise --temperature or use --precision fp32{resume}"
    )


def _save_adapter(
    peft_model: nn.Module, out: Path, *, config: FinetuneConfig, recipe: EmbeddingRecipe, data: TrainData,
    targets: list[str], losses: list[float], train_time: float, run_time: float, world_size: int,
    resumed: list[int], trainable: int, cache_stats: tuple[int, int] | None,
) -> dict[str, Any]:
    """The peft adapter files first, the card last (discovery needs the card, so a half-written folder is skipped)."""
    from mmeb_dllm.adapters import adapter_hash

    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".adapter.partial"
    shutil.rmtree(staging, ignore_errors=True)
    peft_model.save_pretrained(str(staging), safe_serialization=True, save_embedding_layers=False)
    for item in staging.iterdir():
        item.replace(out / item.name)
    staging.rmdir()
    card = {
        "format": CARD_FORMAT,
        "base_model": {
            "name": recipe.model,
            "checkpoint": recipe.checkpoint,
            "revision": recipe.revision,
            "resolved_revision": recipe.resolved_revision,
        },
        "embedding_recipe": {name: getattr(recipe, name) for name in EMBEDDING_FIELDS},
        "finetune_recipe": config.recipe(),
        "lora": {"target_modules": targets, "trainable_parameters": trainable},
        "adapter_hash": adapter_hash(out),
        "data": data.summary(),
        "train_pairs": len(data),
        "steps": config.steps,
        "samples_seen": config.steps * config.global_batch_size,
        "seed": config.seed,
        "final_loss": losses[-1] if losses else None,
        "loss_history": losses,
        "wall_time_s": round(train_time, 3),
        "run_time_s": round(run_time, 3),
        "world_size": world_size,
        "resumed_from_steps": resumed,
        "vision_feature_cache": {"hits": cache_stats[0], "misses": cache_stats[1]} if cache_stats else None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "software": software_versions(),
    }
    write_card(out, card)
    return card
