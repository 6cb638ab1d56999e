"""LLaVA-NeXT backbone: VLM2Vec prompts, equality with the stock processor + model (VLM2Vec's batch-of-one path),
padding, attention switch, loading errors, and the real 7B's parameter count on the meta device."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID
from mmeb_dllm.backbones.llava_next import VLM2VEC_IMAGE_SIZE, LlavaNextBackbone, parameter_count
from mmeb_dllm.backbones.tiny_ar import build_tiny_checkpoint
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.prompts import user_content
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import CheckpointError, DataError
from mmeb_dllm.zoo import get_spec

# config.json of llava-hf/llava-v1.6-mistral-7b-hf (hub file, transformers-4.x layout)
LLAVA_V16_MISTRAL_7B = {
    "architectures": ["LlavaNextForConditionalGeneration"],
    "ignore_index": -100,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "image_token_index": 32000,
    "model_type": "llava_next",
    "projector_hidden_act": "gelu",
    "text_config": {
        "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
        "architectures": ["MistralForCausalLM"],
        "intermediate_size": 14336,
        "max_position_embeddings": 32768,
        "model_type": "mistral",
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "torch_dtype": "bfloat16",
        "vocab_size": 32064,
    },
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "use_image_newline_parameter": True,
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064,
}
MMEB_ROW = "<|image_1|>\nRepresent the given image with the following question: What is in the image"


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def recipe(**options) -> EmbeddingRecipe:
    return EmbeddingRecipe(model="test/llava-next-tiny", checkpoint="tiny:llava-next", revision="0", **options)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint("llava-next", tmp_path_factory.mktemp("llava_next"))


@pytest.fixture(scope="module")
def backbone(tiny_dir: Path) -> LlavaNextBackbone:
    return LlavaNextBackbone.from_pretrained(tiny_dir)


def test_loads_the_saved_weights(tiny_dir: Path, backbone: LlavaNextBackbone) -> None:
    stored = load_file(str(tiny_dir / "model.safetensors"))
    assert "language_model.model.embed_tokens.weight" in stored  # hub (transformers-4.x) key layout
    embeddings = stored["language_model.model.embed_tokens.weight"]
    torch.testing.assert_close(backbone.model.get_input_embeddings().weight, embeddings, rtol=0, atol=0)
    assert backbone.mask_token_id is None and backbone.default_attention == "causal"
    assert backbone.image_token == "<image>" and backbone.image_resize == VLM2VEC_IMAGE_SIZE


def test_vlm2vec_prompt_of_an_mmeb_row(backbone: LlavaNextBackbone) -> None:
    """Raw string, ``<image>`` where MMEB has ``<|image_1|>``, the newline kept, ``<s>`` first, no chat template."""
    prompt = backbone.render_prompt(user_content(MMEB_ROW, has_image=True, image_token=backbone.image_token))
    assert prompt == "<image>\nRepresent the given image with the following question: What is in the image"
    ids = backbone.tokenize(prompt)
    tail = backbone.tokenizer(prompt.removeprefix("<image>"), add_special_tokens=False).input_ids
    assert ids == [backbone.tokenizer.bos_token_id, IMAGE_PLACEHOLDER_ID, *tail]
    assert backbone.tokenizer.decode(tail) == prompt.removeprefix("<image>")
    text_only = backbone.tokenize(backbone.render_prompt(user_content("A cat", has_image=False, image_token="<image>")))
    cat = backbone.tokenizer("A cat", add_special_tokens=False).input_ids
    assert text_only == [backbone.tokenizer.bos_token_id, *cat]


@torch.no_grad()
def test_equals_the_stock_processor_and_model(tiny_dir: Path, backbone: LlavaNextBackbone) -> None:
    """VLM2Vec's path: LlavaNextProcessor on the 1344² image, the whole model, last hidden state at the last token."""
    from transformers import LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

    settings = json.loads((tiny_dir / "processor_config.json").read_text())
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil.from_pretrained(tiny_dir),
        tokenizer=backbone.tokenizer,
        **{key: settings[key] for key in ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens")
           },
    )
    model = LlavaNextForConditionalGeneration.from_pretrained(tiny_dir).eval()
    embedder = Embedder(backbone, recipe())
    cases = [(MMEB_ROW, noise(90, 50)), ("A cat and a dog", None), ("", noise(40, 70, seed=1))]
    for text, image in cases:
        prompt = user_content(text, has_image=image is not None, image_token="<image>")
        pixels = [image.resize((1344, 1344))] if image is not None else None
        inputs = processor(text=prompt, images=pixels, return_tensors="pt")
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1][0, -1]
        expected = torch.nn.functional.normalize(hidden, dim=-1).numpy()
        ours = embedder.embed([Item(text, image)], show_progress=False)[0]
        np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_padded_batch_equals_one_by_one(backbone: LlavaNextBackbone) -> None:
    items = [
        Item(MMEB_ROW, noise(90, 50)),
        Item("a much longer text-only query that needs more tokens than any other item here"),
        Item("<|image_1|>\nRepresent the given image.", noise(30, 80, seed=2)),
        Item("short"),
        Item("", noise(64, 64, seed=3)),
    ]
    for resize in (VLM2VEC_IMAGE_SIZE, None):  # None: the images' own sizes, so image token counts differ
        backbone.image_resize = resize
        try:
            batched = Embedder(backbone, recipe()).embed(items, batch_size=8, show_progress=False)
            alone = np.stack([Embedder(backbone, recipe()).embed([item], show_progress=False)[0] for item in items])
        finally:
            backbone.image_resize = VLM2VEC_IMAGE_SIZE
        np.testing.assert_allclose(batched, alone, atol=1e-5)
        assert np.isfinite(batched).all()
        np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


