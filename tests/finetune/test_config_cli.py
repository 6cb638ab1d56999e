"""The recipe's VLM2Vec defaults, its validation, and the command line built from it."""

from __future__ import annotations

import pytest

from mmeb_dllm.errors import ConfigError
from mmeb_dllm.finetune.cli import build_parser, parse_config
from mmeb_dllm.finetune.config import FinetuneConfig


def test_defaults_are_the_vlm2vec_recipe():
    config = FinetuneConfig(model="lavida-embed-tiny", out="x")
    assert (config.temperature, config.lora_r, config.learning_rate, config.lr_schedule) == (0.02, 8, 2e-5, "linear")
    assert (config.warmup_steps, config.steps, config.global_batch_size, config.samples_per_task) == (
        200, 2000, 1024, 50_000)
    assert config.pooling is None and config.dora is False and config.hard_negatives is True
    assert config.lora_targets == "language_model"
    assert config.train == ("MMEB-mini",) and config.split == "original"


def test_recipe_round_trips_and_drops_run_only_fields():
    config = FinetuneConfig(model="m", out="x", train="A, B", dora=True, device="cpu")
    assert config.train == ("A", "B")
    assert FinetuneConfig.from_dict(config.to_dict()) == config
    assert "out" not in config.recipe() and "device" not in config.recipe() and config.recipe()["dora"] is True
    with pytest.raises(ConfigError, match="unknown fine-tune option"):
        FinetuneConfig.from_dict({**config.to_dict(), "lr": 1})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": "train"}, "--split"),
        ({"temperature": 0}, "--temperature"),
        ({"lora_targets": "decoder"}, "--lora-targets entry 'decoder'"),
        ({"global_batch_size": 0}, "--global-batch-size"),
        ({"chunk_size": -1}, "--chunk-size"),
        ({"precision": "fp8"}, "--precision"),
        ({"train": ""}, "--train"),
    ],
)
def test_bad_values_name_the_option(change, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig(**{"model": "m", "out": "x", **change})


def test_command_line_sets_every_kind_of_field():
    config = parse_config([
        "--model", "lavida-embed-tiny", "--out", "o", "--train", "MMEB-mini/Digits,ImageNet_1K",
        "--learning-rate", "1e-3", "--steps", "5", "--no-hard-negatives", "--dora", "--pooling", "mean",
        "--lora-targets", "language_model,projector", "--samples-per-task", "100",
    ])
    assert config.train == ("MMEB-mini/Digits", "ImageNet_1K")
    assert (config.learning_rate, config.steps, config.samples_per_task) == (1e-3, 5, 100)
    assert (config.hard_negatives, config.dora, config.pooling) == (False, True, "mean")
    assert parse_config(["--model", "m", "--out", "o"]) == FinetuneConfig(model="m", out="o")
    helps = build_parser().format_help()
    assert "--global-batch-size" in helps and "GradCache" in helps
    with pytest.raises(SystemExit):
        parse_config(["--out", "o"])  # --model is required
