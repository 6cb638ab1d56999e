"""Over-long text: cut to the recipe's ``max_text_tokens`` (instruction, placeholder and text start kept), counted
in the task's protocol record, warned about once per task, and part of the embedding-space key."""

from __future__ import annotations

import logging

import mteb
import numpy as np
import pytest
from PIL import Image

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID
from mmeb_dllm.embed.embedder import Embedder, Item, item_key, model_text_limit, text_tokens
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import ConfigError
from tests.embed.toy_backbone import BOS_ID, ToyBackbone
from tests.robustness.conftest import rewrite

LONG = "Represent the given news article: " + "the quick brown fox jumps over the lazy dog. " * 40
SHORT = [Item("a cat"), Item("Represent the given caption: two dogs on a beach"),
         Item("<|image_1|>\nRepresent the given image.", Image.new("RGB", (8, 8), (200, 30, 30)))]


def _toy(limit: int | None) -> Embedder:
    recipe = EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0", max_text_tokens=limit)
    return Embedder(ToyBackbone(), recipe)


def _record_fed_ids(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Every id sequence the backbone is handed from now on."""
    fed: list[list[int]] = []
    real = embedder.backbone.embed

    def spy(ids, images):
        fed.extend(list(seq) for seq in ids)
        return real(ids, images)

    monkeypatch.setattr(embedder.backbone, "embed", spy)
    return fed


def test_over_long_text_is_cut_to_the_limit_keeping_its_start_and_the_template(monkeypatch):
    embedder = _toy(120)
    fed = _record_fed_ids(embedder, monkeypatch)
    uncut = _toy(None).prompt_ids(Item(LONG))
    assert text_tokens(uncut) > 120
    vector = embedder.embed([Item(LONG)], show_progress=False)
    assert np.isfinite(vector).all()
    (ids,) = fed
    assert len(ids) == 120  # one token per byte: the cut lands exactly on the limit
    tail = list(b"[end]")
    assert ids[-len(tail):] == tail  # the chat template's end survives (last-token pooling reads it)
    assert ids[: len(ids) - len(tail)] == uncut[: len(ids) - len(tail)]  # BOS, template start, instruction, text start
    assert embedder.truncated == {item_key(Item(LONG)): text_tokens(uncut)}


def test_cut_never_enters_the_image_placeholder(monkeypatch):
    image = Image.new("RGB", (8, 8), (0, 90, 200))
    text = "<|image_1|>\nRepresent the given image with the following question: " + "why? " * 100
    embedder = _toy(90)
    fed = _record_fed_ids(embedder, monkeypatch)
    embedder.embed([Item(text, image)], show_progress=False)
    assert text_tokens(fed[0]) == 90 and fed[0].count(IMAGE_PLACEHOLDER_ID) == 1
    # without an image the placeholder is dropped whole: no limit may leave a piece of it in the prompt
    item = Item("Hello there " + "<|image_1|> and more words " * 6)
    for limit in range(14, 120):
        ids = _toy(limit).prompt_ids(item)
        assert text_tokens(ids) <= limit and "<|" not in bytes(ids[1:]).decode(), limit


def test_an_item_that_cannot_be_cut_enough_is_a_clear_error():
    image = Image.new("RGB", (8, 8))
    text = "A caption far too long before its image. " * 10 + "<|image_1|>\nRepresent the given image."
    with pytest.raises(ConfigError, match=r"item 'A caption far too long.*cannot be cut to max_text_tokens=64.*"
                                          r"raise max_text_tokens to at least \d+"):
        _toy(64).embed([Item(text, image)], show_progress=False)


def test_shorter_texts_are_unchanged_bit_for_bit():
    before = _toy(None).embed(SHORT, batch_size=1, show_progress=False)
    limited = _toy(120)
    after = limited.embed([*SHORT, Item(LONG)], batch_size=1, show_progress=False)
    assert limited.truncated and item_key(Item(LONG)) in limited.truncated
    assert before.tobytes() == after[: len(SHORT)].tobytes()


def test_the_limit_is_part_of_the_embedding_space_key():
    keys = {EmbeddingRecipe(model="m/x", checkpoint="c", revision="r", max_text_tokens=limit).key()
            for limit in (None, 256, 512)}
    assert len(keys) == 3
    same = EmbeddingRecipe(model="m/x", checkpoint="c", revision="r", max_text_tokens=256)
    assert same.key() == EmbeddingRecipe(model="m/x", checkpoint="c", revision="r", max_text_tokens=256).key()
    for bad in (0, -3, "100", True):
        with pytest.raises(ConfigError, match="max_text_tokens must be a positive integer"):
            EmbeddingRecipe(model="m/x", checkpoint="c", revision="r", max_text_tokens=bad)


def test_no_declared_limit_cuts_nothing():
    toy = _toy(None)
    assert model_text_limit(toy.backbone) is None and toy.max_text_tokens is None
    ids, length = toy.prompt(Item(LONG * 5))
    assert len(ids) == length > 4000 and ids[0] == BOS_ID


def test_truncation_is_recorded_per_task_warned_once_and_keyed_in_the_cache(data_root, tmp_path, monkeypatch, caplog):
    long_query = "Find me an everyday image that matches the given caption: " + "a dog in the park, " * 60
    rewrite(data_root, "MSCOCO_t2i", lambda rows: rows[3].update(qry_text=long_query))
    monkeypatch.setenv("MMEB_DLLM_EMBED_CACHE", str(tmp_path / "cache"))
    tasks = mteb.get_tasks(tasks=["MMEB-MSCOCO_t2i"])

    def run(limit: int):
        encoder = mteb.get_model("lavida-embed-tiny", device="cpu", max_text_tokens=limit)
        result = mteb.evaluate(encoder, tasks, cache=None, co2_tracker=False, show_progress_bar=False)
        return encoder, result.task_results[0].scores["test"][0]

    first = mteb.get_model("lavida-embed-tiny", device="cpu", max_text_tokens=400)
    default_limit = model_text_limit(first.embedder.backbone)
    tokenizer, lm = first.embedder.backbone.tokenizer, first.embedder.backbone.language_model
    assert default_limit == min(tokenizer.model_max_length, lm.config.max_position_embeddings) == 4096
    fed = _record_fed_ids(first.embedder, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="mmeb_dllm.benchmark.protocol"):
        scores = mteb.evaluate(first, tasks, cache=None, co2_tracker=False, show_progress_bar=False
                               ).task_results[0].scores["test"][0]
    record = scores["mmeb_protocol"]["data"]["truncation"]
    assert record["truncated_items"] == 1 and record["max_text_tokens"] == 400
    assert record["longest_text_tokens"] > 400
    assert max(text_tokens(ids) for ids in fed) == 400
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "MSCOCO_t2i: 1 item(s)" in warnings[0] and "max_text_tokens=400" in warnings[0]

    # a fresh run answered by the cache alone (weights never loaded) still reports the cut item
    cached, again = run(400)
    assert cached._embedder is None
    assert again["mmeb_protocol"]["data"]["truncation"]["truncated_items"] == 1
    assert again["ndcg_at_10"] == scores["ndcg_at_10"]
    # another limit is another embedding space: nothing is reused, the model runs again
    other, changed = run(2000)
    assert other.recipe.key() != first.recipe.key() and other._embedder is not None
    assert changed["mmeb_protocol"]["data"]["truncation"]["truncated_items"] == 0
