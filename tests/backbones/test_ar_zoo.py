"""The autoregressive tiny models through the zoo and the shared embedder; the zoo's peft adapter hook; the stock
mteb CLI (slow)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from mmeb_dllm.backbones.qwen2_vl import Qwen2VLBackbone
from mmeb_dllm.backbones.tiny import tiny_checkpoint_dir
from mmeb_dllm.backbones.tiny_ar import VARIANTS, VLM2VEC_LORA_TARGETS, build_tiny_checkpoint
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import CheckpointError
from mmeb_dllm.zoo import get_spec, load_backbone, merge_adapter, resolve_checkpoint

TINY_MODELS = ("llava-next-embed-tiny", "qwen2-vl-embed-tiny", "vlm2vec-qwen2vl-embed-tiny")
BIN = Path(sys.executable).parent


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private mmeb_dllm cache for the tiny checkpoints the zoo builds."""
    root = tmp_path_factory.mktemp("ar_zoo_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMEB_DLLM_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def backbones(cache: Path) -> dict:
    """Every tiny AR model loaded the way mteb loads it (resolve, load, merge the adapter)."""
    loaded = {}
    for name in TINY_MODELS:
        spec = get_spec(name)
        loaded[name] = load_backbone(spec, resolve_checkpoint(spec), dtype="float32", device="cpu")
    return loaded


def embedder(name: str, backbone) -> Embedder:
    spec = get_spec(name)
    recipe = EmbeddingRecipe(model=spec.full_name, checkpoint=spec.checkpoint, revision=spec.revision,
                             pooling=spec.pooling, attention=spec.attention)
    return Embedder(backbone, recipe)


@pytest.mark.parametrize("variant", VARIANTS)
def test_build_is_deterministic(variant: str, tmp_path: Path) -> None:
    first = build_tiny_checkpoint(variant, tmp_path / "a")
    second = build_tiny_checkpoint(variant, tmp_path / "b")
    other = build_tiny_checkpoint(variant, tmp_path / "c", seed=1)
    files = sorted(path.name for path in first.iterdir())
    assert files == sorted(path.name for path in second.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= set(files)
    for name in files:
        assert digest(first / name) == digest(second / name), name
    assert digest(first / "model.safetensors") != digest(other / "model.safetensors")


def test_vlm2vec_tiny_mirrors_the_real_adapter_repo(cache: Path) -> None:
    """Base files identical to the tiny Qwen2-VL; a DoRA adapter with VLM2Vec's targets in the 4.x key layout."""
    base, vlm2vec = tiny_checkpoint_dir("qwen2-vl"), tiny_checkpoint_dir("vlm2vec-qwen2-vl")
    assert digest(base / "model.safetensors") == digest(vlm2vec / "model.safetensors")
    config = json.loads((vlm2vec / "adapter_config.json").read_text())
    assert config["use_dora"] and config["init_lora_weights"] == "gaussian" and config["peft_type"] == "LORA"
    assert config["target_modules"] == sorted(VLM2VEC_LORA_TARGETS)
    keys = list(load_file(str(vlm2vec / "adapter_model.safetensors")))
    assert keys and all(key.startswith("base_model.model.model.layers.") for key in keys)
    assert {key.rsplit(".", 2)[-2] if key.endswith(".weight") else key.rsplit(".", 1)[-1] for key in keys} == {
        "lora_A", "lora_B", "lora_magnitude_vector"
    }


@pytest.mark.parametrize("name", TINY_MODELS)
def test_text_image_and_both_give_unit_vectors(name: str, backbones: dict) -> None:
    spec, backbone = get_spec(name), backbones[name]
    assert backbone.hidden_size == spec.embed_dim
    assert sum(parameter.numel() for parameter in backbone.parameters()) == spec.n_parameters
    items = [
        Item("A photo of two cats on a sofa"),
        Item("", noise(90, 50)),
        Item("<|image_1|>\nRepresent the given image with the following question: What is in the image", noise(90, 50)),
    ]
    vectors = embedder(name, backbone).embed(items, show_progress=False)
    assert vectors.shape == (3, spec.embed_dim) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert min(np.abs(vectors[i] - vectors[j]).max() for i, j in ((0, 1), (0, 2), (1, 2))) > 1e-3


@pytest.mark.parametrize("name", TINY_MODELS)
def test_padded_batch_equals_one_by_one(name: str, backbones: dict) -> None:
    items = [
        Item("<|image_1|>\nRepresent the given image for classification", noise(40, 30)),
        Item("a much longer text-only query that needs more tokens than the other ones"),
        Item("<|image_1|>\nRepresent the given image.", noise(25, 60, seed=1)),
        Item("short"),
    ]
    batched = embedder(name, backbones[name]).embed(items, batch_size=8, show_progress=False)
    alone = np.stack([embedder(name, backbones[name]).embed([item], show_progress=False)[0] for item in items])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def legacy_to_current(key: str) -> str:
    """A 4.x-layout Qwen2-VL adapter key in the transformers-5 layout (written out by hand, independent of the zoo)."""
    return key.replace("base_model.model.model.", "base_model.model.model.language_model.", 1)


@torch.no_grad()
def test_adapter_changes_vectors_and_equals_plain_peft(backbones: dict, tmp_path: Path) -> None:
    """The zoo's merge (4.x keys renamed on load) equals peft's own load + merge of hand-converted keys."""
    from peft import PeftModel
    from transformers import Qwen2VLForConditionalGeneration

    items = [Item("A photo of two cats"), Item("<|image_1|>\nRepresent the given image.", noise(60, 40))]
    base = embedder("qwen2-vl-embed-tiny", backbones["qwen2-vl-embed-tiny"]).embed(items, show_progress=False)
    tuned = embedder("vlm2vec-qwen2vl-embed-tiny", backbones["vlm2vec-qwen2vl-embed-tiny"]).embed(
        items, show_progress=False
    )
    assert np.abs(base - tuned).max() > 1e-3

    source = tiny_checkpoint_dir("vlm2vec-qwen2-vl")
    converted = tmp_path / "adapter"
    converted.mkdir()
    shutil.copy(source / "adapter_config.json", converted)
    stored = load_file(str(source / "adapter_model.safetensors"))
    save_file({legacy_to_current(k): v for k, v in stored.items()}, str(converted / "adapter_model.safetensors"))
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_checkpoint_dir("qwen2-vl")).eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    reference = PeftModel.from_pretrained(model, str(converted)).merge_and_unload().state_dict()
    merged = backbones["vlm2vec-qwen2vl-embed-tiny"].model.state_dict()
    assert set(merged) == set(reference)
    changed = [key for key in reference if not torch.equal(reference[key], before[key])]
    for key in reference:
        torch.testing.assert_close(merged[key], reference[key], rtol=0, atol=1e-6)
    original = backbones["qwen2-vl-embed-tiny"].model.state_dict()
    assert {key for key in merged if not torch.equal(merged[key], original[key])} == set(changed)
    assert {key.split(".")[-2] for key in changed} == {"q_proj", "k_proj", "v_proj", "o_proj", "down_proj"}


def test_adapter_that_does_not_fit_is_refused(cache: Path, tmp_path: Path) -> None:
    source = tiny_checkpoint_dir("vlm2vec-qwen2-vl")
    stored = load_file(str(source / "adapter_model.safetensors"))
    cases = {
        "foreign": {k.replace("model.layers.", "model.blocks."): v for k, v in stored.items()},
        "partial": {k: v for k, v in stored.items() if "layers.1.self_attn.q_proj" not in k},
    }
    for label, tensors in cases.items():
        folder = tmp_path / label
        folder.mkdir()
        shutil.copy(source / "adapter_config.json", folder)
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        backbone = Qwen2VLBackbone.from_pretrained(tiny_checkpoint_dir("qwen2-vl"))
        with pytest.raises(CheckpointError, match=r"does not (match|fit)"):
            merge_adapter(backbone, folder)


def test_missing_adapter_fails_before_loading(cache: Path) -> None:
    spec = dataclasses.replace(get_spec("vlm2vec-qwen2vl-embed-tiny"), adapter="nobody/no-such-adapter")
    with pytest.raises(CheckpointError, match=r"peft adapter of mmeb-dllm/vlm2vec-qwen2vl-embed-tiny"):
        resolve_checkpoint(spec)


def _cli_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MMEB_DATA_DIR", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MMEB_DLLM_CACHE=str(cache))
    return env


@pytest.mark.slow
def test_stock_mteb_run_on_mmeb_mini(cache: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(BIN / "mteb"), "run", "-m", "qwen2-vl-embed-tiny", "-t", "MMEB-mini-Digits", "--output-folder",
         str(tmp_path), "--no-co2-tracker"],
        capture_output=True, text=True, env=_cli_env(cache), cwd=tmp_path, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [result] = (tmp_path / "results" / "mmeb-dllm__qwen2-vl-embed-tiny").rglob("MMEB-mini-Digits.json")
    score = json.loads(result.read_text())["scores"]["test"][0]["main_score"]
    assert 0.0 <= score <= 1.0


@pytest.mark.slow
def test_stock_mteb_mock_run_passes(cache: Path, tmp_path: Path) -> None:
    """``mteb mock-run`` for every tiny AR model (run side by side)."""
    runs = {}
    for name in TINY_MODELS:
        folder = tmp_path / name
        folder.mkdir()
        runs[name] = subprocess.Popen(
            [str(BIN / "mteb"), "mock-run", "-m", name, "--device", "cpu"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_cli_env(cache), cwd=folder,
        )
    for name, process in runs.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}: {output[-3000:]}"
        assert "passed all expected checks" in output, f"{name}: {output[-3000:]}"
