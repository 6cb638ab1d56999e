"""The fine-tuning recipe: one dataclass, VLM2Vec's settings as defaults, every field overridable and saved.

Defaults follow VLM2Vec (arXiv 2410.05160, sec. 4; its training arguments): InfoNCE over in-batch negatives at
temperature 0.02, LoRA rank 8 (alpha 64, dropout 0.1) on the language model's linear layers, AdamW at 2e-5 with a
linear schedule and 200 warm-up steps, 2000 steps, global batch 1024 (GradCache sub-batches), at most 50 000 samples
per dataset, the model's own pooling. ``help`` in each field's metadata is the command-line help.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from mmeb_dllm.errors import ConfigError

SPLITS = ("original", "diverse_instruction")
SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16")
TARGET_PARTS = ("language_model", "projector", "vision_tower")
REGEX_PREFIX = "re:"

# Fields that do not change the trained adapter: a resumed run may differ in these.
RUN_ONLY_FIELDS = ("out", "checkpoint_every", "keep_checkpoints", "device", "progress")


def _help(text: str, default: Any = MISSING, **extra: Any) -> Any:
    if default is MISSING:
        return field(metadata={"help": text, **extra})
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: default, metadata={"help": text, **extra})
    return field(default=default, metadata={"help": text, **extra})


@dataclass
class FinetuneConfig:
    """Everything that decides the trained adapter (plus where and how the run writes)."""

    model: str = _help("zoo model to fine-tune (name or alias, e.g. lavida-embed-tiny)")
    out: str = _help("output folder: the peft adapter, its card and the checkpoints of a running job")
    train: tuple[str, ...] = _help(
        "training data, comma-separated: MMEB-train config names (ImageNet_1K,N24News,...; local mirror "
        "$MMEB_TRAIN_DIR or the hub), MMEB (its 20 IND configs), MMEB-mini (the bundled train split) or "
        "MMEB-mini/<Key> (one bundled set)",
        ("MMEB-mini",),
    )
    split: str = _help(f"MMEB-train split: {' or '.join(SPLITS)}", "original")
    samples_per_task: int = _help(
        "at most this many rows per dataset (a seeded random subset when a dataset has more)", 50_000
    )
    homogeneous_batches: bool = _help(
        "draw every batch from one dataset (VLM2Vec's homogeneous sampling): in-batch negatives share the task", False
    )
    hard_negatives: bool = _help("use the rows' neg_text/neg_image_path as extra negatives when present", True)
    temperature: float = _help("InfoNCE softmax temperature", 0.02)
    lora_r: int = _help("LoRA rank", 8)
    lora_alpha: int = _help("LoRA alpha (scale = alpha / r)", 64)
    lora_dropout: float = _help("dropout on the LoRA branch", 0.1)
    dora: bool = _help("weight-decomposed LoRA (DoRA) instead of plain LoRA", False)
    lora_targets: str = _help(
        "comma-separated LoRA targets: language_model, projector, vision_tower (every linear layer inside) or "
        "re:<regex> on full module names; the vision tower stays frozen unless named",
        "language_model",
    )
    learning_rate: float = _help("peak learning rate (AdamW)", 2e-5)
    lr_schedule: str = _help(f"learning-rate schedule after warm-up: {', '.join(SCHEDULES)}", "linear")
    warmup_steps: int = _help("linear warm-up steps", 200)
    steps: int = _help("optimizer steps", 2000)
    weight_decay: float = _help("AdamW weight decay", 0.0)
    adam_beta1: float = _help("AdamW beta1", 0.9)
    adam_beta2: float = _help("AdamW beta2", 0.999)
    adam_epsilon: float = _help("AdamW epsilon", 1e-8)
    max_grad_norm: float = _help("clip the gradient norm to this (0 = no clipping)", 1.0)
    global_batch_size: int = _help("pairs per optimizer step, summed over all ranks (in-batch negatives)", 1024)
    chunk_size: int = _help(
        "GradCache sub-batch: items per forward pass on one rank (0 = the whole local batch in one pass)", 16
    )
    pooling: str | None = _help("pooling (last, mean, mask); default: the model's own", None)
    attention: str | None = _help("attention (default, causal, bidirectional); default: the model's own", None)
    precision: str = _help("fp32, or bf16 (base weights in bfloat16, autocast; for GPUs)", "fp32")
    gradient_checkpointing: bool = _help("recompute the language model's activations in backward (saves memory)", False)
    cache_vision_features: bool = _help(
        "compute the frozen vision tower's features once per distinct image view (exact; off if it is trained)", True
    )
    seed: int = _help("seed of LoRA initialisation, data order, sampling and dropout", 42)
    checkpoint_every: int = _help("write a resumable checkpoint every N steps (0 = only at the end)", 100)
    keep_checkpoints: bool = _help("keep the checkpoints/ folder after the run finishes", False)
    device: str = _help("cpu, cuda, cuda:N or auto (cuda:LOCAL_RANK when available)", "auto")
    progress: bool = _help("show a progress bar (loss, lr, samples/s) on rank 0", True)

    def __post_init__(self) -> None:
        if isinstance(self.train, str):
            self.train = parse_list(self.train)
        self.train = tuple(self.train)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the option and the allowed values."""
        choices = {"split": SPLITS, "lr_schedule": SCHEDULES, "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{_flag(name)} {getattr(self, name)!r} is not one of {list(allowed)}")
        positive = ("samples_per_task", "lora_r", "steps", "global_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        non_negative = ("warmup_steps", "chunk_size", "checkpoint_every", "weight_decay", "max_grad_norm")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1 and self.adam_epsilon > 0):
            raise ConfigError("--adam-beta1/--adam-beta2 must be in [0, 1) and --adam-epsilon > 0")
        if not self.learning_rate > 0:
            raise ConfigError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not self.train:
            raise ConfigError("--train names no dataset; use e.g. --train MMEB-mini")
        for target in parse_list(self.lora_targets):
            if target not in TARGET_PARTS and not target.startswith(REGEX_PREFIX):
                raise ConfigError(
                    f"--lora-targets entry {target!r} is neither one of {list(TARGET_PARTS)} "
                    f"nor a {REGEX_PREFIX}<regex>"
                )
        if not parse_list(self.lora_targets):
            raise ConfigError("--lora-targets is empty; the default is language_model")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["train"] = list(self.train)
        return data

    def recipe(self) -> dict[str, Any]:
        """The fields that decide the adapter (run-only fields dropped): what a resumed run must match."""
        return {key: value for key, value in self.to_dict().items() if key not in RUN_ONLY_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown fine-tune option(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def parse_list(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"a, b,c"`` → ``("a", "b", "c")``; a list or tuple passes through, stripped, empties dropped."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip() for item in items if item.strip())


def _flag(name: str) -> str:
    return name.replace("_", "-")


def recipe_differences(saved: dict[str, Any], wanted: dict[str, Any], *, most: int = 6) -> str:
    """``"key: saved -> wanted, ..."`` for the recipe fields that differ (at most ``most``); ``""`` when none do."""
    differing = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
    return ", ".join(f"{key}: {saved.get(key)!r} -> {wanted.get(key)!r}" for key in differing[:most])
