"""Tiny MMaDA: offline build, loading, prompt layout, the shared embedder, padding, attention, sizes, VQ loading."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID
from mmeb_dllm.backbones.llada import LladaLM
from mmeb_dllm.backbones.magvit import MagvitConfig, MagvitTokenizer
from mmeb_dllm.backbones.mmada import MmadaBackbone, preprocess_image, resize_crop_geometry
from mmeb_dllm.backbones.tiny import tiny_checkpoint_dir
from mmeb_dllm.backbones.tiny_mmada import build_tiny_mmada_checkpoint
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import CheckpointError, ConfigError, DataError
from mmeb_dllm.zoo import get_spec

BIN = Path(sys.executable).parent

# LLaDA-8B (reference models.md §1.1) with MMaDA's vocabulary and image settings
LLADA_8B = {
    "model_type": "mmada",
    "d_model": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "n_kv_heads": 32,
    "mlp_hidden_size": 12288,
    "block_type": "llama",
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "rope": True,
    "rope_theta": 500000.0,
    "weight_tying": False,
    "max_sequence_length": 4096,
    "vocab_size": 126464,
    "embedding_size": 126464,
}
MMADA_8B = {
    **LLADA_8B,
    "vocab_size": 134656,
    "embedding_size": 134656,
    "llm_vocab_size": 126464,
    "codebook_size": 8192,
    "num_vq_tokens": 1024,
    "mask_token_id": 126336,
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint_dir("mmada", cache_root=tmp_path_factory.mktemp("mmada_cache"))


@pytest.fixture(scope="module")
def backbone(tiny_dir: Path) -> MmadaBackbone:
    """Loaded through the real loader (do not mutate; restore attention if switched)."""
    return MmadaBackbone.from_pretrained(tiny_dir)


def recipe(**options: object) -> EmbeddingRecipe:
    return EmbeddingRecipe(model="mmeb-dllm/mmada-embed-tiny", checkpoint="tiny:mmada", revision="tiny-v1", **options)


def items() -> list[Item]:
    return [
        Item("Represent the given sentence: a small red circle"),
        Item("<|image_1|>", noise_image(45, 30, seed=1)),
        Item("<|image_1|>\nRepresent the given image with the following question: What colour?", noise_image(20, 50)),
    ]


# --- building and loading --------------------------------------------------------------------------------------------


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = build_tiny_mmada_checkpoint("mmada", tmp_path / "a", seed=0)
    second = build_tiny_mmada_checkpoint("mmada", tmp_path / "b", seed=0)
    other = build_tiny_mmada_checkpoint("mmada", tmp_path / "c", seed=1)
    files = ("config.json", "model.safetensors", "vq_model/config.json", "vq_model/diffusion_pytorch_model.safetensors")
    for name in (*files, "tokenizer.json"):
        assert digest(first / name) == digest(second / name), name
    for name in ("model.safetensors", "vq_model/diffusion_pytorch_model.safetensors"):
        assert digest(first / name) != digest(other / name), name
    with pytest.raises(ConfigError, match="mmada-nope"):
        build_tiny_mmada_checkpoint("mmada-nope", tmp_path / "d")


@torch.no_grad()
def test_weights_round_trip(tiny_dir: Path, backbone: MmadaBackbone) -> None:
    stored = load_file(str(tiny_dir / "model.safetensors"))
    lm_state = backbone.language_model.state_dict()
    for module_key, source in backbone.language_model.key_map().sources.items():
        torch.testing.assert_close(lm_state[module_key], stored[source], rtol=0, atol=0)
    assert "model.transformer.ff_out.weight" in stored  # upstream's LM head is stored, and skipped
    vq_stored = load_file(str(tiny_dir / "vq_model" / "diffusion_pytorch_model.safetensors"))
    for key, value in backbone.vq.state_dict().items():
        torch.testing.assert_close(value, vq_stored[key], rtol=0, atol=0)
    assert set(vq_stored) - set(backbone.vq.state_dict()) == {"quantize.embedding", "quantize.power_vals"}


def test_token_ids_follow_llada_layout(backbone: MmadaBackbone) -> None:
    tokenizer = backbone.tokenizer
    tokens = backbone.tokens
    names = tokenizer.convert_ids_to_tokens([tokens.mmu, tokens.soi, tokens.eoi, backbone.mask_token_id])
    # upstream's reserved-token mapping: <|soi|> = reserved 0, <|eoi|> = reserved 1, <|mmu|> = reserved 5
    assert names == ["<|reserved_token_5|>", "<|reserved_token_0|>", "<|reserved_token_1|>", "<|mdm_mask|>"]
    assert tokens.image_offset == len(tokenizer)
    assert backbone.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    vocab = backbone.language_model.config.vocab_size
    assert tokens.image_offset + backbone.vq.config.codebook_size <= vocab


@torch.no_grad()
def test_bfloat16_keeps_the_vq_in_float32(tiny_dir: Path) -> None:
    model = MmadaBackbone.from_pretrained(tiny_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in model.language_model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.vq.parameters()} == {torch.float32}
    model.to(torch.float16)
    assert {p.dtype for p in model.vq.parameters()} == {torch.float32}
    assert model.dtype == torch.float16


@torch.no_grad()
def test_vq_found_in_model_mirror_else_named(
    tiny_dir: Path, backbone: MmadaBackbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``vq_model/`` the tokenizer comes from ``$MMEB_MODEL_DIR/showlab/magvitv2`` (or the hub cache)."""
    checkpoint = Path(shutil.copytree(tiny_dir, tmp_path / "ckpt", ignore=shutil.ignore_patterns("vq_model")))
    mirror = tmp_path / "models"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MMEB_MODEL_DIR", str(mirror))
    with pytest.raises(CheckpointError, match="showlab/magvitv2"):
        MmadaBackbone.from_pretrained(checkpoint)
    shutil.copytree(tiny_dir / "vq_model", mirror / "showlab" / "magvitv2")
    loaded = MmadaBackbone.from_pretrained(checkpoint)
    image = noise_image(40, 36)
    assert loaded.image_codes(image) == backbone.image_codes(image)
    assert loaded.describe()["resolution"] == backbone.resolution == 32


