"""The training loop: resume equals an uninterrupted run, clear errors, LoRA targets, schedule, the card."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mmeb_dllm.adapters import adapter_hash
from mmeb_dllm.errors import ConfigError
from mmeb_dllm.finetune import trainer
from mmeb_dllm.finetune.card import CARD_FILE, read_card
from mmeb_dllm.finetune.checkpoint import latest_checkpoint
from mmeb_dllm.finetune.trainer import NonFiniteLossError, lora_target_modules, lr_factor, train
from tests.finetune.conftest import lora_model, tiny_config, write_text_mirror

# text pairs with hard negatives (cheap); dropout on, so resuming must also restore the random-number state
RESUME = {"train": ("TextPairs",), "steps": 4, "checkpoint_every": 2, "lora_dropout": 0.2}


@pytest.fixture(scope="module", autouse=True)
def _text_mirror(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMEB_TRAIN_DIR", str(write_text_mirror(tmp_path_factory.mktemp("mirror"))))
        yield


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "uninterrupted"
    result = train(tiny_config(str(out), **RESUME))
    assert result.finished and latest_checkpoint(out) is None  # checkpoints are removed after success
    return out, result


def test_card_describes_the_run(uninterrupted):
    out, result = uninterrupted
    card = read_card(out)
    assert card == json.loads((out / CARD_FILE).read_text())
    assert card["base_model"]["name"] == "mmeb-dllm/lavida-embed-tiny" and card["base_model"]["revision"] == "tiny-v2"
    assert card["embedding_recipe"]["pooling"] == "last"
    assert card["finetune_recipe"]["lora_dropout"] == 0.2 and card["finetune_recipe"]["train"] == ["TextPairs"]
    assert card["data"][0]["rows_available"] == 8 and card["data"][0]["hard_negatives"] == 4
    assert card["steps"] == 4 and card["samples_seen"] == 16 and card["seed"] == 42
    assert card["final_loss"] == result.losses[-1] and len(card["loss_history"]) == 4
    assert card["wall_time_s"] > 0 and card["adapter_hash"] == adapter_hash(out)
    assert all(name.startswith(("language_model.", "mm_projector.")) for name in card["lora"]["target_modules"])
    assert (out / "adapter_config.json").is_file()


def test_stopped_run_resumes_to_the_same_adapter(uninterrupted, tmp_path):
    reference, done = uninterrupted
    out = tmp_path / "stopped"
    partial = train(tiny_config(str(out), **RESUME), stop_after_steps=3)
    assert not partial.finished and partial.steps_done == 3
    assert latest_checkpoint(out).name == "step-00000002" and not (out / CARD_FILE).exists()
    resumed = train(tiny_config(str(out), **RESUME))
    assert resumed.finished and resumed.card["resumed_from_steps"] == [2]
    assert resumed.losses == done.losses
    want, got = _weights(reference), _weights(out)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[key], got[key]) for key in want)


def test_run_failing_mid_way_resumes_to_the_same_adapter(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    out = tmp_path / "crashed"

    def crash(info: trainer.StepInfo) -> None:
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(str(out), **RESUME), on_step=crash)
    train(tiny_config(str(out), **RESUME))
    assert adapter_hash(out) == adapter_hash(reference)


def test_nan_loss_stops_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "info_nce", lambda q, p, n, temperature: (q.sum() + p.sum()) * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 1 .*Lower --learning-rate"):
        train(tiny_config(str(tmp_path / "nan"), steps=2, train=("MMEB-mini/Digits",)))
    assert not (tmp_path / "nan" / CARD_FILE).exists()


def test_refuses_a_finished_adapter_and_a_checkpoint_of_another_recipe(uninterrupted, tmp_path):
    out, _ = uninterrupted
    with pytest.raises(ConfigError, match="already holds a finished adapter"):
        train(tiny_config(str(out), **RESUME))
    foreign = tmp_path / "foreign" / "checkpoints" / "step-00000002"
    foreign.mkdir(parents=True)
    recipe = tiny_config(str(tmp_path / "foreign"), **RESUME).recipe() | {"learning_rate": 0.5}
    (foreign / "state.json").write_text(json.dumps({"recipe": recipe, "step": 2}))
    with pytest.raises(ConfigError, match=r"another run .*learning_rate: 0\.5 -> 0\.001"):
        train(tiny_config(str(tmp_path / "foreign"), **RESUME))


def test_gradient_checkpointing_changes_nothing_and_bf16_trains(tmp_path):
    plain = train(tiny_config(str(tmp_path / "plain"), train=("TextPairs",), steps=2, checkpoint_every=0))
    recomputed = train(tiny_config(str(tmp_path / "recomputed"), train=("TextPairs",), steps=2, checkpoint_every=0,
                                   gradient_checkpointing=True))
    assert recomputed.losses == plain.losses
    want, got = _weights(tmp_path / "plain"), _weights(tmp_path / "recomputed")
    assert max((want[k] - got[k]).abs().max().item() for k in want) < 1e-6
    bf16 = train(tiny_config(str(tmp_path / "bf16"), train=("TextPairs",), steps=2, checkpoint_every=0,
                             precision="bf16"))
    assert bf16.finished and all(abs(a - b) < 0.05 for a, b in zip(bf16.losses, plain.losses, strict=True))
    assert bf16.card["embedding_recipe"] and bf16.card["finetune_recipe"]["precision"] == "bf16"


def test_lora_targets_and_frozen_vision_tower():
    model = lora_model(tiny_config(lora_targets="language_model"), randomise=False)
    trainable = [name for name, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("language_model.") and "lora_" in name for name in trainable)
    assert not model.backbone.vision_tower.training and model.backbone.language_model.training
    backbone = model.backbone
    names = lora_target_modules(backbone, "projector,re:language_model\\..*\\.q_proj(\\.base_layer)?")
    assert any(n.startswith("mm_projector.") for n in names) and any(n.endswith("q_proj.base_layer") for n in names)
    with pytest.raises(ConfigError, match="matches no linear layer"):
        lora_target_modules(backbone, "re:nothing")


def test_learning_rate_schedule():
    config = tiny_config(steps=10, warmup_steps=2, learning_rate=1.0)
    assert [round(lr_factor(config, s), 3) for s in range(11)] == [
        0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
    cosine = tiny_config(steps=10, warmup_steps=0, lr_schedule="cosine")
    assert lr_factor(cosine, 0) == 1.0 and abs(lr_factor(cosine, 5) - 0.5) < 1e-12 and lr_factor(cosine, 10) < 1e-12
    assert lr_factor(tiny_config(steps=10, warmup_steps=0, lr_schedule="constant"), 9) == 1.0
