"""kill -9 at 10 seeded-random points of a fine-tune; resuming each time ends with the adapter of an uninterrupted run.

The fine-tune runs in a child process (this file run as ``python -m``) whose file writes, renames and deletions,
forward passes and finished steps are numbered *events*, labelled ``<step>:<event>:<n-th in that step>`` so that a
run resumed from a checkpoint names them as the uninterrupted run does. The uninterrupted reference run lists every
label; ten of them, drawn with a fixed seed (most inside checkpoint writes, including files left half-written, some
mid-step, one while the adapter is written), become the kill points: a child is started with the next one and sends
itself SIGKILL at the first event at or past it in the reference order, exactly like ``kill -9`` from outside (no
cleanup, no flush); the next child resumes. (A resumed run does not repeat the events between the moment its
checkpoint became complete and the next step, so a kill point there is met at the next event.)
The weights are compared exactly: the resumed run performs the same float operations in the same order on one CPU
thread from bit-exact restored weights, optimizer moments and RNG states, so nothing may differ, not even by 1e-7.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmeb_dllm.finetune.card import CARD_FILE, read_card
from mmeb_dllm.finetune.checkpoint import latest_checkpoint, read_state
from tests.finetune.conftest import subprocess_env, tiny_config, write_text_mirror

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = 20240607
KILLS = 10
# text pairs (no image decoding), a 2-layer tiny LaViDa, LoRA dropout (RNG state must survive), two chunks per step
SETTINGS = {
    "train": ("TextPairs",), "samples_per_task": 8, "steps": 4, "global_batch_size": 2, "chunk_size": 1,
    "checkpoint_every": 1, "lora_dropout": 0.1, "lora_targets": "language_model", "warmup_steps": 1,
}
CHECKPOINT_IO = ("save_file", "torch.save", "write_text", "rename", "rmtree")
ADAPTER_IO = ("replace", "write_card")


def _child(out: Path, events: Path, reference: Path | None, kill_at: int) -> None:
    """Fine-tune into ``out``, appending every event label to ``events``; SIGKILL this process at the first event
    whose position in the ``reference`` run's labels is ``kill_at`` or later (no reference: never).

    A kill at a label ending in ``:torn`` first truncates the file just written to half its size (a write cut off
    mid-way).
    """
    import pathlib

    import mmeb_dllm.finetune.checkpoint as ckpt
    import mmeb_dllm.finetune.trainer as trainer
    from mmeb_dllm.embed.embedder import Embedder

    latest = latest_checkpoint(out)
    where = {"step": read_state(latest)["step"] if latest else 0}
    counts: Counter[str] = Counter()
    log = events.open("a", encoding="utf-8")
    order = {label: i for i, label in enumerate(reference.read_text().split())} if reference else {}

    def event(name: str, written: object = None) -> None:
        label = f"{where['step']}:{name}:{counts[name]}"
        counts[name] += 1
        log.write(label + "\n")
        log.flush()
        if order and order[label] >= kill_at:  # a KeyError: the resumed run strays from the reference's events
            if written is not None and name.endswith(":torn"):
                path = Path(str(written))
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # via the real write_bytes
            os.kill(os.getpid(), signal.SIGKILL)

    def around(name: str, function, path_of=None):
        def wrapped(*args, **kwargs):
            event(f"{name}:before")
            result = function(*args, **kwargs)
            if path_of is not None:
                event(f"{name}:torn", path_of(args))
            event(f"{name}:after")
            return result
        return wrapped

    ckpt.save_file = around("save_file", ckpt.save_file, lambda a: a[1])
    torch.save = around("torch.save", torch.save, lambda a: a[1])
    pathlib.Path.write_text = around("write_text", pathlib.Path.write_text, lambda a: a[0])
    pathlib.Path.rename = around("rename", pathlib.Path.rename)
    pathlib.Path.replace = around("replace", pathlib.Path.replace)
    shutil.rmtree = around("rmtree", shutil.rmtree)
    trainer.write_card = around("write_card", trainer.write_card)
    Embedder.forward_items = around("forward", Embedder.forward_items)

    def on_step(info) -> None:
        where["step"] = info.step
        counts.clear()
        event("step")

    if latest is not None:
        event("step")  # resuming at a step boundary
    trainer.train(tiny_config(str(out), progress=False, **SETTINGS), on_step=on_step)
    event("done")


def _run(out: Path, events: Path, env: dict[str, str], reference: Path | None = None, kill_at: int = -1,
         ) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tests.robustness.test_finetune_kills", str(out), str(events),
               str(reference or ""), str(kill_at)]
    return subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=300, check=False)


def _checkpoint_step(out: Path) -> int:
    latest = latest_checkpoint(out)
    return read_state(latest)["step"] if latest is not None else 0


def _kill_points(labels: list[str]) -> list[str]:
    """Ten labels in run order: 6 inside checkpoint writes, 3 mid-step or between steps, 1 inside the adapter write."""
    rng = random.Random(SEED)
    kind = {label: label.split(":")[1] for label in labels}
    checkpoint = [label for label in labels if kind[label] in CHECKPOINT_IO and not label.startswith(
        f"{SETTINGS['steps']}:")]
    compute = [label for label in labels if kind[label] in ("forward", "step")]
    adapter = [label for label in labels if kind[label] in ADAPTER_IO]
    chosen = rng.sample(checkpoint, 6) + rng.sample(compute, 3) + rng.sample(adapter, 1)
    return sorted(chosen, key=labels.index)


def test_ten_kills_then_resume_give_the_uninterrupted_adapter(tmp_path):
    env = subprocess_env(MMEB_TRAIN_DIR=str(write_text_mirror(tmp_path / "mirror")), OMP_NUM_THREADS="1",
                         MMEB_DLLM_EMBED_CACHE="off")
    reference, reference_events = tmp_path / "reference", tmp_path / "reference.events"
    done = _run(reference, reference_events, env)
    assert done.returncode == 0, done.stderr[-3000:]
    labels = reference_events.read_text().split()
    assert len(labels) == len(set(labels)) and labels[-1] == f"{SETTINGS['steps']}:done:0"
    points = _kill_points(labels)
    assert len(points) == KILLS

    out, events = tmp_path / "killed", tmp_path / "killed.events"
    resumed_from, killed_at = [], []
    for point in points:
        if (out / CARD_FILE).exists():  # killed after the card was written: the run had finished
            break
        resumed_from.append(_checkpoint_step(out))
        killed = _run(out, events, env, reference_events, labels.index(point))
        assert killed.returncode == -signal.SIGKILL, f"not killed at {point}: {killed.stderr[-3000:]}"
        killed_at.append(events.read_text().split()[-1])
        assert labels.index(killed_at[-1]) >= labels.index(point)
        latest = latest_checkpoint(out)
        if latest is not None:  # whatever the moment of the kill, the newest complete checkpoint is whole
            assert read_state(latest)["step"] >= 1 and load_file(str(latest / "trainable.safetensors"))
    assert len(killed_at) == KILLS or killed_at[-1].split(":")[1] in ADAPTER_IO, killed_at
    if not (out / CARD_FILE).exists():
        resumed_from.append(_checkpoint_step(out))
        final = _run(out, events, env)
        assert final.returncode == 0, final.stderr[-3000:]

    card, want = read_card(out), read_card(reference)
    assert card["loss_history"] == want["loss_history"]
    # the card lists the resumes whose run lived to write a checkpoint or the adapter (a resumed run killed again
    # before its next checkpoint leaves no trace), the last one being the run that finished
    recorded = card["resumed_from_steps"]
    assert recorded == sorted(set(recorded)) and set(recorded) <= set(resumed_from) - {0}
    assert recorded[-1:] == [step for step in resumed_from[-1:] if step]
    print(f"kill points {points}; killed at {killed_at}; resumed from {resumed_from}; card {recorded}")
    got, expected = load_file(str(out / "adapter_model.safetensors")), load_file(str(reference /
                                                                                    "adapter_model.safetensors"))
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[key], expected[key]) for key in expected)
    assert card["adapter_hash"] == want["adapter_hash"]


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if sys.argv[3] else None, int(sys.argv[4]))
