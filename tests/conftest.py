"""Shared fixtures: an MMEB-layout data folder and offline hub settings for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.mmeb_fixture import write_mmeb_fixture

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No persistent embedding cache unless a test asks for one (monkeypatch.setenv): vectors must come from the network
# so encode counters and fault injections behave the same on every run.
os.environ["MMEB_DLLM_EMBED_CACHE"] = "off"


@pytest.fixture(scope="session")
def mmeb_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmeb_fixture(tmp_path_factory.mktemp("mmeb_data"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep mteb's and our caches out of the user's home unless the caller chose a cache."""
    os.environ.setdefault("MTEB_CACHE", str(tmp_path_factory.mktemp("mteb_cache")))


MINI_CLS_ADAPTER = "tiny-mini-cls"


@pytest.fixture(scope="session")
def mini_cls_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LaViDa fine-tuned with the ``tiny-cpu`` preset (MMEB-mini Digits + Shapes train sets), trained once
    per session for the learning test (tests/finetune) and the alignment-margin test (tests/analysis)."""
    from mmeb_dllm.finetune.config import FinetuneConfig
    from mmeb_dllm.finetune.presets import preset_overrides
    from mmeb_dllm.finetune.trainer import train

    out = tmp_path_factory.mktemp("adapters") / MINI_CLS_ADAPTER
    train(FinetuneConfig(model="lavida-embed-tiny", out=str(out), progress=False, device="cpu",
                         **preset_overrides("tiny-cpu")))
    return out
