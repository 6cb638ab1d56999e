"""Tiny LaViDa variants: deterministic offline build, loading round trip, prompts, padding, attention switch."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID
from mmeb_dllm.backbones.dream import DreamLM
from mmeb_dllm.backbones.lavida import LavidaBackbone
from mmeb_dllm.backbones.llada import LladaLM
from mmeb_dllm.backbones.tiny import VARIANTS, build_tiny_checkpoint, tiny_checkpoint_dir
from mmeb_dllm.errors import ConfigError, DataError

variants = pytest.mark.parametrize("variant", VARIANTS)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gradient(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB test image with structure in both directions."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


@variants
def test_build_is_deterministic(variant: str, tmp_path: Path) -> None:
    first = build_tiny_checkpoint(variant, tmp_path / "a", seed=0)
    second = build_tiny_checkpoint(variant, tmp_path / "b", seed=0)
    other = build_tiny_checkpoint(variant, tmp_path / "c", seed=1)
    for name in ("config.json", "model.safetensors", "siglip_vision_tower/config.json", "tokenizer.json"):
        assert digest(first / name) == digest(second / name), name
    assert digest(first / "model.safetensors") != digest(other / "model.safetensors")


def test_cache_is_built_once(tmp_path: Path) -> None:
    path = tiny_checkpoint_dir("lavida-llada", cache_root=tmp_path)
    stamp = os.stat(path / "model.safetensors").st_mtime_ns
    assert tiny_checkpoint_dir("lavida-llada", cache_root=tmp_path) == path
    assert os.stat(path / "model.safetensors").st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging folder left behind
    with pytest.raises(ConfigError, match="lavida-nope"):
        tiny_checkpoint_dir("lavida-nope", cache_root=tmp_path)


@variants
def test_weights_round_trip(variant: str, tiny_dirs: dict[str, Path], tiny_backbones: dict) -> None:
    backbone: LavidaBackbone = tiny_backbones[variant]
    stored = load_file(str(tiny_dirs[variant] / "model.safetensors"))
    assert stored["model.image_newline"].dtype == torch.bfloat16  # like upstream
    state = backbone.state_dict()
    for module_key, source in backbone.key_map().sources.items():
        assert source is not None
        torch.testing.assert_close(state[module_key], stored[source].float(), rtol=0, atol=0)
    for name, tensor in stored.items():  # non-degenerate random weights
        assert tensor.float().std() > 0 or tensor.numel() == 1, name


@variants
def test_prompt_has_one_placeholder(variant: str, tiny_backbones: dict) -> None:
    backbone: LavidaBackbone = tiny_backbones[variant]
    prompt = backbone.render_prompt(f"{backbone.image_token}\nWhat is shown?")
    assert prompt.count(backbone.image_token) == 1
    assert "You are a helpful language and vision assistant." in prompt
    ids = backbone.tokenize(prompt)
    assert ids.count(IMAGE_PLACEHOLDER_ID) == 1
    tokenizer = backbone.tokenizer
    head, tail = prompt.split(backbone.image_token)
    before = tokenizer(head, add_special_tokens=False).input_ids
    after = tokenizer(tail, add_special_tokens=False).input_ids
    assert ids[: len(before)] == before
    starts_with_bos = tokenizer.bos_token_id is not None and before[0] == tokenizer.bos_token_id
    # upstream's tokenizer_image_token quirk: with a leading bos the token after <image> ("\n") is dropped
    assert ids[len(before) + 1 :] == (after[1:] if starts_with_bos else after)
    assert starts_with_bos == (variant == "lavida-llada")
    assert backbone.tokenize(backbone.render_prompt("no image here")).count(IMAGE_PLACEHOLDER_ID) == 0


@variants
def test_special_ids(variant: str, tiny_backbones: dict) -> None:
    backbone: LavidaBackbone = tiny_backbones[variant]
    mask = "<|mdm_mask|>" if variant == "lavida-llada" else "<|mask|>"
    assert backbone.mask_token_id == backbone.tokenizer.convert_tokens_to_ids(mask)
    assert backbone.pad_token_id == backbone.tokenizer.convert_tokens_to_ids("<|endoftext|>")


@variants
@pytest.mark.parametrize("size", [(97, 41), (41, 97), (60, 60), (5, 3), (300, 70)])
def test_num_image_tokens_matches_embeddings(variant: str, size: tuple[int, int], tiny_backbones: dict) -> None:
    backbone: LavidaBackbone = tiny_backbones[variant]
    image = gradient(*size)
    with torch.no_grad():
        tokens = backbone.image_embeddings(image)
    assert tokens.shape == (backbone.num_image_tokens(image), backbone.hidden_size)


@variants
@torch.no_grad()
def test_padded_batch_equals_one_by_one(variant: str, tiny_backbones: dict) -> None:
    backbone: LavidaBackbone = tiny_backbones[variant]
    prompts = [f"{backbone.image_token}\nA photo.", "Just some text that is a bit longer than the others.", "Hi"]
    ids = [backbone.tokenize(backbone.render_prompt(p)) for p in prompts]
    images = [gradient(70, 30, seed=1), None, None]
    embeds = backbone.embed(ids, images)
    width = max(e.shape[0] for e in embeds)
    padded = torch.zeros(len(embeds), width, backbone.hidden_size)
    mask = torch.zeros(len(embeds), width, dtype=torch.long)
    for row, emb in enumerate(embeds):
        padded[row, : emb.shape[0]], mask[row, : emb.shape[0]] = emb, 1
    batch = backbone.forward_embeds(padded, mask)
    states = backbone.forward_embeds(padded, mask, output_hidden_states=True)
    assert len(states) == backbone.language_model.config.num_hidden_layers + 1
    torch.testing.assert_close(states[-1], batch, rtol=0, atol=0)
    for row, emb in enumerate(embeds):
        alone = backbone.forward_embeds(emb[None], torch.ones(1, emb.shape[0], dtype=torch.long))
        torch.testing.assert_close(batch[row, : emb.shape[0]], alone[0], rtol=0, atol=1e-5)


@variants
@torch.no_grad()
def test_attention_modes(variant: str, tiny_backbones: dict) -> None:
    backbone: LavidaBackbone = tiny_backbones[variant]
    ids = backbone.tokenize(backbone.render_prompt("Which way does attention flow?"))
    changed = [*ids[:-1], (ids[-1] + 1) % backbone.language_model.config.vocab_size]

    def first_position_shift() -> float:
        a, b = backbone.embed([ids, changed], [None, None])
        mask = torch.ones(2, len(ids), dtype=torch.long)
        hidden = backbone.forward_embeds(torch.stack([a, b]), mask)
        return (hidden[0, 0] - hidden[1, 0]).abs().max().item()

    assert backbone.default_attention == "bidirectional"
    assert first_position_shift() > 1e-4
    try:
        backbone.set_attention("causal")
        assert first_position_shift() == 0.0
    finally:
        backbone.set_attention("bidirectional")
    assert first_position_shift() > 1e-4
    with pytest.raises(ConfigError, match="sideways"):
        backbone.set_attention("sideways")  # type: ignore[arg-type]


@variants
def test_placeholder_image_mismatch_names_sample(variant: str, tiny_backbones: dict) -> None:
    backbone: LavidaBackbone = tiny_backbones[variant]
    text = backbone.tokenize(backbone.render_prompt("text only"))
    with_image = backbone.tokenize(backbone.render_prompt(f"{backbone.image_token}\nx"))
    with pytest.raises(DataError, match="sample 1"):
        backbone.embed([text, text], [None, gradient(20, 20)])
    with pytest.raises(DataError, match="sample 0"):
        backbone.embed([with_image], [None])


@torch.no_grad()
def test_language_models_load_alone(tiny_dirs: dict[str, Path], tiny_backbones: dict) -> None:
    """LladaLM / DreamLM read the same checkpoints (LM keys only, LM head included) and agree with the backbone."""
    for variant, cls in (("lavida-llada", LladaLM), ("lavida-dream", DreamLM)):
        backbone: LavidaBackbone = tiny_backbones[variant]
        lm = cls.from_pretrained(tiny_dirs[variant])
        ids = torch.tensor([backbone.tokenize(backbone.render_prompt("hello"))])
        out = lm(ids)
        reference = backbone.forward_embeds(backbone.embed([ids[0].tolist()], [None])[0][None], torch.ones_like(ids))
        torch.testing.assert_close(out.last_hidden_state, reference, rtol=0, atol=1e-6)
        assert out.logits is not None and out.logits.shape[-1] == lm.config.vocab_size


def test_bfloat16_load(tiny_dirs: dict[str, Path]) -> None:
    backbone = LavidaBackbone.from_pretrained(tiny_dirs["lavida-llada"], dtype=torch.bfloat16)
    assert {p.dtype for p in backbone.parameters()} == {torch.bfloat16}
    stored = load_file(str(tiny_dirs["lavida-llada"] / "model.safetensors"))["model.image_newline"]
    torch.testing.assert_close(backbone.image_newline.detach(), stored, rtol=0, atol=0)
