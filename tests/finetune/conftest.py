"""Helpers of the fine-tune tests: the tiny LaViDa with LoRA layers, and small batches from MMEB-mini."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmeb_dllm.embed.embedder import Item
from mmeb_dllm.finetune.config import FinetuneConfig
from mmeb_dllm.finetune.data import load_train_data
from mmeb_dllm.finetune.gradcache import ContrastiveBatch
from mmeb_dllm.finetune.trainer import PreparedModel, prepare_model

TINY = "lavida-embed-tiny"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_config(out: str = "unused", **overrides: object) -> FinetuneConfig:
    """A small, fast recipe on the tiny LaViDa (overridable)."""
    settings: dict[str, object] = {
        "model": TINY, "out": out, "train": ("MMEB-mini/Digits", "MMEB-mini/ShapeColorVQA"),
        "samples_per_task": 8, "steps": 4, "global_batch_size": 4, "chunk_size": 2, "warmup_steps": 1,
        "learning_rate": 1e-3, "temperature": 0.05, "lora_targets": "language_model,projector",
        "lora_dropout": 0.0, "checkpoint_every": 2, "progress": False,
    }
    settings.update(overrides)
    return FinetuneConfig(**settings)  # type: ignore[arg-type]


def write_text_mirror(root: Path, name: str = "TextPairs", rows: int = 8) -> Path:
    """A local MMEB-train mirror (``root/<name>/original-*.parquet``) of short text pairs; every other row has a
    hard negative. Text-only rows keep the runs that only check bookkeeping (resume, ranks) cheap."""
    colours = ["red", "green", "blue", "yellow"]
    records = [
        {
            "qry": f"Find the colour of thing {i}.\n",
            "qry_image_path": "",
            "pos_text": colours[i % 4],
            "pos_image_path": "",
            "neg_text": colours[(i + 1) % 4] if i % 2 == 0 else "",
            "neg_image_path": "",
        }
        for i in range(rows)
    ]
    (root / name).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), root / name / "original-00000-of-00001.parquet")
    return root


def cli_flags(settings: dict[str, object]) -> list[str]:
    """``mmeb-dllm finetune`` options for config fields (``{"chunk_size": 2}`` → ``["--chunk-size", "2"]``)."""
    flags: list[str] = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            flags += [flag, ",".join(value)]
        else:
            flags += [flag, str(value)]
    return flags


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment, offline, with as many torch threads as this process (same float reduction order)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(torch.get_num_threads()))
    env.update(extra)
    return env


def lora_model(config: FinetuneConfig, *, randomise: bool = True) -> PreparedModel:
    """The tiny model with LoRA; ``randomise`` fills every LoRA tensor with seeded noise (peft starts B at zero,
    which would make the A gradients vanish and an equivalence test trivial)."""
    model = prepare_model(config, torch.device("cpu"))
    if randomise:
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            for name, param in model.backbone.named_parameters():
                if "lora_" in name:
                    param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def trainable(model: PreparedModel) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.backbone.named_parameters() if p.requires_grad}


def mixed_batch(size: int = 4) -> ContrastiveBatch:
    """``size`` Digits pairs (image query, label text) and a text hard negative (the next label) for every other
    pair, so rows with and without negatives mix."""
    pairs = load_train_data(["MMEB-mini/Digits"], split="original", samples_per_task=size, seed=0).pairs
    labels = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return ContrastiveBatch(
        queries=[p.query.load() for p in pairs],
        positives=[p.positive.load() for p in pairs],
        negatives=[Item(labels[(labels.index(p.positive.text) + 1) % 10]) for p in pairs[::2]],
    )
