"""A training process killed with SIGKILL resumes from its last checkpoint to the adapter of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from mmeb_dllm.finetune.card import CARD_FILE, read_card
from mmeb_dllm.finetune.checkpoint import latest_checkpoint
from mmeb_dllm.finetune.trainer import train
from tests.finetune.conftest import cli_flags, subprocess_env, tiny_config

pytestmark = pytest.mark.slow

# images (the frozen-vision feature cache starts cold after the restart), GradCache chunks and LoRA dropout
SETTINGS = {
    "train": ("MMEB-mini/Digits",), "samples_per_task": 4, "steps": 5, "global_batch_size": 2, "chunk_size": 1,
    "lora_dropout": 0.1, "checkpoint_every": 1, "progress": False, "lora_targets": "language_model,projector",
    "learning_rate": 1e-3, "temperature": 0.05, "warmup_steps": 1,
}


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "mmeb_dllm", "finetune", "--model", "lavida-embed-tiny", "--out", str(out),
               *cli_flags(SETTINGS)]
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while True:
            latest = latest_checkpoint(out)
            if latest is not None and int(latest.name.removeprefix("step-")) >= 2:
                os.kill(process.pid, signal.SIGKILL)
                break
            assert process.poll() is None, f"the run ended before it was killed: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (out / CARD_FILE).exists()
    killed_at = int(latest_checkpoint(out).name.removeprefix("step-"))
    assert 2 <= killed_at < SETTINGS["steps"]

    resumed = train(tiny_config(str(out), **SETTINGS))
    reference = train(tiny_config(str(tmp_path / "reference"), **SETTINGS))
    assert resumed.card["resumed_from_steps"] == [killed_at]
    assert resumed.losses == reference.losses
    want = load_file(str(tmp_path / "reference" / "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    assert all(torch.equal(want[key], got[key]) for key in want)
    assert read_card(out)["adapter_hash"] == reference.card["adapter_hash"]
