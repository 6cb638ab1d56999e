import pytest
import torch

from mmeb_dllm.embed.pooling import pool
from mmeb_dllm.embed.prompts import user_content
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import ConfigError


def test_placeholder_becomes_the_backbone_token():
    text = "<|image_1|>\nRepresent the given image for classification"
    assert (
        user_content(text, has_image=True, image_token="<image>")
        == "<image>\nRepresent the given image for classification"
    )


def test_image_without_placeholder_goes_first():
    assert user_content("a caption", has_image=True, image_token="<img>") == "<img>\na caption"
    assert user_content("", has_image=True, image_token="<img>") == "<img>"


def test_placeholder_without_image_is_dropped():
    assert (
        user_content("<|image_1|>\nFind a news image: x", has_image=False, image_token="<image>")
        == "Find a news image: x"
    )


def test_pooling_respects_lengths():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    lengths = torch.tensor([5, 3])
    last = pool(hidden, lengths, "last")
    assert torch.equal(last[0], hidden[0, 4]) and torch.equal(last[1], hidden[1, 2])
    mean = pool(hidden, lengths, "mean")
    assert torch.allclose(mean[1], hidden[1, :3].mean(0))
    mask = pool(hidden, lengths, "mask", num_mask_tokens=2)
    assert torch.allclose(mask[1], hidden[1, 1:3].mean(0)) and torch.allclose(mask[0], hidden[0, 3:5].mean(0))


def test_unknown_pooling_is_a_clear_error():
    with pytest.raises(ConfigError, match="pooling 'cls'"):
        EmbeddingRecipe(model="m/x", checkpoint="c", revision="r", pooling="cls")
    with pytest.raises(ConfigError, match="unknown pooling"):
        pool(torch.zeros(1, 2, 3), torch.tensor([2]), "cls")


def test_recipe_key_changes_with_any_field():
    base = EmbeddingRecipe(model="m/x", checkpoint="c", revision="r")
    assert base.key() == EmbeddingRecipe(model="m/x", checkpoint="c", revision="r").key()
    for change in ({"pooling": "mean"}, {"attention": "causal"}, {"adapter_hash": "abc"}, {"dtype": "bfloat16"}):
        assert EmbeddingRecipe(model="m/x", checkpoint="c", revision="r", **change).key() != base.key()
