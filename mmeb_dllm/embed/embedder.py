"""The one embedder every backbone goes through: prompts, de-duplication, caching, batching, pooling, normalisation.

A backbone only renders its chat template, tokenises, splices images and runs its network
(:class:`mmeb_dllm.backbones.base.Backbone`). Everything that must be identical across backbones, so that score
differences come from the backbone and not the harness, happens here.

Where a vector comes from, cheapest first: this embedder's memory (same item seen before), the shared embedding
cache (:mod:`mmeb_dllm.embed.cache`, other tasks and earlier runs), the network. Items that need the network are
sorted by estimated length (prompt tokens + image tokens) so batches carry little padding; under a multi-process
launch each rank encodes a share of them and the vectors are gathered (:mod:`mmeb_dllm.embed.distributed`).

Prompts longer than the recipe's ``max_text_tokens`` (default: the model's own limit) are cut at the end of the
text, never before the instruction or into the image placeholder; :attr:`Embedder.truncated` remembers which items
were cut, and the shared cache keeps a marker per cut item (:func:`truncation_space`) so a task answered from the
cache alone still reports them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID, EmbeddedSample
from mmeb_dllm.embed.distributed import RankGroup
from mmeb_dllm.embed.pooling import pool
from mmeb_dllm.embed.prompts import MMEB_IMAGE_TOKEN, user_content
from mmeb_dllm.errors import ConfigError, MmebDllmError

if TYPE_CHECKING:
    from PIL.Image import Image

    from mmeb_dllm.backbones.base import Backbone
    from mmeb_dllm.embed.cache import EmbeddingCache
    from mmeb_dllm.embed.recipe import EmbeddingRecipe

logger = logging.getLogger(__name__)

ENCODE_LOG_ENV = "MMEB_DLLM_ENCODE_LOG"
"""If set, a file that gets one JSON line per batch pushed through the network (rank, recipe key, item keys)."""
UNSET_TOKENIZER_LIMIT = 10**9
"""A tokenizer ``model_max_length`` at or above this means "not declared" (transformers' default is 1e30)."""


def truncation_space(space: str) -> str:
    """Cache space holding, per truncated item of embedding space ``space``, its prompt length before the cut."""
    return f"{space}:truncated"


def model_text_limit(backbone: Backbone) -> int | None:
    """The model's own limit on prompt tokens: the smaller of its tokenizer's ``model_max_length`` and its language
    model's maximum positions (``max_position_embeddings`` / ``max_sequence_length``), of those declared; else None."""
    limits = []
    declared = getattr(getattr(backbone, "tokenizer", None), "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < UNSET_TOKENIZER_LIMIT:
        limits.append(declared)
    config = getattr(getattr(backbone, "language_model", None), "config", None)
    for name in ("max_position_embeddings", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
    return min(limits, default=None)


def text_tokens(ids: Sequence[int]) -> int:
    """Prompt length as ``max_text_tokens`` counts it: every id but the image placeholder."""
    return len(ids) - list(ids).count(IMAGE_PLACEHOLDER_ID)


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


def as_rgb(item: Item) -> Item:
    """The item with its image in RGB (the mode every backbone's preprocessing and :func:`item_key` expect)."""
    if item.image is None or item.image.mode == "RGB":
        return item
    return Item(text=item.text, image=item.image.convert("RGB"))


_rgb = as_rgb


@dataclass
class _Work:
    key: str
    item: Item
    ids: list[int]
    length: int


class Embedder:
    """Embeds items with a backbone under an :class:`EmbeddingRecipe`.

    Args:
        backbone: the model family's backbone (moved to ``device`` and the recipe's dtype here).
        recipe: pooling, attention, dtype ... and the key of the embedding space.
        device: where the network runs.
        cache: shared persistent cache (:class:`EmbeddingCache`), or ``None`` for memory only.
        group: this process's rank group for multi-process encoding; ``None`` = a single process. With several
            ranks, :meth:`embed` is collective: every rank must call it with the same items in the same order.

    Each distinct item (same text and pixels) is encoded once per embedder; :attr:`items_encoded` counts the items
    that went through the network in this process. Batches hold at most ``batch_size`` items of similar length;
    :attr:`tokens_real` / :attr:`tokens_computed` count the real and the padded sequence positions the network ran
    on (their ratio is the padding overhead). :attr:`max_text_tokens` is the prompt limit in force (the recipe's,
    else the model's own, else ``None``); :attr:`truncated` maps the content key of every item this embedder cut
    to its prompt length before the cut.
    """

    def __init__(
        self,
        backbone: Backbone,
        recipe: EmbeddingRecipe,
        device: str | torch.device = "cpu",
        *,
        cache: EmbeddingCache | None = None,
        group: RankGroup | None = None,
    ) -> None:
        if recipe.pooling == "mask" and backbone.mask_token_id is None:
            raise ConfigError(f"pooling 'mask' needs a diffusion model with a mask token; {recipe.model} has none")
        self.recipe = recipe
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device, dtype=getattr(torch, recipe.dtype)).eval()
        if recipe.attention != "default":
            self.backbone.set_attention(recipe.attention)
        self.cache = cache
        self.group = group or RankGroup()
        self.group.init(self.device)
        self.space = recipe.key()
        if cache is not None:
            cache.describe_space(self.space, recipe.to_dict())
        self.items_encoded = 0
        self.tokens_real = 0
        self.tokens_computed = 0
        self.max_text_tokens = recipe.max_text_tokens or model_text_limit(self.backbone)
        self.truncated: dict[str, int] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._encode_log = os.environ.get(ENCODE_LOG_ENV) or None

    @property
    def embed_dim(self) -> int:
        return self.backbone.hidden_size

    def prompt_ids(self, item: Item) -> list[int]:
        """Token ids of the item's full prompt (image placeholder id included, mask tokens appended), its text cut
        to :attr:`max_text_tokens`."""
        return self.prompt(item)[0]

    def prompt(self, item: Item) -> tuple[list[int], int]:
        """:meth:`prompt_ids` and the prompt's :func:`text_tokens` before any cut (larger than the ids' = cut)."""
        ids = self._render_ids(item.text, item.image is not None)
        length = text_tokens(ids)
        if self.max_text_tokens is None or length <= self.max_text_tokens:
            return ids, length
        return self._cut(item, self.max_text_tokens), length

    def _render_ids(self, text: str, has_image: bool) -> list[int]:
        content = user_content(text, has_image=has_image, image_token=self.backbone.image_token)
        ids = self.backbone.tokenize(self.backbone.render_prompt(content))
        if self.recipe.pooling == "mask":
            ids = ids + [self.backbone.mask_token_id] * self.recipe.num_mask_tokens
        return ids

    def _cut(self, item: Item, limit: int) -> list[int]:
        """Ids of the longest prefix of the item's text whose prompt fits ``limit`` (binary search on characters).

        The cut never falls inside an MMEB image placeholder, nor, for an item with an image, before its first
        placeholder (that is where the image goes); if even that shortest prefix does not fit, a ConfigError names
        the item.
        """
        text, has_image = item.text, item.image is not None
        spans = [(i, i + len(MMEB_IMAGE_TOKEN)) for i in _occurrences(text, MMEB_IMAGE_TOKEN)]
        floor = spans[0][1] if has_image and spans else 0
        best = self._render_ids(text[:floor], has_image)
        if text_tokens(best) > limit:
            raise ConfigError(
                f"{self.recipe.model}: item {text[:80]!r} cannot be cut to max_text_tokens={limit}: its prompt "
                f"without any text after the image placeholder already has {text_tokens(best)} tokens (chat "
                f"template, instruction, mask tokens); raise max_text_tokens to at least {text_tokens(best)}"
            )
        low, high = floor, len(text)  # text[:low] fits, text[:high] does not
        while high - low > 1:
            middle = (low + high) // 2
            inside = next(((start, end) for start, end in spans if start < middle < end), None)
            if inside is not None:  # move the cut to the placeholder's start, else (if that is not above low) its end
                middle = inside[0] if inside[0] > low else inside[1]
                if middle >= high:
                    break
            ids = self._render_ids(text[:middle], has_image)
            if text_tokens(ids) <= limit:
                low, best = middle, ids
            else:
                high = middle
        return best

    def estimated_length(self, item: Item, ids: list[int]) -> int:
        """Sequence length the item will have: prompt tokens with the image placeholder replaced by its positions."""
        if item.image is None:
            return len(ids)
        return len(ids) - ids.count(IMAGE_PLACEHOLDER_ID) + self.backbone.num_image_tokens(item.image)

    # --- embedding with de-duplication and caching ------------------------------------------------------------------

    def embed(self, items: Sequence[Item], *, batch_size: int = 8, show_progress: bool = True) -> np.ndarray:
        """``(len(items), D)`` float32 vectors, L2-normalised if the recipe says so."""
        prepared = [as_rgb(item) for item in items]
        keys = [item_key(item) for item in prepared]
        enabled = show_progress and self.group.is_main and len(items) > batch_size
        with tqdm(total=len(items), desc="Embedding", unit="item", disable=not enabled, leave=False) as bar:
            return self.embed_prepared(prepared, keys, batch_size=batch_size, progress=bar.update)

    def embed_prepared(
        self,
        items: Sequence[Item],
        keys: Sequence[str],
        *,
        batch_size: int = 8,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """Like :meth:`embed` for items already in RGB whose :func:`item_key` is ``keys[i]``.

        ``progress(n)`` is called as rows get their vectors (``n`` rows at a time, duplicates included).
        """
        if len(items) != len(keys):
            raise ValueError(f"embed_prepared got {len(items)} items but {len(keys)} keys")
        rows = Counter(keys)
        unique: dict[str, Item] = {}
        for key, item in zip(keys, items, strict=True):
            unique.setdefault(key, item)
        missing = [key for key in unique if key not in self._vectors]
        found = self._cached(missing)
        if found and self.cache is not None:  # cut items carry a marker next to their vector: no re-tokenising
            markers = self.cache.get(truncation_space(self.space), list(found))
            self.truncated.update({key: int(marker[0]) for key, marker in markers.items()})
        self._vectors.update(found)
        todo = {key: unique[key] for key in missing if key not in found}
        if progress is not None:
            progress(sum(count for key, count in rows.items() if key not in todo))
        if todo:
            self._encode(todo, batch_size=batch_size, progress=progress, rows=rows)
        if not keys:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return np.stack([self._vectors[key] for key in keys])

    def _cached(self, keys: list[str]) -> dict[str, np.ndarray]:
        """Vectors of ``keys`` the shared cache holds (on every rank, under a multi-process launch)."""
        if self.cache is None or not keys:
            return {}
        found = self.cache.get(self.space, keys)
        if self.group.is_distributed:
            everywhere = self.group.found_everywhere(np.array([key in found for key in keys], dtype=bool))
            found = {key: found[key] for key, ok in zip(keys, everywhere, strict=True) if ok}
        return found

    def _encode(
        self,
        todo: dict[str, Item],
        *,
        batch_size: int,
        progress: Callable[[int], object] | None,
        rows: Counter[str],
    ) -> None:
        """Push ``todo`` through the network (this rank's share of it) and collect every vector."""
        batches, owners = self._plan(todo, batch_size)
        local: list[np.ndarray] = []
        bad: _Work | None = None
        for batch, owner in zip(batches, owners, strict=True):
            if owner != self.group.rank:
                continue
            vectors = self._forward_halving(batch)
            finite = np.isfinite(vectors).all(axis=1)
            if not finite.all():
                bad = bad or batch[int(np.argmin(finite))]
                if not self.group.is_distributed:
                    break
            else:
                self._store(batch, vectors)
            local.append(vectors)
            self.items_encoded += len(batch)
            if progress is not None:
                progress(sum(rows[entry.key] for entry in batch))
        if self.group.is_distributed:
            bad = self._gather(batches, owners, local, progress, rows) or bad
        if bad is not None:
            raise MmebDllmError(
                f"{self.recipe.model} produced a non-finite embedding for item {bad.item.text[:80]!r}; "
                f"try dtype float32 or check the checkpoint"
            )

    def _plan(self, todo: dict[str, Item], batch_size: int) -> tuple[list[list[_Work]], list[int]]:
        """Batches of at most ``batch_size`` items cut from a longest-first order (as equal in size as possible,
        enough of them for every rank), and the rank that encodes each. Identical on every rank."""
        work = []
        for key, item in todo.items():
            ids = self._note_truncation(key, item)
            work.append(_Work(key, item, ids, self.estimated_length(item, ids)))
        work.sort(key=lambda entry: -entry.length)  # stable: equal lengths keep first-seen order on every rank
        size = math.ceil(len(work) / self.group.batch_count(len(work), batch_size))
        batches = [work[i : i + size] for i in range(0, len(work), size)]
        return batches, self.group.assign([batch[0].length * len(batch) for batch in batches])

    def _note_truncation(self, key: str, item: Item) -> list[int]:
        """The item's prompt ids; remember the item in :attr:`truncated` if they were cut."""
        ids, length = self.prompt(item)
        if length > text_tokens(ids):
            self.truncated[key] = length
        return ids

    def _gather(
        self,
        batches: list[list[_Work]],
        owners: list[int],
        local: list[np.ndarray],
        progress: Callable[[int], object] | None,
        rows: Counter[str],
    ) -> _Work | None:
        """Exchange the ranks' vectors; keep the finite ones; return an item whose vector is not finite, if any."""
        entries = [[entry for b, o in zip(batches, owners, strict=True) if o == rank for entry in b]
                   for rank in range(self.group.world_size)]
        mine = np.concatenate(local) if local else np.zeros((0, self.embed_dim), dtype=np.float32)
        bad = None
        for rank, vectors in enumerate(self.group.gather(mine, [len(e) for e in entries], self.embed_dim)):
            for entry, vector in zip(entries[rank], vectors, strict=True):
                if np.isfinite(vector).all():
                    self._vectors[entry.key] = vector
                else:
                    bad = bad or entry
            if progress is not None and rank != self.group.rank:
                progress(sum(rows[entry.key] for entry in entries[rank]))
        return bad

    def _store(self, batch: list[_Work], vectors: np.ndarray) -> None:
        """Keep one finished batch in memory, commit it to the shared cache, and log it if asked."""
        fresh = {entry.key: vector for entry, vector in zip(batch, vectors, strict=True)}
        self._vectors.update(fresh)
        if self.cache is not None:
            cut = {key: np.array([self.truncated[key]], dtype=np.float32) for key in fresh if key in self.truncated}
            if cut:  # before the vectors: a cached vector of a cut item always has its marker
                self.cache.put(truncation_space(self.space), cut)
            self.cache.put(self.space, fresh)
        if self._encode_log:
            line = {"rank": self.group.rank, "pid": os.getpid(), "space": self.space, "items": list(fresh)}
            with open(self._encode_log, "a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")

    # --- the network ----------------------------------------------------------------------------------------------

    def _forward_halving(self, batch: list[_Work]) -> np.ndarray:
        """Vectors of one planned batch; on out-of-memory, split it in halves and retry (with a warning)."""
        try:
            return self._forward([entry.ids for entry in batch], [entry.item.image for entry in batch])
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise MmebDllmError(
                    f"{self.recipe.model}: out of memory on a single item ({batch[0].length} positions, text "
                    f"{batch[0].item.text[:60]!r}); lower the image resolution or use a larger device"
                ) from None
            half = len(batch) // 2
            logger.warning("out of memory on a batch of %d items; retrying as %d + %d", len(batch), half,
                           len(batch) - half)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return np.concatenate([self._forward_halving(batch[:half]), self._forward_halving(batch[half:])])

    @torch.inference_mode()
    def _forward(self, ids: list[list[int]], images: list[Image | None]) -> np.ndarray:
        return self.forward_prepared(ids, images).cpu().numpy()

    def forward_items(self, items: Sequence[Item]) -> torch.Tensor:
        """``(B, D)`` float32 vectors of one batch, differentiable (no cache, no de-duplication): for training."""
        prepared = [as_rgb(item) for item in items]
        return self.forward_prepared([self.prompt_ids(item) for item in prepared], [item.image for item in prepared])

    def forward_layers(self, items: Sequence[Item]) -> torch.Tensor:
        """``(n_layers + 1, B, D)`` pooled, normalised vectors of every hidden state (index 0 = the embeddings)."""
        prepared = [as_rgb(item) for item in items]
        return self.forward_prepared(
            [self.prompt_ids(item) for item in prepared], [item.image for item in prepared], all_layers=True
        )

    def forward_prepared(
        self, ids: list[list[int]], images: list[Image | None], *, all_layers: bool = False
    ) -> torch.Tensor:
        """Splice, right-pad, run, pool and normalise one batch of prompt ids and images (``all_layers``: every
        hidden state, stacked on a new first axis)."""
        samples = [s if isinstance(s, EmbeddedSample) else EmbeddedSample(s) for s in self.backbone.embed(ids, images)]
        lengths = torch.tensor([s.embeds.shape[0] for s in samples])
        width = int(lengths.max())
        self.tokens_real += int(lengths.sum())
        self.tokens_computed += width * len(samples)
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
        if all_layers:
            states = self.backbone.forward_embeds(padded, mask, output_hidden_states=True, **kwargs)
            return torch.stack([self._pool(state, lengths) for state in states])
        return self._pool(self.backbone.forward_embeds(padded, mask, **kwargs), lengths)

    def _pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pooled = pool(hidden, lengths, self.recipe.pooling, self.recipe.num_mask_tokens).float()
        if self.recipe.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled


def _occurrences(text: str, token: str) -> list[int]:
    """Start offsets of every occurrence of ``token`` in ``text``."""
    starts, at = [], text.find(token)
    while at >= 0:
        starts.append(at)
        at = text.find(token, at + len(token))
    return starts
