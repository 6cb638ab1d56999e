import numpy as np
import pytest
from PIL import Image

from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from tests.embed.toy_backbone import ToyBackbone


def _recipe(**kw) -> EmbeddingRecipe:
    return EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0", **kw)


def _items() -> list[Item]:
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    blue = Image.new("RGB", (5, 9), (0, 0, 255))
    return [
        Item("<|image_1|>\nRepresent the given image for classification", red),
        Item("a much longer text only query that needs more tokens than the others"),
        Item("<|image_1|>\nRepresent the given image.", blue),
        Item("short"),
        Item("<|image_1|>\nRepresent the given image for classification", red),  # duplicate of item 0
    ]


@pytest.mark.parametrize("pooling", ["last", "mean", "mask"])
def test_padded_batch_equals_one_by_one(pooling):
    items = _items()
    batched = Embedder(ToyBackbone(), _recipe(pooling=pooling)).embed(items, batch_size=8, show_progress=False)
    single = Embedder(ToyBackbone(), _recipe(pooling=pooling))
    alone = np.stack([single.embed([it], batch_size=1, show_progress=False)[0] for it in items])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_vectors_are_unit_norm_and_finite():
    vectors = Embedder(ToyBackbone(), _recipe()).embed(_items(), show_progress=False)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_each_distinct_item_is_encoded_once():
    embedder = Embedder(ToyBackbone(), _recipe())
    items = _items()
    first = embedder.embed(items, batch_size=2, show_progress=False)
    assert embedder.items_encoded == 4
    again = embedder.embed(items[::-1], show_progress=False)
    assert embedder.items_encoded == 4
    np.testing.assert_array_equal(first[::-1], again)


def test_image_and_text_both_change_the_vector():
    embedder = Embedder(ToyBackbone(), _recipe())
    red, green = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 255, 0))
    a, b, c = embedder.embed([Item("x", red), Item("x", green), Item("y", red)], show_progress=False)
    assert not np.allclose(a, b) and not np.allclose(a, c)


def test_non_rgb_images_are_converted():
    embedder = Embedder(ToyBackbone(), _recipe())
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 128))
    gray = Image.new("L", (4, 4), 7)
    assert embedder.embed([Item("x", rgba), Item("x", gray)], show_progress=False).shape == (2, 32)


def test_mask_pooling_appends_mask_tokens():
    embedder = Embedder(ToyBackbone(), _recipe(pooling="mask", num_mask_tokens=3))
    ids = embedder.prompt_ids(Item("hello"))
    assert ids[-3:] == [ToyBackbone.mask_token_id] * 3
    assert ToyBackbone.mask_token_id not in Embedder(ToyBackbone(), _recipe()).prompt_ids(Item("hello"))
