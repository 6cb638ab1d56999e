"""The doctor passes a healthy model and catches each deliberately broken one."""

import pytest

from mmeb_dllm.doctor import run_checks, sample_items
from mmeb_dllm.embed.embedder import Embedder
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from tests.embed.toy_backbone import ToyBackbone


@pytest.fixture(scope="module")
def rows():
    queries, targets = sample_items("MMEB-mini-ShapeColorVQA", 4)
    return queries + targets


def _failed(backbone: ToyBackbone, rows, **recipe) -> set[str]:
    embedder = Embedder(backbone, EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0", **recipe))
    return {r.name for r in run_checks(embedder, rows) if not r.passed}


def test_healthy_model_passes_every_check(rows):
    assert _failed(ToyBackbone(), rows) == set()


@pytest.mark.parametrize(
    ("backbone", "recipe", "caught_by"),
    [
        (ToyBackbone(ignore_image=True), {}, "image changes the embedding"),
        (ToyBackbone(left_align=True), {}, "batched equals one-by-one"),
        (ToyBackbone(drop_text=True), {}, "text changes the embedding"),
        (ToyBackbone(), {"normalize": False}, "vectors finite and normalised"),
        (ToyBackbone(dropout=0.1), {}, "two runs are identical"),
    ],
    ids=["ignores-image", "pools-padding", "drops-instruction", "unnormalised", "dropout-on"],
)
def test_each_broken_model_is_caught(rows, backbone, recipe, caught_by):
    assert caught_by in _failed(backbone, rows, **recipe)


def test_wrong_image_token_count_is_caught(rows):
    class Miscounting(ToyBackbone):
        def num_image_tokens(self, image):
            return 5

    assert "image tokens per image" in _failed(Miscounting(), rows)


@pytest.mark.slow
def test_doctor_command_on_the_tiny_lavida(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([str(Path(sys.executable).parent / "mmeb-dllm"), "doctor", "-m", "lavida-embed-tiny"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert "--- rendered query prompt ---" in out.stdout and "<image>" in out.stdout
    assert "6 passed, 0 failed" in out.stdout
