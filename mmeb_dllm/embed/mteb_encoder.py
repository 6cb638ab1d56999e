"""The mteb-facing encoder: turns mteb's batches into :class:`Item` lists for the shared :class:`Embedder`.

Weights are located when the model is created (so a missing checkpoint fails at once) but loaded on the first
``encode`` call, after mteb has loaded the task data: a missing dataset is reported before any weights are read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder

from mmeb_dllm.benchmark.images import open_image
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import MmebDllmError
from mmeb_dllm.zoo import get_spec, load_backbone, resolve_checkpoint

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)

RECIPE_OPTIONS = ("pooling", "num_mask_tokens", "attention", "instruction", "image_resolution", "dtype", "normalize")


class MMEBEncoder(AbsEncoder):
    """An mteb encoder for any zoo model; all items go through one :class:`Embedder`."""

    def __init__(self, model_name: str, revision: str | None = None, *, device: Any = None, **options: Any) -> None:
        spec = get_spec(model_name)
        adapter = options.pop("adapter", None)  # a peft adapter folder (mmeb_dllm.adapters), merged at load
        unknown = set(options) - set(RECIPE_OPTIONS)
        if unknown:
            from mmeb_dllm.errors import ConfigError

            raise ConfigError(f"unknown option(s) {sorted(unknown)} for {spec.full_name}; known: {RECIPE_OPTIONS}")
        if adapter is not None:
            from mmeb_dllm.adapters import adapter_hash

            options["adapter"], options["adapter_hash"] = str(adapter), adapter_hash(adapter)
        self.spec = spec
        self.checkpoint = resolve_checkpoint(spec)
        self.recipe = EmbeddingRecipe(
            model=spec.full_name,
            checkpoint=spec.checkpoint,
            revision=spec.revision,
            resolved_revision=self.checkpoint.revision,
            **{"pooling": spec.pooling, "attention": spec.attention, **options},
        )
        self.device = _device_name(device)
        self._embedder: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            logger.info("loading %s from %s (%s)", self.spec.full_name, self.checkpoint.path, self.checkpoint.source)
            backbone = load_backbone(self.spec, self.checkpoint, dtype=self.recipe.dtype, device=self.device)
            if self.recipe.adapter is not None:
                from mmeb_dllm.adapters import apply_adapter

                backbone = apply_adapter(backbone, self.recipe.adapter, expected_hash=self.recipe.adapter_hash)
            self._embedder = Embedder(backbone, self.recipe, device=self.device)
        return self._embedder

    def encode(
        self,
        inputs: DataLoader[Any],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        batch_size = int(kwargs.get("batch_size") or 8)
        show_progress = bool(kwargs.get("show_progress_bar", True))
        try:
            chunks = [
                self.embedder.embed(
                    batch_items(batch, task_metadata.name), batch_size=batch_size, show_progress=show_progress
                )
                for batch in inputs
            ]
        except MmebDllmError as exc:
            if task_metadata.name in str(exc):
                raise
            raise type(exc)(f"task {task_metadata.name}: {exc}") from exc
        if not chunks:
            return np.zeros((0, self.embedder.embed_dim), dtype=np.float32)
        return np.concatenate(chunks)


def batch_items(batch: dict[str, Any], task_name: str = "") -> list[Item]:
    """mteb batch (``text`` and/or ``image`` lists; other keys ignored) -> items.

    Images come decoded (PIL) or, from MMEB tasks, as undecoded ``{"path": ...}`` records that are opened here with
    :func:`open_image` (EXIF orientation, mode conversion, clear errors naming the task, item and file).
    """
    texts = batch.get("text")
    images = batch.get("image")
    ids = batch.get("id")
    size = len(texts) if texts is not None else len(images or [])
    items = []
    for i in range(size):
        image = images[i] if images is not None else None
        if isinstance(image, dict):
            where = f"task {task_name}, item {ids[i] if ids is not None else i}"
            image = open_image(image["path"], where=where) if image.get("path") else None
        items.append(Item(text=(texts[i] or "") if texts is not None else "", image=image))
    return items


def _device_name(device: Any) -> str:
    if device is None:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, int):
        return f"cuda:{device}"
    return str(device)