def test_wrong_model_type_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_dir, tmp_path / "ckpt"))
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "model_type": "llada"}))
    with pytest.raises(CheckpointError, match="not an MMaDA checkpoint"):
        MmadaBackbone.from_pretrained(copy)


# --- MAGVIT-v2 loading -----------------------------------------------------------------------------------------------


def vq_copy(tiny_dir: Path, tmp_path: Path, edit: Callable[[dict], dict]) -> Path:
    folder = Path(shutil.copytree(tiny_dir / "vq_model", tmp_path / "vq"))
    weights = folder / "diffusion_pytorch_model.safetensors"
    save_file(edit(load_file(str(weights))), str(weights))
    return folder


@torch.no_grad()
def test_vq_ignores_decoder_keys(tiny_dir: Path, backbone: MmadaBackbone, tmp_path: Path) -> None:
    folder = vq_copy(tiny_dir, tmp_path, lambda sd: {**sd, "decoder.conv_in.weight": torch.ones(4, 7, 3, 3)})
    loaded = MagvitTokenizer.from_pretrained(folder)
    pixels = preprocess_image(noise_image(40, 40), backbone.resolution)[None]
    assert torch.equal(loaded.codes(pixels), backbone.vq.codes(pixels))


def test_vq_missing_encoder_key_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    folder = vq_copy(tiny_dir, tmp_path, lambda sd: {k: v for k, v in sd.items() if k != "encoder.conv_out.bias"})
    with pytest.raises(CheckpointError, match=re.escape("'encoder.conv_out.bias'")):
        MagvitTokenizer.from_pretrained(folder)


