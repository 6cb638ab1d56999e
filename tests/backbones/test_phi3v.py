"""Phi-3.5-V VLM2Vec checkpoints: registered with their metadata, every load refused with the reason and the way out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mteb
import pytest

from mmeb_dllm.backbones.phi3v import REFUSAL, Phi3VBackbone
from mmeb_dllm.errors import ConfigError
from mmeb_dllm.zoo import get_spec, resolve_checkpoint

NAMES = ("vlm2vec-phi3v-lora", "vlm2vec-phi3v-full")
# what the message must tell the user: why, and the two ways out
KEY_PHRASES = (
    "remote code only",
    "transformers 5",
    "trust_remote_code",
    "TIGER-Lab/VLM2Vec-LoRA",
    "transformers 4.4x",
    "leaderboard baselines",
    "docs/models.md",
)


@pytest.mark.parametrize("name", NAMES)
def test_zoo_entry_carries_the_refusal(name: str) -> None:
    spec = get_spec(name)
    assert spec.family == "phi3v" and spec.unavailable == REFUSAL
    assert mteb.get_model_meta(name).name == f"mmeb-dllm/{name}"
    with pytest.raises(ConfigError) as caught:
        resolve_checkpoint(spec)
    assert all(phrase in str(caught.value) for phrase in KEY_PHRASES), str(caught.value)


@pytest.mark.parametrize("name", NAMES)
def test_mteb_get_model_raises_the_refusal(name: str) -> None:
    with pytest.raises(ConfigError, match=r"remote code only.*Ways out"):
        mteb.get_model(name)


def test_direct_load_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trust_remote_code"):
        Phi3VBackbone.from_pretrained(tmp_path)


@pytest.mark.slow
def test_stock_cli_prints_the_refusal_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"MMEB_DATA_DIR", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "mteb"), "run", "-m", NAMES[0], "-t", "MMEB-mini-Digits",
         "--output-folder", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert out.returncode != 0
    assert "trust_remote_code" in out.stderr and "TIGER-Lab/VLM2Vec-LoRA" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
