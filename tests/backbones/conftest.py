"""Fixtures of the backbone tests: golden fixture folders (skipped when absent) and tiny checkpoints (built once)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mmeb_dllm.backbones.tiny import VARIANTS, tiny_checkpoint_dir

REPO = Path(__file__).resolve().parents[2]


def golden_root() -> Path:
    """``$MMEB_GOLDEN_DIR``, else ``<repo>/../shared/golden``."""
    return Path(os.environ.get("MMEB_GOLDEN_DIR") or REPO.parent / "shared" / "golden")


def golden_dir(name: str) -> Path:
    """One golden fixture folder, or skip the test with the reason."""
    folder = golden_root() / name
    if not (folder / "expected.safetensors").is_file():
        pytest.skip(f"golden fixture {folder} not found: set MMEB_GOLDEN_DIR to the folder holding {name}/")
    return folder


@pytest.fixture(scope="session")
def llada_golden() -> Path:
    """The LLaDA golden fixture folder (skips when absent)."""
    return golden_dir("llada")


@pytest.fixture(scope="session")
def lavida_golden() -> Path:
    """The LaViDa golden fixture folder (skips when absent)."""
    return golden_dir("lavida")


@pytest.fixture(scope="session")
def mmada_golden() -> Path:
    """The MMaDA golden fixture folder (skips when absent)."""
    return golden_dir("mmada")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both tiny variants, built through :func:`tiny_checkpoint_dir` into a private cache."""
    cache = tmp_path_factory.mktemp("mmeb_dllm_cache")
    return {variant: tiny_checkpoint_dir(variant, cache_root=cache) for variant in VARIANTS}


@pytest.fixture(scope="session")
def tiny_backbones(tiny_dirs: dict[str, Path]) -> dict[str, Any]:
    """Both tiny variants loaded through the real loader (do not mutate; restore attention if switched)."""
    from mmeb_dllm.backbones.lavida import LavidaBackbone

    return {variant: LavidaBackbone.from_pretrained(path) for variant, path in tiny_dirs.items()}
