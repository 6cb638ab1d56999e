"""Several processes (torchrun, gloo on CPU) train the same adapter as one process with the same global batch.

The ranks sum their gradients in another order than one process does, so gradients agree to float rounding only.
AdamW divides each update by ``sqrt(v) + eps``: for gradient entries near zero (~1e-10, where rounding changes
them relatively) the default ``eps`` 1e-8 turns that rounding into weight differences of lr x 1e-2 (2.8e-5 seen at
lr 5e-3). The test therefore runs with ``adam_epsilon`` 1e-6 and lr 2e-3, where rounding stays below 1e-6 in the
weights, and checks the loss of every step and every adapter weight to 1e-5.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mmeb_dllm.finetune.card import read_card
from mmeb_dllm.finetune.data import load_train_data
from mmeb_dllm.finetune.distributed import gather_with_grad
from mmeb_dllm.finetune.trainer import train
from tests.finetune.conftest import cli_flags, subprocess_env, tiny_config, write_text_mirror

SETTINGS = {
    "train": ("TextPairs",), "samples_per_task": 8, "steps": 3, "global_batch_size": 4, "chunk_size": 1,
    "warmup_steps": 0, "learning_rate": 2e-3, "adam_epsilon": 1e-6, "lora_dropout": 0.0, "checkpoint_every": 0,
    "progress": False,
}


def test_gather_without_process_group_is_the_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path, monkeypatch):
    mirror = write_text_mirror(tmp_path / "mirror")
    monkeypatch.setenv("MMEB_TRAIN_DIR", str(mirror))
    data = load_train_data(["TextPairs"], split="original", samples_per_task=8, seed=42)
    halves = [[len(p.negatives) for p in data.batch(step, 4)] for step in range(3)]
    assert any(sum(h[:2]) != sum(h[2:]) for h in halves), "ranks must hold different numbers of hard negatives"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float reduction order as the single-threaded ranks below
    try:
        one = train(tiny_config(str(tmp_path / "one"), **SETTINGS))
    finally:
        torch.set_num_threads(threads)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "mmeb_dllm", "finetune", "--model", "lavida-embed-tiny", "--out", str(tmp_path / "two"),
        "--device", "cpu", "--lora-targets", "language_model,projector", "--temperature", "0.05",
        *cli_flags(SETTINGS),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env=subprocess_env(MMEB_TRAIN_DIR=str(mirror), OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    card = read_card(tmp_path / "two")
    assert card["world_size"] == 2 and card["data"][0]["hard_negatives"] == 4
    assert max(abs(a - b) for a, b in zip(card["loss_history"], one.losses, strict=True)) <= 1e-5
    want = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    assert max(w.abs().max().item() for k, w in want.items() if "lora_B" in k) > 1e-3  # training moved the adapter
    assert max(abs(a - b) for a, b in zip(one.losses[1:], one.losses[:-1], strict=False)) > 1e-3
    assert max((want[k] - got[k]).abs().max().item() for k in want) <= 1e-5
