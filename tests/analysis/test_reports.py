"""The analysis commands write their JSON/CSV and non-blank figures; per-layer vectors agree with the embedder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmeb_dllm.analysis.alignment import alignment_metrics
from mmeb_dllm.analysis.cli import analyze_main
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from tests.embed.toy_backbone import ToyBackbone


def _non_blank(path) -> None:
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    assert image.shape[0] >= 300 and image.shape[1] >= 300
    assert image.std() > 5.0


def _drawn_pixels(path, colour: tuple[int, int, int]) -> int:
    """Pixels within a small distance of ``colour`` (matplotlib's C0 blue / C1 orange markers)."""
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return int((np.abs(image - np.array(colour)).sum(axis=-1) < 40).sum())


def test_last_layer_of_forward_layers_is_the_embedding():
    embedder = Embedder(ToyBackbone(), EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0"))
    items = [Item("a red thing", Image.new("RGB", (8, 8), (200, 10, 10))), Item("just text, longer than the other")]
    with torch.inference_mode():
        layers = embedder.forward_layers(items)
        final = embedder.forward_items(items)
    assert layers.shape == (3, 2, 32)  # embeddings + 2 layers
    torch.testing.assert_close(layers[-1], final, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_alignment_and_layers_commands(tmp_path, capsys):
    common = ["-m", "lavida-embed-tiny", "-t", "MMEB-mini-Scenes_t2i", "--sample", "12", "--out", str(tmp_path)]
    assert analyze_main(["alignment", *common]) == 0
    folder = tmp_path / "lavida-embed-tiny" / "MMEB-mini-Scenes_t2i"
    report = json.loads((folder / "alignment.json").read_text())
    assert len(report["rows"]) == 12 and report["metrics"]["pairs"] == 12
    assert set(report["metrics"]) >= {"margin", "modality_gap", "alignment", "uniformity_queries", "recall_at_1_q2t"}
    _non_blank(folder / "tsne.png")
    # 12 query circles (C0) and 12 target triangles (C1) are drawn, not only the legend's two markers (~60 px each)
    assert _drawn_pixels(folder / "tsne.png", (31, 119, 180)) > 300
    assert _drawn_pixels(folder / "tsne.png", (255, 127, 14)) > 300
    assert analyze_main(["layers", *common]) == 0
    rows = list(csv.DictReader((folder / "layers.csv").open()))
    assert [int(r["layer"]) for r in rows] == [0, 1, 2]
    assert all(0.0 <= float(r["p_at_1"]) <= 1.0 for r in rows)
    _non_blank(folder / "layers.png")


def test_same_seed_same_sample_for_every_model():
    from mmeb_dllm.analysis.pairs import sample_task

    first = sample_task("MMEB-mini-Scenes_t2i", sample=10, seed=3)
    again = sample_task("MMEB-mini-Scenes_t2i", sample=10, seed=3)
    other = sample_task("MMEB-mini-Scenes_t2i", sample=10, seed=4)
    assert first.rows == again.rows != other.rows
    assert alignment_metrics(np.eye(3), np.eye(3))["recall_at_1_q2t"] == 1.0
