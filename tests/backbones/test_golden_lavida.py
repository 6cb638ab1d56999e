"""LaViDa loaded through our loader against upstream outputs, stage by stage (golden fixture).

Each stage is fed the stored output of the previous one, so a mismatch points at one stage; the end-to-end
``embed`` path is checked too. Sizes, ids and positions all come from the fixture files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmeb_dllm.backbones import anyres
from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID
from mmeb_dllm.backbones.lavida import LavidaBackbone, join_image_chunks

ATOL = 1e-4
PIXEL_ATOL = 1e-6


def close(actual: torch.Tensor, expected: torch.Tensor, name: str, atol: float = ATOL) -> None:
    delta = (actual.float() - expected.float()).abs().max().item() if actual.shape == expected.shape else None
    print(f"{name}: max |delta| = {delta}")
    torch.testing.assert_close(actual.float(), expected, rtol=0, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def backbone(lavida_golden: Path) -> LavidaBackbone:
    return LavidaBackbone.from_pretrained(lavida_golden)


@pytest.fixture(scope="module")
def expected(lavida_golden: Path) -> dict[str, torch.Tensor]:
    return load_file(str(lavida_golden / "expected.safetensors"))


@pytest.fixture(scope="module")
def inputs(lavida_golden: Path) -> dict[str, Any]:
    return json.loads((lavida_golden / "inputs.json").read_text(encoding="utf-8"))


def image_cases(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    cases = [case for case in inputs["cases"] if case.get("image_file")]
    assert cases, "inputs.json has no image case"
    return cases


def text_cases(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    return [case for case in inputs["cases"] if not case.get("image_file")]


def open_image(folder: Path, case: dict[str, Any]) -> Image.Image:
    image = Image.open(folder / case["image_file"])
    image.load()
    return image.convert("RGB")


def image_size(case: dict[str, Any], image: Image.Image) -> tuple[int, int]:
    """(width, height) from inputs.json, checked against the PNG."""
    sizes = case.get("image_sizes")
    size = (int(sizes[0][0]), int(sizes[0][1])) if sizes else image.size
    assert size == image.size, f"inputs.json image_sizes {size} != PNG size {image.size}"
    return size


def test_expected_tensors_listed(expected: dict[str, torch.Tensor], inputs: dict[str, Any]) -> None:
    print({name: (tuple(t.shape), str(t.dtype)) for name, t in sorted(expected.items())})
    for case in image_cases(inputs):
        for stage in ("pixel_values", "vision_features", "pooled_features", "inputs_embeds", "last_hidden_state"):
            assert f"{case['name']}.{stage}" in expected
    for case in text_cases(inputs):
        for stage in ("inputs_embeds", "last_hidden_state"):
            assert f"{case['name']}.{stage}" in expected


def test_pixel_values(backbone: LavidaBackbone, expected: dict, inputs: dict, lavida_golden: Path) -> None:
    for case in image_cases(inputs):
        pixels = backbone.preprocess(open_image(lavida_golden, case))
        close(pixels, expected[f"{case['name']}.pixel_values"], f"{case['name']}.pixel_values", atol=PIXEL_ATOL)


def test_anyres_geometry(backbone: LavidaBackbone, inputs: dict, lavida_golden: Path) -> None:
    for case in image_cases(inputs):
        size = image_size(case, open_image(lavida_golden, case))
        if "anyres_best_resolution_wh" in case:
            best = anyres.select_best_resolution(size, backbone.pinpoints)
            assert list(best) == case["anyres_best_resolution_wh"]
        if "anyres_grid_wh" in case:
            assert list(anyres.grid_shape(size, backbone.pinpoints, backbone.tile_size)) == case["anyres_grid_wh"]
        if "num_tiles_including_base" in case:
            assert backbone.preprocess(open_image(lavida_golden, case)).shape[0] == case["num_tiles_including_base"]


@torch.no_grad()
def test_vision_features(backbone: LavidaBackbone, expected: dict, inputs: dict) -> None:
    for case in image_cases(inputs):
        name = case["name"]
        features = backbone.vision_features(expected[f"{name}.pixel_values"])
        close(features, expected[f"{name}.vision_features"], f"{name}.vision_features")


@torch.no_grad()
def test_pooled_features(backbone: LavidaBackbone, expected: dict, inputs: dict) -> None:
    for case in image_cases(inputs):
        name = case["name"]
        pooled = backbone.project_and_pool(expected[f"{name}.vision_features"])
        close(pooled, expected[f"{name}.pooled_features"], f"{name}.pooled_features")


@torch.no_grad()
def test_merge_and_splice(backbone: LavidaBackbone, expected: dict, inputs: dict, lavida_golden: Path) -> None:
    for case in image_cases(inputs):
        name, ids = case["name"], case["input_ids"]
        image = open_image(lavida_golden, case)
        tokens = backbone.merge_image_features(expected[f"{name}.pooled_features"], image_size(case, image))
        assert tokens.shape[0] == backbone.num_image_tokens(image)
        if "num_image_tokens" in case:
            assert tokens.shape[0] == case["num_image_tokens"]
        if "image_token_position" in case:
            assert ids.index(IMAGE_PLACEHOLDER_ID) == case["image_token_position"]
        close(backbone.splice(ids, tokens)[None], expected[f"{name}.inputs_embeds"], f"{name}.inputs_embeds (merge)")


@torch.no_grad()
def test_embed_end_to_end(backbone: LavidaBackbone, expected: dict, inputs: dict, lavida_golden: Path) -> None:
    for case in inputs["cases"]:
        image = open_image(lavida_golden, case) if case.get("image_file") else None
        embeds = backbone.embed([case["input_ids"]], [image])[0]
        close(embeds[None], expected[f"{case['name']}.inputs_embeds"], f"{case['name']}.inputs_embeds")


@torch.no_grad()
def test_last_hidden_state(backbone: LavidaBackbone, expected: dict, inputs: dict) -> None:
    for case in inputs["cases"]:
        name = case["name"]
        embeds = expected[f"{name}.inputs_embeds"]
        hidden = backbone.forward_embeds(embeds, torch.ones(embeds.shape[:2], dtype=torch.long))
        close(hidden, expected[f"{name}.last_hidden_state"], f"{name}.last_hidden_state")


def test_tokenizer_image_token_quirk(inputs: dict) -> None:
    """Upstream drops the first token after <image> when the prompt starts with bos (see the fixture README)."""
    before = inputs.get("token_ids_before_tokenizer_image_token")
    if before is None:
        pytest.skip("inputs.json has no token_ids_before_tokenizer_image_token")
    bos = inputs["special_token_ids"].get("<|startoftext|>")
    chunks: list[list[int]] = [[]]
    for token in before:
        if token == IMAGE_PLACEHOLDER_ID:
            chunks.append([])
        else:
            chunks[-1].append(token)
    assert join_image_chunks(chunks, bos) == image_cases(inputs)[0]["input_ids"]
