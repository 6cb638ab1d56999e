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
