"""Length-aware batching across mteb batches, bounded windows, background prefetch."""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID
from mmeb_dllm.embed.embedder import Embedder, Item, item_key
from mmeb_dllm.embed.mteb_encoder import MMEBEncoder, item_windows, prefetched
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from tests.embed.toy_backbone import ToyBackbone


def _recipe() -> EmbeddingRecipe:
    return EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0")


def _mixed_items(n: int, seed: int = 0) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        text = f"{i} " + "word " * rng.randint(0, 30)
        image = Image.new("RGB", (4 + i % 5, 6), (i * 7 % 256, 40, 90)) if i % 3 == 0 else None
        items.append(Item(("<|image_1|>\n" if image else "") + text, image))
    return items


def _true_length(embedder: Embedder, item: Item) -> int:
    """Positions the network really runs on: prompt ids with the placeholder replaced by the image's 4 tokens."""
    ids = embedder.prompt_ids(item)
    return len(ids) - ids.count(IMAGE_PLACEHOLDER_ID) + 4 * ids.count(IMAGE_PLACEHOLDER_ID)


def _padded_positions(lengths: list[int], batch_size: int) -> int:
    return sum(max(chunk) * len(chunk) for chunk in (lengths[i : i + batch_size] for i in range(0, len(lengths),
                                                                                                 batch_size)))


def test_batches_are_cut_from_a_longest_first_order():
    embedder = Embedder(ToyBackbone(), _recipe())
    items = _mixed_items(24)
    embedder.embed(items, batch_size=4, show_progress=False)
    lengths = sorted((_true_length(embedder, item) for item in items), reverse=True)
    assert embedder.tokens_real == sum(lengths)
    assert embedder.tokens_computed == _padded_positions(lengths, 4)
    as_given = _padded_positions([_true_length(embedder, item) for item in items], 4)
    padding_sorted, padding_as_given = embedder.tokens_computed - sum(lengths), as_given - sum(lengths)
    assert padding_sorted < padding_as_given / 2


def _mteb_batches(items: list[Item], size: int) -> list[dict]:
    return [
        {"text": [it.text for it in items[i : i + size]], "image": [it.image for it in items[i : i + size]]}
        for i in range(0, len(items), size)
    ]


def test_encode_sorts_across_mteb_batches_and_keeps_row_order(monkeypatch):
    monkeypatch.setenv("MMEB_DLLM_EMBED_CACHE", "off")
    encoder = MMEBEncoder("lavida-embed-tiny", device="cpu")
    encoder._embedder = Embedder(ToyBackbone(), encoder.recipe)
    items = _mixed_items(20)
    items = items + items[:7]  # duplicates across mteb batches
    vectors = encoder.encode(_mteb_batches(items, 2), task_metadata=SimpleNamespace(name="toy"), hf_split="test",
                             hf_subset="default", batch_size=2)
    embedder = encoder.embedder
    assert embedder.items_encoded == 20
    expected = Embedder(ToyBackbone(), encoder.recipe).embed(items, batch_size=64, show_progress=False)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    lengths = sorted((_true_length(embedder, item) for item in items[:20]), reverse=True)
    assert embedder.tokens_computed == _padded_positions(lengths, 2)  # one sort over all 14 mteb batches


def test_windows_close_at_batch_boundaries_and_are_lazy():
    items = _mixed_items(23)
    consumed = []

    def batches():
        for index, batch in enumerate(_mteb_batches(items, 3)):
            consumed.append(index)
            yield batch

    windows = item_windows(batches(), "toy", max_items=7)
    first_items, first_keys = next(windows)
    assert len(first_items) == 9 and len(consumed) == 3  # 3 batches of 3 reach 7; nothing read ahead
    rest = list(windows)
    assert [len(w[0]) for w in rest] == [9, 5]
    flat = first_items + [it for w in rest for it in w[0]]
    assert [it.text for it in flat] == [it.text for it in items]
    assert first_keys == [item_key(it) for it in first_items]


def test_windows_close_early_on_decoded_pixels():
    big = [Item("<|image_1|>\nx", Image.new("RGB", (100, 100))) for _ in range(6)]
    windows = list(item_windows(_mteb_batches(big, 1), "toy", max_items=1000, max_pixels=25_000))
    assert [len(w[0]) for w in windows] == [3, 3]


def test_windows_convert_images_to_rgb():
    grey = Item("<|image_1|>\nx", Image.new("L", (5, 5), 9))
    [(items, keys)] = list(item_windows(_mteb_batches([grey], 1), "toy", max_items=10))
    assert items[0].image.mode == "RGB"
    assert keys[0] == item_key(Item(grey.text, grey.image.convert("RGB")))


def test_prefetch_keeps_order_runs_ahead_in_another_thread_and_raises():
    threads = set()

    def produce():
        for i in range(5):
            threads.add(threading.get_ident())
            yield i

    assert list(prefetched(produce())) == list(range(5))
    assert threading.get_ident() not in threads

    def broken():
        yield 1
        raise ValueError("bad image")

    got = []
    with pytest.raises(ValueError, match="bad image"):
        for value in prefetched(broken()):
            got.append(value)
    assert got == [1]
