"""Out of memory on a batch: halve and retry with a warning; a single item that does not fit is a clear error."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.errors import MmebDllmError
from tests.embed.toy_backbone import ToyBackbone

RECIPE = EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0")


class SmallMemory(ToyBackbone):
    """Runs out of memory for batches larger than ``limit`` (counting calls that failed)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.failures = 0

    def forward_embeds(self, inputs_embeds, attention_mask, **kwargs):
        if inputs_embeds.shape[0] > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward_embeds(inputs_embeds, attention_mask, **kwargs)


def test_batch_is_halved_until_it_fits_and_vectors_are_unchanged(caplog):
    items = [Item(f"item number {i} " * (i + 1)) for i in range(8)]
    expected = Embedder(ToyBackbone(), RECIPE).embed(items, batch_size=8, show_progress=False)
    backbone = SmallMemory(limit=2)
    with caplog.at_level(logging.WARNING, logger="mmeb_dllm.embed.embedder"):
        got = Embedder(backbone, RECIPE, cache=None).embed(items, batch_size=8, show_progress=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert backbone.failures == 3  # 8 -> 4 + 4 -> each 4 -> 2 + 2
    assert "out of memory on a batch of 8 items; retrying as 4 + 4" in caplog.text


def test_a_single_item_that_does_not_fit_is_a_clear_error():
    with pytest.raises(MmebDllmError, match="out of memory on a single item"):
        Embedder(SmallMemory(limit=0), RECIPE, cache=None).embed([Item("x")], show_progress=False)
