"""Qwen2-VL (``Qwen2VLForConditionalGeneration``) as an embedding backbone, the VLM2Vec way (see ``llava_next``).

Inputs are built by hand because ``Qwen2VLProcessor`` cannot be constructed without torchvision in transformers 5:
``Qwen2VLImageProcessorPil`` gives flattened patches and the ``(t, h, w)`` grid; the image's
``prod(grid) // merge²`` features replace the one ``<|image_pad|>`` of the prompt.

Positions (M-RoPE, ``(3, L)`` per sample) come from the model's own ``get_rope_index``. Which tokens count as an
image follows the transformers-4.x rule VLM2Vec trained and evaluated with: an ``<|image_pad|>`` run gets 3-D
(temporal, height, width) positions only when it directly follows ``<|vision_start|>``. VLM2Vec's prompts carry the
bare ``<|image_pad|>`` (``VLM_IMAGE_TOKENS``, no ``<|vision_start|>``), so their image tokens get plain sequential
positions like text; a prompt that wraps the token as ``<|vision_start|><|image_pad|><|vision_end|>`` (Qwen2-VL's
chat format) gets the 3-D grid positions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID, EmbeddedSample
from mmeb_dllm.backbones.llava_next import (
    HFVisionLanguageBackbone,
    _load_image_processor,
    check_placeholders,
    token_id,
)
from mmeb_dllm.backbones.llava_next import parameter_count as _parameter_count

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

QWEN2_VL_IMAGE_TOKEN = "<|image_pad|>"
VISION_START_TOKEN = "<|vision_start|>"

# transformers-4.x key layout of Qwen2-VL (VLM2Vec's adapters) -> 5.x layout; 5.x keys match neither pattern.
QWEN2_VL_LEGACY_KEYS: dict[str, str] = {
    r"^visual": "model.visual",
    r"^model(?!\.(language_model|visual))": "model.language_model",
}


class Qwen2VLBackbone(HFVisionLanguageBackbone):
    """Qwen2-VL 2B/7B (``Qwen/Qwen2-VL-*-Instruct``; with ``TIGER-Lab/VLM2Vec-Qwen2VL-*`` adapters for VLM2Vec)."""

    image_token = QWEN2_VL_IMAGE_TOKEN
    adapter_key_mapping = QWEN2_VL_LEGACY_KEYS
    model_types = ("qwen2_vl",)

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any,
        image_token_id: int,
        vision_start_id: int,
    ) -> None:
        super().__init__(model, tokenizer, image_processor, image_token_id)
        self.vision_start_id = vision_start_id

    @classmethod
    def model_class(cls) -> type[PreTrainedModel]:
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration

    @classmethod
    def load_image_processor(cls, directory: Path) -> Any:
        from transformers import Qwen2VLImageProcessorPil

        return _load_image_processor(Qwen2VLImageProcessorPil, directory)

    @classmethod
    def build(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, image_processor: Any, directory: Path
    ) -> Qwen2VLBackbone:
        image_id = token_id(tokenizer, QWEN2_VL_IMAGE_TOKEN, model.config.image_token_id, directory)
        start_id = token_id(tokenizer, VISION_START_TOKEN, model.config.vision_start_token_id, directory)
        return cls(model, tokenizer, image_processor, image_id, start_id)

    def describe(self) -> dict[str, object]:
        processor = self.image_processor
        return {
            **super().describe(),
            "image_mode": "dynamic resolution",
            "min_pixels": int(processor.size["shortest_edge"]),
            "max_pixels": int(processor.size["longest_edge"]),
            "patch_size": int(processor.patch_size),
            "merge_size": self.merge_size,
            "positions": "M-RoPE; 3-D image positions only after <|vision_start|> (transformers 4.x rule)",
        }

    # --- images ------------------------------------------------------------------------------------------------------

    @property
    def merge_size(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    def image_grid(self, width: int, height: int) -> tuple[int, int, int]:
        """``(t, h, w)`` patch grid the image processor gives a ``width`` × ``height`` image (no pixels processed)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        processor = self.image_processor
        height, width = smart_resize(
            height,
            width,
            factor=processor.patch_size * processor.merge_size,
            min_pixels=processor.size["shortest_edge"],
            max_pixels=processor.size["longest_edge"],
        )
        return 1, height // processor.patch_size, width // processor.patch_size

    def num_image_tokens(self, image: Image) -> int:
        """Positions one image takes: ``prod(grid) // merge²``."""
        width, height = self.image_resize or image.size
        return math.prod(self.image_grid(width, height)) // self.merge_size**2

    def image_features(self, images: Sequence[Image]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(T_i, D)`` merged vision tokens per image and the ``(N, 3)`` grids (all images as one batch)."""
        batch = self.image_processor(images=[self.prepare_image(image) for image in images], return_tensors="pt")
        grids = batch["image_grid_thw"].to(self.device)
        out = self.model.model.get_image_features(batch["pixel_values"].to(self.device), grids)
        return list(out.pooler_output), grids

    # --- positions ---------------------------------------------------------------------------------------------------

    def position_ids(self, ids: Sequence[int], image_grid: torch.Tensor | None) -> torch.Tensor:
        """``(3, L)`` M-RoPE positions of one expanded sample (image tokens in place of the placeholder).

        ``ids`` is the expanded id list; ``image_grid`` the image's ``(3,)`` grid or ``None``. The image run counts
        as an image only after ``<|vision_start|>`` (transformers-4.x rule, see the module docstring).
        """
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        is_image = input_ids == self.image_token_id
        first = int(is_image[0].nonzero()[0]) if image_grid is not None and bool(is_image.any()) else -1
        opened = first > 0 and int(input_ids[0, first - 1]) == self.vision_start_id
        types = (is_image & opened).int()
        grids = image_grid.reshape(1, 3) if opened else None
        positions, _ = self.model.model.get_rope_index(input_ids, types, image_grid_thw=grids)
        return positions[:, 0]

    # --- Backbone API ------------------------------------------------------------------------------------------------

    def embed(self, ids: list[list[int]], images: list[Image | None]) -> list[EmbeddedSample]:
        """Per sample: embeddings with the image's merged vision tokens spliced in, and ``(3, L)`` positions."""
        check_placeholders(ids, images, self.image_token)
        present = [image for image in images if image is not None]
        features, grids = self.image_features(present) if present else ([], None)
        samples, index = [], 0
        for sample, image in zip(ids, images, strict=True):
            text = self.text_embeddings(sample)
            if image is None:
                samples.append(EmbeddedSample(text, self.position_ids(sample, None)))
                continue
            tokens, grid = features[index], grids[index]
            index += 1
            at = sample.index(IMAGE_PLACEHOLDER_ID)
            expanded = [*sample[:at], *([self.image_token_id] * tokens.shape[0]), *sample[at + 1 :]]
            samples.append(EmbeddedSample(self.splice(text, sample, tokens), self.position_ids(expanded, grid)))
        return samples

    def forward_embeds(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Decoder states of right-padded embeddings; ``position_ids`` ``(B, 3, L)`` as :meth:`embed` made them."""
        rope = position_ids.to(inputs_embeds.device).permute(1, 0, 2) if position_ids is not None else None
        return self.run_language_model(inputs_embeds, attention_mask, rope, output_hidden_states)


def parameter_count(config: Mapping[str, Any]) -> int:
    """Parameters of the Qwen2-VL model a ``config.json`` dict describes (meta device; tied weights counted once)."""
    from transformers import Qwen2VLForConditionalGeneration

    return _parameter_count(config, Qwen2VLForConditionalGeneration)
