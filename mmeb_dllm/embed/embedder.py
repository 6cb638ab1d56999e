"""The one embedder every backbone goes through: prompts, de-duplication, batching, pooling, normalisation.

A backbone only renders its chat template, tokenises, splices images and runs its network
(:class:`mmeb_dllm.backbones.base.Backbone`). Everything that must be identical across backbones, so that score
differences come from the backbone and not the harness, happens here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from mmeb_dllm.backbones.base import EmbeddedSample
from mmeb_dllm.embed.pooling import pool
from mmeb_dllm.embed.prompts import user_content
from mmeb_dllm.errors import ConfigError, MmebDllmError

if TYPE_CHECKING:
    from PIL.Image import Image

    from mmeb_dllm.backbones.base import Backbone
    from mmeb_dllm.embed.recipe import EmbeddingRecipe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One thing to embed: MMEB-style text (may hold ``<|image_1|>``) and an optional image."""

    text: str
    image: Image | None = None


def item_key(item: Item) -> str:
    """Content hash of an item: its text and its decoded pixels."""
    digest = hashlib.blake2b(item.text.encode(), digest_size=16)
    if item.image is not None:
        digest.update(f"\x00{item.image.mode}{item.image.size}".encode())
        digest.update(item.image.tobytes())
    return digest.hexdigest()


class Embedder:
    """Embeds items with a backbone under an :class:`EmbeddingRecipe`.

    Each distinct item (same text and pixels) is encoded once per embedder; :attr:`items_encoded` counts the items
    that went through the network.
    """

    def __init__(self, backbone: Backbone, recipe: EmbeddingRecipe, device: str | torch.device = "cpu") -> None:
        if recipe.pooling == "mask" and backbone.mask_token_id is None:
            raise ConfigError(f"pooling 'mask' needs a diffusion model with a mask token; {recipe.model} has none")
        self.recipe = recipe
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device, dtype=getattr(torch, recipe.dtype)).eval()
        if recipe.attention != "default":
            self.backbone.set_attention(recipe.attention)
        self.items_encoded = 0
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def embed_dim(self) -> int:
        return self.backbone.hidden_size

    def prompt_ids(self, item: Item) -> list[int]:
        """Token ids of the item's full prompt (image placeholder id included, mask tokens appended)."""
        content = user_content(item.text, has_image=item.image is not None, image_token=self.backbone.image_token)
        ids = self.backbone.tokenize(self.backbone.render_prompt(content))
        if self.recipe.pooling == "mask":
            ids = ids + [self.backbone.mask_token_id] * self.recipe.num_mask_tokens
        return ids

    def embed(self, items: Sequence[Item], *, batch_size: int = 8, show_progress: bool = True) -> np.ndarray:
        """``(len(items), D)`` float32 vectors, L2-normalised if the recipe says so."""
        prepared = [_rgb(item) for item in items]
        keys = [item_key(item) for item in prepared]
        todo: dict[str, Item] = {}
        for key, item in zip(keys, prepared, strict=True):
            if key not in self._vectors and key not in todo:
                todo[key] = item
        if todo:
            self._encode(todo, batch_size=batch_size, show_progress=show_progress)
        if not keys:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.stack([self._vectors[key] for key in keys])

    def _encode(self, todo: dict[str, Item], *, batch_size: int, show_progress: bool) -> None:
        work = [(key, item, self.prompt_ids(item)) for key, item in todo.items()]
        work.sort(key=lambda entry: -self._estimated_length(entry[1], entry[2]))
        batches = [work[i : i + batch_size] for i in range(0, len(work), batch_size)]
        for batch in tqdm(
            batches, desc="Embedding", unit="batch", disable=not show_progress or len(batches) < 2, leave=False
        ):
            vectors = self._forward([entry[2] for entry in batch], [entry[1].image for entry in batch])
            for (key, item, _), vector in zip(batch, vectors, strict=True):
                if not np.isfinite(vector).all():
                    raise MmebDllmError(
                        f"{self.recipe.model} produced a non-finite embedding for item {item.text[:80]!r}; "
                        f"try dtype float32 or check the checkpoint"
                    )
                self._vectors[key] = vector
            self.items_encoded += len(batch)

    def _estimated_length(self, item: Item, ids: list[int]) -> int:
        return len(ids) + (self.backbone.num_image_tokens(item.image) if item.image is not None else 0)

    @torch.inference_mode()
    def _forward(self, ids: list[list[int]], images: list[Image | None]) -> np.ndarray:
        return self.forward_prepared(ids, images).cpu().numpy()

    def forward_items(self, items: Sequence[Item]) -> torch.Tensor:
        """``(B, D)`` float32 vectors of one batch, differentiable (no cache, no de-duplication): for training."""
        prepared = [_rgb(item) for item in items]
        return self.forward_prepared([self.prompt_ids(item) for item in prepared], [item.image for item in prepared])

    def forward_prepared(self, ids: list[list[int]], images: list[Image | None]) -> torch.Tensor:
        """Splice, right-pad, run, pool and normalise one batch of prompt ids and images."""
        samples = [s if isinstance(s, EmbeddedSample) else EmbeddedSample(s) for s in self.backbone.embed(ids, images)]
        lengths = torch.tensor([s.embeds.shape[0] for s in samples])
        width = int(lengths.max())
        first = samples[0].embeds
        padded = first.new_zeros((len(samples), width, first.shape[-1]))
        mask = torch.zeros((len(samples), width), dtype=torch.long, device=first.device)
        positions = None
        if samples[0].position_ids is not None:
            lead = samples[0].position_ids.shape[:-1]
            positions = torch.zeros((len(samples), *lead, width), dtype=torch.long, device=first.device)
        for row, sample in enumerate(samples):
            size = sample.embeds.shape[0]
            padded[row, :size] = sample.embeds
            mask[row, :size] = 1
            if positions is not None:
                positions[row, ..., :size] = sample.position_ids
        kwargs = {"position_ids": positions} if positions is not None else {}
        hidden = self.backbone.forward_embeds(padded, mask, **kwargs)
        pooled = pool(hidden, lengths, self.recipe.pooling, self.recipe.num_mask_tokens).float()
        if self.recipe.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled


def _rgb(item: Item) -> Item:
    if item.image is None or item.image.mode == "RGB":
        return item
    return Item(text=item.text, image=item.image.convert("RGB"))