def test_vq_lsb_first_buffers_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    folder = vq_copy(tiny_dir, tmp_path, lambda sd: {**sd, "quantize.power_vals": sd["quantize.power_vals"].flip(0)})
    with pytest.raises(CheckpointError, match="MSB-first"):
        MagvitTokenizer.from_pretrained(folder)


@torch.no_grad()
def test_vq_reads_bin_weights(tiny_dir: Path, backbone: MmadaBackbone, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_dir / "vq_model", tmp_path / "vq"))
    weights = folder / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "diffusion_pytorch_model.bin")
    weights.unlink()
    pixels = preprocess_image(noise_image(33, 47), backbone.resolution)[None]
    assert torch.equal(MagvitTokenizer.from_pretrained(folder).codes(pixels), backbone.vq.codes(pixels))


def test_lfq_channel_zero_is_the_most_significant_bit(backbone: MmadaBackbone) -> None:
    bits = backbone.vq.config.codebook_dim
    latents = -torch.ones(1, bits, 1, 3)
    latents[0, 0, 0, 0] = 0.5  # channel 0 only
    latents[0, bits - 1, 0, 1] = 0.5  # last channel only
    latents[0, 0, 0, 2] = 0.0  # exactly zero is bit 0
    assert backbone.vq.codes_from_latents(latents).tolist() == [[2 ** (bits - 1), 1, 0]]


# --- preprocessing and prompts ---------------------------------------------------------------------------------------


def test_resize_crop_geometry_rounds_half_to_even() -> None:
    assert resize_crop_geometry((90, 75), 64) == ((76, 64), (6, 0))
    assert resize_crop_geometry((81, 64), 64) == ((81, 64), (8, 0))  # 8.5 -> 8
    assert resize_crop_geometry((83, 64), 64) == ((83, 64), (10, 0))  # 9.5 -> 10
    assert resize_crop_geometry((64, 81), 64) == ((64, 81), (0, 8))
    assert resize_crop_geometry((20, 50), 32) == ((32, 80), (0, 24))


def test_preprocess_shape_and_range(backbone: MmadaBackbone) -> None:
    pixels = backbone.preprocess(noise_image(70, 20).convert("L"))
    assert pixels.shape == (1, 3, backbone.resolution, backbone.resolution)
    assert pixels.min() >= -1 and pixels.max() <= 1
    uniform = preprocess_image(Image.new("RGB", (50, 40), (255, 0, 51)), 32)
    assert uniform[:, 0, 0].tolist() == pytest.approx([1.0, -1.0, 51 / 255 * 2 - 1])


def test_prompt_puts_the_image_block_first(backbone: MmadaBackbone) -> None:
    tokenizer = backbone.tokenizer
    text_only = backbone.render_prompt("What is shown?")
    with_image = backbone.render_prompt(f"{backbone.image_token}\nWhat is shown?")
    image_later = backbone.render_prompt(f"What is shown? {backbone.image_token}")
    assert with_image == image_later == backbone.image_token + text_only
    assert text_only.startswith("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is shown?<|eot_id|>")
    assert text_only.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    expected = tokenizer(text_only, add_special_tokens=False).input_ids
    assert backbone.tokenize(text_only) == expected
    assert backbone.tokenize(with_image) == [IMAGE_PLACEHOLDER_ID, *expected]


@torch.no_grad()
def test_embed_splices_the_mmu_block(backbone: MmadaBackbone) -> None:
    image = noise_image(45, 30)
    ids = backbone.tokenize(backbone.render_prompt(f"{backbone.image_token}\nA photo."))
    [embeds] = backbone.embed([ids], [image])
    assert embeds.shape == (len(ids) - 1 + backbone.num_image_tokens(image), backbone.hidden_size)
    tokens = backbone.tokens
    codes = backbone.image_codes(image)
    assert len(codes) == backbone.num_vq_tokens and all(0 <= c < backbone.vq.config.codebook_size for c in codes)
    full = [tokens.mmu, tokens.soi, *(c + tokens.image_offset for c in codes), tokens.eoi, *ids[1:]]
    torch.testing.assert_close(embeds, backbone.language_model.embed_tokens(torch.tensor(full)), rtol=0, atol=0)


