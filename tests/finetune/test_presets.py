"""Fine-tune presets: valid configs, applied by ``--preset`` under explicit options, passed on by the sweep."""

from __future__ import annotations

import pytest

from mmeb_dllm.analysis import sweep
from mmeb_dllm.errors import ConfigError
from mmeb_dllm.finetune.cli import parse_config
from mmeb_dllm.finetune.config import FinetuneConfig
from mmeb_dllm.finetune.presets import PRESETS, preset_overrides

BASE = ["--model", "lavida-embed-tiny", "--out", "unused"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_config(name):
    config = FinetuneConfig(model="lavida-embed-tiny", out="unused", **preset_overrides(name))
    for key, value in preset_overrides(name).items():
        assert getattr(config, key) == value


def test_vlm2vec_preset_is_the_defaults():
    assert parse_config([*BASE, "--preset", "vlm2vec"]) == parse_config(BASE)


def test_preset_replaces_defaults_and_explicit_options_win():
    config = parse_config([*BASE, "--preset", "tiny-cpu", "--steps", "7"])
    tiny = preset_overrides("tiny-cpu")
    assert config.steps == 7
    assert config.temperature == tiny["temperature"] != FinetuneConfig.temperature
    assert config.train == tiny["train"]
    assert parse_config([*BASE, "--train", "MMEB-mini/Digits", "--preset", "tiny-cpu"]).train == ("MMEB-mini/Digits",)


def test_unknown_preset_is_refused_with_the_known_names():
    with pytest.raises(SystemExit):
        parse_config([*BASE, "--preset", "fast"])
    with pytest.raises(ConfigError, match="tiny-cpu"):
        preset_overrides("fast")


def test_sweep_starts_from_the_preset_but_keeps_its_own_data_options(monkeypatch, tmp_path):
    seen = {}

    def fake_run_sweep(models, scales, out, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(sweep, "plot_sweep", lambda rows, out, **kwargs: out / "sweep.png")
    sweep.main(["data-scale", "--model", "lavida-embed-tiny", "--scales", "4", "--out", str(tmp_path),
                "--train", "MMEB-mini/Digits", "--preset", "tiny-cpu", "--set", "steps=3"])
    expected = {k: v for k, v in preset_overrides("tiny-cpu").items() if k not in {"train", "samples_per_task"}}
    assert seen["overrides"] == {**expected, "steps": 3}
    assert seen["train"] == ("MMEB-mini/Digits",)
