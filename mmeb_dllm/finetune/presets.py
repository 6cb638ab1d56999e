"""Named fine-tune recipes: a starting point that ``--preset`` applies before any explicit option.

A preset only changes :class:`~mmeb_dllm.finetune.config.FinetuneConfig` defaults; options given on the command line
(or keyword arguments) still win, and the adapter card records the resulting config in full, so an adapter never
depends on the preset table staying the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmeb_dllm.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """A named set of config overrides and why they differ from the VLM2Vec defaults."""

    name: str
    help: str
    overrides: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("vlm2vec", "the VLM2Vec recipe (the defaults): temperature 0.02, lr 2e-5, batch 1024, 2000 steps"),
        Preset(
            "tiny-cpu",
            "a recipe that learns on the tiny random models in under two minutes of CPU: the MMEB-mini Digits "
            "and Shapes train sets (all rows), batches of 16 in one pass, 450 steps, lr 3e-3 after 10 warm-up "
            "steps, temperature 0.05, LoRA r 8 / alpha 16 without dropout on the language model and the projector. "
            "Random weights need a much larger learning rate than a pretrained model; at temperature 0.3 they "
            "learn a few points, at 0.02 less than at 0.05 in the same steps",
            {
                "train": ("MMEB-mini/Digits", "MMEB-mini/Shapes"),
                "samples_per_task": 1000,
                "steps": 450,
                "global_batch_size": 16,
                "chunk_size": 0,
                "warmup_steps": 10,
                "learning_rate": 3e-3,
                "temperature": 0.05,
                "lora_r": 8,
                "lora_alpha": 16,
                "lora_dropout": 0.0,
                "lora_targets": "language_model,projector",
                "checkpoint_every": 50,
            },
        ),
    )
}


def preset_overrides(name: str) -> dict[str, Any]:
    """The overrides of preset ``name``; a ConfigError lists the known presets."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r} is unknown; known presets: {', '.join(PRESETS)}")
    return dict(PRESETS[name].overrides)

