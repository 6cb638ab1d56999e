"""The mteb-facing encoder: turns mteb's batches into :class:`Item` lists for the shared :class:`Embedder`.

Weights are located when the model is created (so a missing checkpoint fails at once) but loaded on the first
``encode`` call, after mteb has loaded the task data: a missing dataset is reported before any weights are read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from tqdm.auto import tqdm

from mmeb_dllm.benchmark.images import open_image
from mmeb_dllm.embed.cache import EmbeddingCache, default_cache
from mmeb_dllm.embed.distributed import RankGroup, rank_device
from mmeb_dllm.embed.embedder import Embedder, Item, as_rgb, item_key, truncation_space
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import MmebDllmError
from mmeb_dllm.zoo import get_spec, load_backbone, resolve_checkpoint

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)

WINDOW_ITEMS = 1024
"""Items gathered from mteb's batches before the embedder sorts them by length (at least 16 batches)."""
WINDOW_PIXELS = 64_000_000
"""Decoded pixels after which a window closes early (about 190 MB of RGB), so big images stay bounded in memory."""
T = TypeVar("T")
_END = object()

RECIPE_OPTIONS = (
    "pooling", "num_mask_tokens", "attention", "instruction", "image_resolution", "dtype", "normalize",
    "max_text_tokens",
)


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
            **{
                "pooling": spec.pooling,
                "attention": spec.attention,
                "image_resolution": spec.image_resolution,
                **options,
            },
        )
        self.device = _device_name(device)
        self._embedder: Embedder | None = None
        self._truncated: dict[str, dict[str, int]] = {}  # task name -> item key -> prompt tokens before the cut

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            logger.info("loading %s from %s (%s)", self.spec.full_name, self.checkpoint.path, self.checkpoint.source)
            backbone = load_backbone(self.spec, self.checkpoint, dtype=self.recipe.dtype, device=self.device)
            if self.recipe.adapter is not None:
                from mmeb_dllm.adapters import apply_adapter

                backbone = apply_adapter(backbone, self.recipe.adapter, expected_hash=self.recipe.adapter_hash)
            self._embedder = Embedder(
                backbone, self.recipe, device=self.device, cache=self.embedding_cache, group=self.rank_group
            )
        return self._embedder

    @cached_property
    def embedding_cache(self) -> EmbeddingCache | None:
        """The shared embedding cache (``$MMEB_DLLM_EMBED_CACHE``; ``off`` disables it)."""
        return default_cache()

    @cached_property
    def rank_group(self) -> RankGroup:
        """This process's rank under ``torchrun`` / ``accelerate launch`` (a single process otherwise)."""
        return RankGroup.from_env()

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
        """Vectors of all rows of ``inputs``, in order.

        mteb's batches are gathered into windows of many items (images decoded, content keys computed in a
        background thread while the network runs), so the embedder's length sort spans many mteb batches without
        holding a whole task's decoded images. A window the shared cache fully holds is answered without loading
        the weights (single process).
        """
        batch_size = int(kwargs.get("batch_size") or 8)
        total = len(inputs.dataset) if hasattr(inputs, "dataset") else 0  # type: ignore[arg-type]
        show_progress = bool(kwargs.get("show_progress_bar", True)) and self.rank_group.is_main
        quiet = not show_progress or total < 2 * batch_size
        windows = item_windows(inputs, task_metadata.name, max_items=max(WINDOW_ITEMS, 16 * batch_size))
        truncated = self._truncated.pop(task_metadata.name, {})
        self._truncated[task_metadata.name] = truncated  # most recently encoded task last
        chunks = []
        try:
            with tqdm(total=total, desc="Embedding", unit="item", leave=False, disable=quiet) as bar:
                for items, keys in prefetched(windows):
                    vectors = self._cached_window(keys)
                    if vectors is None:
                        vectors = self.embedder.embed_prepared(items, keys, batch_size=batch_size, progress=bar.update)
                        cut = self.embedder.truncated
                        truncated.update({key: cut[key] for key in keys if key in cut})
                    else:
                        truncated.update(self._cached_truncations(keys))
                        bar.update(len(keys))
                    chunks.append(vectors)
        except MmebDllmError as exc:
            if task_metadata.name in str(exc):
                raise
            raise type(exc)(f"task {task_metadata.name}: {exc}") from exc
        if not chunks:
            return np.zeros((0, self.embedder.embed_dim), dtype=np.float32)
        return np.concatenate(chunks)

    def _cached_window(self, keys: list[str]) -> np.ndarray | None:
        """The window's vectors if the weights are not loaded yet and the shared cache holds them all, else None.

        Skipped under a multi-process launch: there every rank must enter the embedder's collectives together.
        """
        if self._embedder is not None or self.embedding_cache is None or self.rank_group.is_distributed:
            return None
        found = self.embedding_cache.get(self.recipe.key(), keys)
        if len(found) < len(set(keys)):
            return None
        return np.stack([found[key] for key in keys]) if keys else None

    def _cached_truncations(self, keys: list[str]) -> dict[str, int]:
        """Prompt lengths before the cut of the items among ``keys`` that the shared cache marks as truncated."""
        assert self.embedding_cache is not None
        found = self.embedding_cache.get(truncation_space(self.recipe.key()), keys)
        return {key: int(value[0]) for key, value in found.items()}

    def truncation_report(self, task: str) -> dict[str, Any]:
        """Text truncation of the most recently encoded task named ``task`` (or ending in ``-<task>``, e.g. a
        dataset key): ``max_text_tokens`` (the limit in force; ``None`` if the weights were never loaded because
        the cache held every vector, or if the model declares no limit), ``truncated_items`` (distinct items cut)
        and ``longest_text_tokens`` (the longest prompt before its cut)."""
        name = next((n for n in reversed(self._truncated) if n == task or n.endswith(f"-{task}")), None)
        cut = self._truncated.get(name, {}) if name is not None else {}
        limit = self._embedder.max_text_tokens if self._embedder is not None else self.recipe.max_text_tokens
        longest = max(cut.values(), default=None)
        return {"max_text_tokens": limit, "truncated_items": len(cut), "longest_text_tokens": longest}


def item_windows(
    batches: Iterable[dict[str, Any]], task_name: str, *, max_items: int, max_pixels: int = WINDOW_PIXELS
) -> Iterator[tuple[list[Item], list[str]]]:
    """Consecutive mteb batches joined into windows of RGB items and their content keys.

    A window closes at the first batch boundary after ``max_items`` items or ``max_pixels`` decoded pixels.
    """
    items: list[Item] = []
    keys: list[str] = []
    pixels = 0
    for batch in batches:
        for item in batch_items(batch, task_name):
            item = as_rgb(item)
            items.append(item)
            keys.append(item_key(item))
            if item.image is not None:
                pixels += item.image.width * item.image.height
        if len(items) >= max_items or pixels >= max_pixels:
            yield items, keys
            items, keys, pixels = [], [], 0
    if items:
        yield items, keys


def prefetched(iterator: Iterator[T]) -> Iterator[T]:
    """``iterator``'s elements, the next one produced by a background thread while the caller uses the current one
    (image decoding and hashing release the GIL, so they overlap with the network)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmeb-prefetch") as pool:
        pending = pool.submit(next, iterator, _END)
        while True:
            element = pending.result()
            if element is _END:
                return
            pending = pool.submit(next, iterator, _END)
            yield element  # type: ignore[misc]


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

        return rank_device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int):
        return f"cuda:{device}"
    return rank_device(str(device))