def test_placeholder_image_mismatch_names_sample(backbone: MmadaBackbone) -> None:
    text = backbone.tokenize(backbone.render_prompt("text only"))
    with_image = backbone.tokenize(backbone.render_prompt(f"{backbone.image_token}\nx"))
    with pytest.raises(DataError, match="sample 1"):
        backbone.embed([text, text], [None, noise_image(20, 20)])
    with pytest.raises(DataError, match="sample 0"):
        backbone.embed([with_image], [None])


# --- through the shared embedder -------------------------------------------------------------------------------------


def test_embedder_gives_finite_unit_vectors(backbone: MmadaBackbone) -> None:
    embedder = Embedder(backbone, recipe())
    vectors = embedder.embed(items(), batch_size=3, show_progress=False)
    assert vectors.shape == (3, backbone.hidden_size)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors[:, None] - vectors[None]).max(-1)[np.triu_indices(3, 1)].min() > 1e-3  # all distinct


@torch.no_grad()
def test_padded_batch_equals_one_by_one(backbone: MmadaBackbone) -> None:
    embedder = Embedder(backbone, recipe())
    ids = [embedder.prompt_ids(item) for item in items()]
    images = [item.image for item in items()]
    assert len({len(sample) for sample in ids}) == 3  # the batch really is padded
    batch = embedder.forward_prepared(ids, images)
    for row, (sample, image) in enumerate(zip(ids, images, strict=True)):
        torch.testing.assert_close(batch[row], embedder.forward_prepared([sample], [image])[0], rtol=0, atol=1e-5)
    embeds = backbone.embed(ids, images)
    width = max(e.shape[0] for e in embeds)
    padded = torch.zeros(len(embeds), width, backbone.hidden_size)
    mask = torch.zeros(len(embeds), width, dtype=torch.long)
    for row, emb in enumerate(embeds):
        padded[row, : emb.shape[0]], mask[row, : emb.shape[0]] = emb, 1
    hidden = backbone.forward_embeds(padded, mask)
    states = backbone.forward_embeds(padded, mask, output_hidden_states=True)
    assert len(states) == backbone.language_model.config.num_hidden_layers + 1
    torch.testing.assert_close(states[-1], hidden, rtol=0, atol=0)
    for row, emb in enumerate(embeds):
        alone = backbone.forward_embeds(emb[None], torch.ones(1, emb.shape[0], dtype=torch.long))
        torch.testing.assert_close(hidden[row, : emb.shape[0]], alone[0], rtol=0, atol=1e-5)


@torch.no_grad()
def test_attention_modes(backbone: MmadaBackbone) -> None:
    image = noise_image(30, 30)
    ids = backbone.tokenize(backbone.render_prompt(f"{backbone.image_token}\nWhich way does attention flow?"))
    changed = [*ids[:-1], ids[-1] + 1]

    def first_position_shift() -> float:
        a, b = backbone.embed([ids, changed], [image, image])
        hidden = backbone.forward_embeds(torch.stack([a, b]), torch.ones(2, a.shape[0], dtype=torch.long))
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


@torch.no_grad()
def test_mask_pooling(backbone: MmadaBackbone) -> None:
    embedder = Embedder(backbone, recipe(pooling="mask", num_mask_tokens=3))
    item = items()[2]
    ids = embedder.prompt_ids(item)
    assert ids[-3:] == [backbone.mask_token_id] * 3 and ids[-4] != backbone.mask_token_id
    vector = embedder.embed([item], show_progress=False)[0]
    [embeds] = backbone.embed([ids], [item.image])
    hidden = backbone.forward_embeds(embeds[None], torch.ones(1, embeds.shape[0], dtype=torch.long))[0]
    reference = torch.nn.functional.normalize(hidden[-3:].mean(0), dim=0)
    np.testing.assert_allclose(vector, reference.numpy(), atol=1e-6)
    last = Embedder(backbone, recipe()).embed([item], show_progress=False)[0]
    assert np.abs(vector - last).max() > 1e-3