@torch.no_grad()
def test_attention_switch(backbone: LlavaNextBackbone) -> None:
    """Causal: position 0 ignores a change of the last token; bidirectional: it does not."""
    ids = backbone.tokenize("<image>\nwhat is this")
    changed = [*ids[:-1], ids[-1] + 1]
    image = noise(50, 50)

    def first_state() -> tuple[torch.Tensor, torch.Tensor]:
        states = []
        for sample in (ids, changed):
            embeds = backbone.embed([sample], [image])[0]
            states.append(backbone.forward_embeds(embeds[None], torch.ones(1, embeds.shape[0]))[0, 0])
        return states[0], states[1]

    try:
        a, b = first_state()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        backbone.set_attention("bidirectional")
        a, b = first_state()
        assert (a - b).abs().max() > 1e-4
    finally:
        backbone.set_attention("causal")


@torch.no_grad()
def test_hidden_states_end_with_the_final_state(backbone: LlavaNextBackbone) -> None:
    embeds = backbone.embed([backbone.tokenize("hello there")], [None])[0][None]
    mask = torch.ones(embeds.shape[:2])
    states = backbone.forward_embeds(embeds, mask, output_hidden_states=True)
    assert len(states) == backbone.model.config.text_config.num_hidden_layers + 1
    torch.testing.assert_close(states[-1], backbone.forward_embeds(embeds, mask), rtol=0, atol=0)


def test_num_image_tokens_is_the_real_count(backbone: LlavaNextBackbone) -> None:
    try:
        for resize in (VLM2VEC_IMAGE_SIZE, None):
            backbone.image_resize = resize
            for image in (noise(90, 50), noise(20, 300), noise(33, 33)):
                assert backbone.num_image_tokens(image) == backbone.image_features([image])[0].shape[0]
    finally:
        backbone.image_resize = VLM2VEC_IMAGE_SIZE


def test_placeholder_image_mismatch_names_the_sample(backbone: LlavaNextBackbone) -> None:
    text, with_image = backbone.tokenize("x"), backbone.tokenize("<image>\nx")
    with pytest.raises(DataError, match="sample 1"):
        backbone.embed([text, text], [None, noise(10, 10)])
    with pytest.raises(DataError, match="sample 0"):
        backbone.embed([with_image], [None])


def test_missing_tensor_or_file_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    stored = load_file(str(broken / "model.safetensors"))
    del stored["language_model.model.norm.weight"]
    save_file(stored, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"norm\.weight"):
        LlavaNextBackbone.from_pretrained(broken)
    (broken / "preprocessor_config.json").unlink()
    (broken / "processor_config.json").unlink()
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json"):
        LlavaNextBackbone.from_pretrained(broken)


def test_real_7b_parameter_count() -> None:
    """LLaVA-v1.6-Mistral-7B: 7.57 B parameters (the hub's size), as declared in the zoo."""
    count = parameter_count(LLAVA_V16_MISTRAL_7B)
    assert abs(count / 1e9 - 7.57) < 0.005
    assert get_spec("llava-next-embed").n_parameters == count
    assert get_spec("vlm2vec-llava-next").n_parameters == count
