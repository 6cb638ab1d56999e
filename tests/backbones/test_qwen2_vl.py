"""Qwen2-VL backbone: M-RoPE positions by the transformers-4.x rule VLM2Vec used (checked against an independent
transcription of it), equality with the stock model's forward, padding, attention switch, real parameter counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID
from mmeb_dllm.backbones.llava_next import VLM2VEC_IMAGE_SIZE
from mmeb_dllm.backbones.qwen2_vl import Qwen2VLBackbone, parameter_count
from mmeb_dllm.backbones.tiny_ar import build_tiny_checkpoint
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.prompts import user_content
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import CheckpointError
from mmeb_dllm.zoo import get_spec

# config.json of Qwen/Qwen2-VL-2B-Instruct (hub file, transformers-4.x layout); 7B differs in the fields below
QWEN2_VL_2B = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "image_token_id": 151655,
    "initializer_range": 0.02,
    "intermediate_size": 8960,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2_vl",
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "video_token_id": 151656,
    "vision_config": {"hidden_size": 1536, "in_chans": 3, "model_type": "qwen2_vl", "spatial_patch_size": 14},
    "vision_end_token_id": 151653,
    "vision_start_token_id": 151652,
    "vision_token_id": 151654,
    "vocab_size": 151936,
}
QWEN2_VL_7B = {
    **QWEN2_VL_2B,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
    "vision_config": {"in_chans": 3, "model_type": "qwen2_vl", "spatial_patch_size": 14},
    "vocab_size": 152064,
}
MMEB_ROW = "<|image_1|>\nRepresent the given image with the following question: What is in the image"
WRAPPED_ROW = "<|vision_start|><|image_1|><|vision_end|>\nRepresent the given image."


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def recipe(**options) -> EmbeddingRecipe:
    return EmbeddingRecipe(model="test/qwen2-vl-tiny", checkpoint="tiny:qwen2-vl", revision="0", **options)


def legacy_rope_index(ids: list[int], grid: list[int], image_id: int, start_id: int, merge: int) -> torch.Tensor:
    """transformers 4.x ``Qwen2VLForConditionalGeneration.get_rope_index`` for one unpadded sample (one image at
    most), transcribed: images are counted by the token right after ``<|vision_start|>``."""
    images = sum(1 for a, b in itertools.pairwise(ids) if a == start_id and b == image_id)
    pieces: list[torch.Tensor] = []
    start = 0
    if images:
        end = ids.index(image_id)
        t, h, w = grid[0], grid[1] // merge, grid[2] // merge
        pieces.append(torch.arange(end).view(1, -1).expand(3, -1))
        t_index = torch.arange(t).view(-1, 1).expand(-1, h * w).flatten()
        h_index = torch.arange(h).view(1, -1, 1).expand(t, -1, w).flatten()
        w_index = torch.arange(w).view(1, 1, -1).expand(t, h, -1).flatten()
        pieces.append(torch.stack([t_index, h_index, w_index]) + end)
        start = end + t * h * w
    if start < len(ids):
        offset = int(pieces[-1].max()) + 1 if pieces else 0
        pieces.append(torch.arange(len(ids) - start).view(1, -1).expand(3, -1) + offset)
    return torch.cat(pieces, dim=1)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Qwen2VLBackbone:
    return Qwen2VLBackbone.from_pretrained(build_tiny_checkpoint("qwen2-vl", tmp_path_factory.mktemp("qwen2_vl")))


def expanded_sample(backbone: Qwen2VLBackbone, text: str, image: Image.Image | None) -> tuple[list[int], list[int]]:
    """(expanded ids, grid) of an MMEB item, built independently of :meth:`Qwen2VLBackbone.embed`."""
    prompt = user_content(text, has_image=image is not None, image_token=backbone.image_token)
    ids = backbone.tokenizer(prompt).input_ids
    if image is None:
        return ids, []
    grid = backbone.image_processor(images=[image.resize(VLM2VEC_IMAGE_SIZE)])["image_grid_thw"][0].tolist()
    count = int(np.prod(grid)) // backbone.merge_size**2
    at = ids.index(backbone.image_token_id)
    return [*ids[:at], *([backbone.image_token_id] * count), *ids[at + 1 :]], grid


def test_vlm2vec_prompt_of_an_mmeb_row(backbone: Qwen2VLBackbone) -> None:
    """Bare ``<|image_pad|>`` where MMEB has ``<|image_1|>`` (VLM2Vec's VLM_IMAGE_TOKENS), newline kept, no bos."""
    prompt = backbone.render_prompt(user_content(MMEB_ROW, has_image=True, image_token=backbone.image_token))
    assert prompt == "<|image_pad|>\nRepresent the given image with the following question: What is in the image"
    ids = backbone.tokenize(prompt)
    assert ids[0] == IMAGE_PLACEHOLDER_ID and ids.count(IMAGE_PLACEHOLDER_ID) == 1
    assert backbone.tokenizer.decode(ids[1:]) == prompt.removeprefix("<|image_pad|>")


@pytest.mark.parametrize("text", [MMEB_ROW, WRAPPED_ROW, "A cat and a dog"])
def test_positions_follow_the_transformers_4_rule(backbone: Qwen2VLBackbone, text: str) -> None:
    image = None if "image_1" not in text else noise(90, 50)
    ids, grid = expanded_sample(backbone, text, image)
    prompt = backbone.render_prompt(user_content(text, has_image=image is not None, image_token=backbone.image_token))
    sample = backbone.embed([backbone.tokenize(prompt)], [image])[0]
    expected = legacy_rope_index(ids, grid, backbone.image_token_id, backbone.vision_start_id, backbone.merge_size)
    assert sample.position_ids.shape == (3, len(ids)) == tuple(expected.shape)
    torch.testing.assert_close(sample.position_ids.cpu(), expected, rtol=0, atol=0)
    sequential = torch.arange(len(ids)).expand(3, -1)
    # bare <|image_pad|> (VLM2Vec) and text: plain positions; wrapped: the 3-D grid
    assert torch.equal(expected, sequential) == (text != WRAPPED_ROW)


@torch.no_grad()
@pytest.mark.parametrize("text", [MMEB_ROW, WRAPPED_ROW, "A cat and a dog", ""])
def test_equals_the_stock_model_forward(backbone: Qwen2VLBackbone, text: str) -> None:
    """The stock forward (ids with expanded image tokens, pixels, grid, 4.x-rule positions): last state, L2 norm."""
    image = None if text == "A cat and a dog" else noise(70, 40, seed=len(text))
    ids, grid = expanded_sample(backbone, text, image)
    kwargs = {}
    if image is not None:
        pixels = backbone.image_processor(images=[image.resize(VLM2VEC_IMAGE_SIZE)], return_tensors="pt")
        kwargs = {"pixel_values": pixels["pixel_values"], "image_grid_thw": pixels["image_grid_thw"]}
    positions = legacy_rope_index(ids, grid, backbone.image_token_id, backbone.vision_start_id, backbone.merge_size)
    out = backbone.model(
        input_ids=torch.tensor([ids]), position_ids=positions[:, None, :], output_hidden_states=True, **kwargs
    )
    expected = torch.nn.functional.normalize(out.hidden_states[-1][0, -1], dim=-1).numpy()
    ours = Embedder(backbone, recipe()).embed([Item(text, image)], show_progress=False)[0]
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_padded_batch_equals_one_by_one(backbone: Qwen2VLBackbone) -> None:
    items = [
        Item(MMEB_ROW, noise(90, 50)),
        Item("a much longer text-only query that needs more tokens than any other item here"),
        Item(WRAPPED_ROW, noise(30, 80, seed=2)),
        Item("short"),
        Item("", noise(200, 60, seed=3)),
    ]
    for resize in (VLM2VEC_IMAGE_SIZE, None):  # None: the images' own sizes, so grids and token counts differ
        backbone.image_resize = resize
        try:
            batched = Embedder(backbone, recipe()).embed(items, batch_size=8, show_progress=False)
            alone = np.stack([Embedder(backbone, recipe()).embed([item], show_progress=False)[0] for item in items])
        finally:
            backbone.image_resize = VLM2VEC_IMAGE_SIZE
        np.testing.assert_allclose(batched, alone, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


@torch.no_grad()
def test_attention_switch(backbone: Qwen2VLBackbone) -> None:
    ids = backbone.tokenize("<|image_pad|>\nwhat is this")
    changed = [*ids[:-1], ids[-1] + 1]
    image = noise(50, 50)

    def first_state() -> tuple[torch.Tensor, torch.Tensor]:
        states = []
        for sample in (ids, changed):
            embedded = backbone.embed([sample], [image])[0]
            mask = torch.ones(1, embedded.embeds.shape[0])
            out = backbone.forward_embeds(embedded.embeds[None], mask, position_ids=embedded.position_ids[None])
            states.append(out[0, 0])
        return states[0], states[1]

    try:
        a, b = first_state()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        backbone.set_attention("bidirectional")
        a, b = first_state()
        assert (a - b).abs().max() > 1e-4
    finally:
        backbone.set_attention("causal")


def test_num_image_tokens_is_the_real_count(backbone: Qwen2VLBackbone) -> None:
    try:
        for resize in (VLM2VEC_IMAGE_SIZE, None):
            backbone.image_resize = resize
            for image in (noise(90, 50), noise(300, 20), noise(33, 33)):
                assert backbone.num_image_tokens(image) == backbone.image_features([image])[0][0].shape[0]
    finally:
        backbone.image_resize = VLM2VEC_IMAGE_SIZE


def test_wrong_family_is_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    llava = build_tiny_checkpoint("llava-next", tmp_path_factory.mktemp("llava_for_qwen"))
    with pytest.raises(CheckpointError, match="model_type 'llava_next' is not a Qwen2VLBackbone checkpoint"):
        Qwen2VLBackbone.from_pretrained(llava)


def test_real_parameter_counts() -> None:
    """Qwen2-VL-2B-Instruct 2.21 B and 7B-Instruct 8.29 B parameters (the hub's sizes), as declared in the zoo."""
    small, large = parameter_count(QWEN2_VL_2B), parameter_count(QWEN2_VL_7B)
    assert abs(small / 1e9 - 2.21) < 0.005 and abs(large / 1e9 - 8.29) < 0.005
    for name in ("qwen2-vl-2b-embed", "vlm2vec-qwen2vl-2b"):
        assert get_spec(name).n_parameters == small
    for name in ("qwen2-vl-7b-embed", "vlm2vec-qwen2vl-7b"):
        assert get_spec(name).n_parameters == large