# --- real sizes ------------------------------------------------------------------------------------------------------


def expected_lm_parameters(cfg: dict) -> int:
    """Independent count: token embedding + untied head, per layer 4 d² attention + 3 d·mlp SwiGLU + 2 norms."""
    d, mlp, vocab = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"]
    return 2 * vocab * d + cfg["n_layers"] * (4 * d * d + 3 * d * mlp + 2 * d) + d


def test_real_size_parameter_counts() -> None:
    counts = {}
    for name, cfg in (("llada", LLADA_8B), ("mmada", MMADA_8B)):
        lm = LladaLM.build(cfg, lm_head=True, device="meta")
        counts[name] = sum(p.numel() for p in lm.parameters())
        assert counts[name] == expected_lm_parameters(cfg), name
    assert counts["llada"] == pytest.approx(8.02e9, rel=0.01)
    assert counts["mmada"] == pytest.approx(8.08e9, rel=0.01)
    assert counts["mmada"] - counts["llada"] == 2 * 8192 * 4096  # enlarged wte and ff_out
    for name in ("mmada-embed", "mmada-mixcot-embed"):
        assert get_spec(name).n_parameters == pytest.approx(counts["mmada"], rel=0.01)
    with torch.device("meta"):
        vq = MagvitTokenizer(MagvitConfig())  # upstream's hard-coded full-size encoder
    assert sum(p.numel() for p in vq.parameters()) == pytest.approx(55.4e6, rel=0.01)


def test_real_size_backbone_settings() -> None:
    lm = LladaLM.build(MMADA_8B, lm_head=False, device="meta")
    with torch.device("meta"):
        vq = MagvitTokenizer(MagvitConfig())
    model = MmadaBackbone(MMADA_8B, lm, vq)
    assert (model.resolution, model.num_vq_tokens, model.hidden_size) == (512, 1024, get_spec("mmada-embed").embed_dim)
    assert (model.tokens.mmu, model.tokens.soi, model.tokens.eoi) == (126089, 126084, 126085)
    assert model.tokens.image_offset == 126349 and model.mask_token_id == 126336
    with pytest.raises(ConfigError, match="codebook_size"):
        MmadaBackbone({**MMADA_8B, "codebook_size": 4096}, lm, vq)


def test_tiny_spec_matches_the_checkpoint(backbone: MmadaBackbone, tiny_dir: Path) -> None:
    spec = get_spec("mmada-embed-tiny")
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert spec.embed_dim == backbone.hidden_size
    assert spec.n_parameters == expected_lm_parameters(cfg)


# --- stock mteb CLI --------------------------------------------------------------------------------------------------


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    drop = {"MMEB_DATA_DIR", "MMEB_MODEL_DIR", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MMEB_DLLM_CACHE=str(tmp_path / "cache"))
    return subprocess.run(
        [str(BIN / "mteb"), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )


@pytest.mark.slow
def test_stock_mteb_run_on_mini_digits(tmp_path: Path) -> None:
    out = _cli(["run", "-m", "mmada-embed-tiny", "-t", "MMEB-mini-Digits", "--output-folder", str(tmp_path)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    [result] = list((tmp_path / "results" / "mmeb-dllm__mmada-embed-tiny").rglob("MMEB-mini-Digits.json"))
    score = json.loads(result.read_text())["scores"]["test"][0]["main_score"]
    assert 0.0 <= score <= 1.0


@pytest.mark.slow
def test_stock_mteb_mock_run(tmp_path: Path) -> None:
    out = _cli(["mock-run", "-m", "mmada-embed-tiny"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "passed all expected checks" in out.stdout, out.stdout[-3000:]
