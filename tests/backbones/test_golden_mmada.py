"""MMaDA loaded through our loader against upstream outputs, stage by stage (golden fixture).

Stages: pixels → MAGVIT-v2 latents → LFQ codes → full input ids → hidden states. Each stage is fed the stored output
of the previous one, so a mismatch points at one stage; the end-to-end ``embed`` path is checked too. Sizes, ids,
offsets and the resolution all come from the fixture files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID
from mmeb_dllm.backbones.mmada import MmadaBackbone

ATOL = 1e-4
PIXEL_ATOL = 1e-6
STAGES = ("pixel_values", "vq_latents", "vq_codes", "input_ids", "last_hidden_state", "all_hidden_states")


def close(actual: torch.Tensor, expected: torch.Tensor, name: str, atol: float = ATOL) -> None:
    delta = (actual.float() - expected.float()).abs().max().item() if actual.shape == expected.shape else None
    print(f"{name}: max |delta| = {delta}")
    torch.testing.assert_close(actual.float(), expected, rtol=0, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def backbone(mmada_golden: Path) -> MmadaBackbone:
    return MmadaBackbone.from_pretrained(mmada_golden)


@pytest.fixture(scope="module")
def expected(mmada_golden: Path) -> dict[str, torch.Tensor]:
    return load_file(str(mmada_golden / "expected.safetensors"))


@pytest.fixture(scope="module")
def inputs(mmada_golden: Path) -> dict[str, Any]:
    return json.loads((mmada_golden / "inputs.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def image(mmada_golden: Path, inputs: dict[str, Any]) -> Image.Image:
    loaded = Image.open(mmada_golden / inputs["image_file"])
    loaded.load()
    if "image_size_wh" in inputs:
        assert list(loaded.size) == inputs["image_size_wh"]
    return loaded.convert("RGB")


def prompt_ids(inputs: dict[str, Any]) -> list[int]:
    """What the shared embedder hands the backbone: the placeholder, then the chat-templated text ids."""
    return [IMAGE_PLACEHOLDER_ID, *inputs["text_token_ids"]]


def test_expected_tensors_listed(expected: dict[str, torch.Tensor]) -> None:
    print({name: (tuple(t.shape), str(t.dtype)) for name, t in sorted(expected.items())})
    assert set(STAGES) <= set(expected)


def test_geometry_from_config(backbone: MmadaBackbone, expected: dict, inputs: dict) -> None:
    assert backbone.resolution == inputs["resolution"] == expected["pixel_values"].shape[-1]
    assert backbone.num_vq_tokens == inputs["num_image_tokens"] == expected["vq_codes"].shape[1]
    assert backbone.vq.config.codebook_size == inputs["codebook_size"]


def test_pixel_values(backbone: MmadaBackbone, expected: dict, image: Image.Image) -> None:
    close(backbone.preprocess(image), expected["pixel_values"], "pixel_values", atol=PIXEL_ATOL)


@torch.no_grad()
def test_vq_latents(backbone: MmadaBackbone, expected: dict) -> None:
    close(backbone.vq.latents(expected["pixel_values"]), expected["vq_latents"], "vq_latents")


@torch.no_grad()
def test_vq_codes(backbone: MmadaBackbone, expected: dict, image: Image.Image) -> None:
    codes = expected["vq_codes"]
    assert torch.equal(backbone.vq.codes_from_latents(expected["vq_latents"]), codes), "codes from stored latents"
    assert torch.equal(backbone.vq.codes(expected["pixel_values"]), codes), "codes from stored pixels"
    assert backbone.image_codes(image) == codes[0].tolist(), "codes from the PNG"


def test_input_ids(backbone: MmadaBackbone, expected: dict, inputs: dict) -> None:
    special = inputs["special_token_ids"]
    tokens = backbone.tokens
    assert (tokens.mmu, tokens.soi, tokens.eoi) == (special["<|mmu|>"], special["<|soi|>"], special["<|eoi|>"])
    assert tokens.image_offset == inputs["image_token_offset"]
    assert backbone.mask_token_id == inputs["mask_token_id"]
    ids = backbone.input_ids(prompt_ids(inputs), expected["vq_codes"][0].tolist())
    assert ids == expected["input_ids"][0].tolist() == inputs["input_ids"]


@torch.no_grad()
def test_embed_end_to_end(backbone: MmadaBackbone, expected: dict, inputs: dict, image: Image.Image) -> None:
    """PNG + prompt ids through the backbone's own ``embed`` equal the embeddings of the expected ids."""
    [embeds] = backbone.embed([prompt_ids(inputs)], [image])
    assert embeds.shape[0] == len(prompt_ids(inputs)) - 1 + backbone.num_image_tokens(image)
    reference = backbone.language_model.embed_tokens(expected["input_ids"][0])
    torch.testing.assert_close(embeds, reference, rtol=0, atol=0)
    hidden = backbone.forward_embeds(embeds[None], torch.ones(1, embeds.shape[0], dtype=torch.long))
    close(hidden, expected["last_hidden_state"], "last_hidden_state (embed path)")


@torch.no_grad()
def test_last_hidden_state(backbone: MmadaBackbone, expected: dict) -> None:
    embeds = backbone.language_model.embed_tokens(expected["input_ids"])
    hidden = backbone.forward_embeds(embeds, torch.ones(expected["input_ids"].shape, dtype=torch.long))
    close(hidden, expected["last_hidden_state"], "last_hidden_state")


@torch.no_grad()
def test_all_hidden_states(backbone: MmadaBackbone, expected: dict) -> None:
    embeds = backbone.language_model.embed_tokens(expected["input_ids"])
    mask = torch.ones(expected["input_ids"].shape, dtype=torch.long)
    states = backbone.forward_embeds(embeds, mask, output_hidden_states=True)
    assert len(states) == expected["all_hidden_states"].shape[0]
    for layer, (state, reference) in enumerate(zip(states, expected["all_hidden_states"], strict=True)):
        close(state, reference, f"all_hidden_states[{layer}]")
