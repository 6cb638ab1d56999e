"""Adapter folders as mteb models: content hash, discovery, registration, loading onto the base model, stock CLI."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from mmeb_dllm.adapters import adapter_hash, apply_adapter, discover_adapters, register_adapters
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.mteb_encoder import MMEBEncoder
from mmeb_dllm.errors import CheckpointError
from mmeb_dllm.finetune.card import CARD_FILE
from mmeb_dllm.finetune.trainer import train
from mmeb_dllm.paths import tasks_dir
from tests.finetune.conftest import tiny_config

NAME = "tiny-digits-adapter"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A two-step adapter of the tiny LaViDa in an adapters folder of its own."""
    out = tmp_path_factory.mktemp("adapters") / NAME
    train(tiny_config(str(out), train=("MMEB-mini/Digits",), samples_per_task=4, steps=2, global_batch_size=2,
                      learning_rate=2e-2, warmup_steps=0))
    return out


def _items() -> list[Item]:
    image = Image.open(tasks_dir() / "mini" / "eval_images" / "Digits" / sorted(
        p.name for p in (tasks_dir() / "mini" / "eval_images" / "Digits").iterdir())[0]).convert("RGB")
    return [Item("<|image_1|>\nRepresent the given image for classification", image), Item("seven")]


def test_hash_covers_weights_and_scaling_but_not_file_layout(adapter, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(adapter, copy)
    tensors = load_file(str(copy / "adapter_model.safetensors"))
    reordered = {key: tensors[key] for key in reversed(list(tensors))}
    save_file(reordered, str(copy / "adapter_model.safetensors"), metadata={"note": "rewritten"})
    assert adapter_hash(copy) == adapter_hash(adapter)
    first = next(iter(tensors))
    save_file({**tensors, first: tensors[first] + 1e-3}, str(copy / "adapter_model.safetensors"))
    assert adapter_hash(copy) != adapter_hash(adapter)
    shutil.copy(adapter / "adapter_model.safetensors", copy / "adapter_model.safetensors")
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": config["lora_alpha"] * 2}))
    assert adapter_hash(copy) != adapter_hash(adapter)


def test_discovery_and_registration(adapter, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(adapter, root / NAME)
    shutil.copytree(adapter, root / "lavida-embed-tiny")  # named like a zoo model: skipped
    shutil.copytree(adapter, root / "broken")
    (root / "broken" / CARD_FILE).write_text("{not json")
    (root / "not-an-adapter").mkdir()
    with caplog.at_level(logging.WARNING, logger="mmeb_dllm.adapters"):
        assert [info.name for info in discover_adapters(root)] == ["lavida-embed-tiny", NAME]
        registry: dict = {}
        assert register_adapters(registry, root) == [f"mmeb-dllm/{NAME}"]
    assert "broken" in caplog.text and "named like a zoo model" in caplog.text
    meta = registry[NAME]
    assert registry[f"mmeb-dllm/{NAME}"] is meta and meta.name == f"mmeb-dllm/{NAME}"
    assert meta.revision == adapter_hash(adapter)[:12] and meta.adapted_from == "mmeb-dllm/lavida-embed-tiny"
    assert meta.loader_kwargs["adapter"] == str((root / NAME).resolve())
    assert meta.loader_kwargs["base_model"] == "mmeb-dllm/lavida-embed-tiny" and meta.loader_kwargs["pooling"] == "last"
    shutil.rmtree(root / NAME)
    assert register_adapters(registry, root) == [] and NAME not in registry


def test_encoder_merges_the_adapter_and_records_it(adapter):
    from peft import PeftModel

    encoder = MMEBEncoder("lavida-embed-tiny", adapter=str(adapter), device="cpu")
    assert encoder.recipe.adapter == str(adapter) and encoder.recipe.adapter_hash == adapter_hash(adapter)
    merged = encoder.embedder.embed(_items(), show_progress=False)

    base = MMEBEncoder("lavida-embed-tiny", device="cpu")
    plain = base.embedder.embed(_items(), show_progress=False)
    unmerged_backbone = PeftModel.from_pretrained(MMEBEncoder("lavida-embed-tiny").embedder.backbone, str(adapter))
    unmerged = Embedder(unmerged_backbone.base_model.model, base.recipe).embed(_items(), show_progress=False)
    assert np.abs(merged - unmerged).max() < 1e-5
    assert np.abs(merged - plain).max() > 1e-4
    assert encoder.recipe.key() != base.recipe.key()


def test_changed_adapter_files_are_refused(adapter, tmp_path):
    copy = tmp_path / "changed"
    shutil.copytree(adapter, copy)
    expected = adapter_hash(copy)
    tensors = load_file(str(copy / "adapter_model.safetensors"))
    save_file({k: v * 2 for k, v in tensors.items()}, str(copy / "adapter_model.safetensors"))
    backbone = MMEBEncoder("lavida-embed-tiny").embedder.backbone
    with pytest.raises(CheckpointError, match="changed since it was registered"):
        apply_adapter(backbone, copy, expected_hash=expected)
