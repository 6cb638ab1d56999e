"""The adapter card: a JSON file next to the peft adapter saying how it was made.

Fields: ``format``; ``base_model`` (name, checkpoint, requested and resolved revision); ``embedding_recipe`` (the
pooling/attention/instruction the adapter was trained with, which evaluation must use); ``finetune_recipe`` (every
:class:`~mmeb_dllm.finetune.config.FinetuneConfig` field that shapes the adapter); ``lora`` (target modules,
trainable parameters); ``adapter_hash``; ``data`` (per dataset: source, revision, files, rows available and used,
hard negatives) and ``train_pairs``; ``steps``, ``samples_seen``, ``seed``, ``final_loss``, ``loss_history``;
``wall_time_s`` (training, summed over resumed segments), ``world_size``, ``resumed_from_steps``; ``created``
and ``software`` versions. Reading it needs no torch (adapter discovery runs when mteb is imported).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmeb_dllm.errors import CheckpointError

CARD_FILE = "adapter_card.json"
CARD_FORMAT = "mmeb-dllm-adapter-card/1"
EMBEDDING_FIELDS = ("pooling", "num_mask_tokens", "attention", "instruction", "image_resolution", "normalize")
REQUIRED = ("format", "base_model", "embedding_recipe", "finetune_recipe", "adapter_hash", "steps")


def write_card(folder: str | Path, card: dict[str, Any]) -> Path:
    """Write ``card`` to ``folder/adapter_card.json`` atomically (a reader sees the old file or the new one)."""
    path = Path(folder) / CARD_FILE
    staging = path.with_name(f".{CARD_FILE}.{os.getpid()}.partial")
    staging.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staging, path)
    return path


def read_card(folder: str | Path) -> dict[str, Any]:
    """The card of an adapter folder; a missing, malformed or incomplete card raises :class:`CheckpointError`."""
    path = Path(folder) / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: {folder} is not an mmeb-dllm adapter folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"adapter card {path} cannot be read ({exc}); re-run the fine-tune") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"adapter card {path} is not an {CARD_FORMAT} card")
    missing = [key for key in REQUIRED if key not in card]
    if missing:
        raise CheckpointError(f"adapter card {path} lacks {missing}")
    if not isinstance(card["base_model"], dict) or "name" not in card["base_model"]:
        raise CheckpointError(f"adapter card {path}: base_model must be an object with a name")
    return card


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("mmeb-dllm", "torch", "transformers", "peft"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions
