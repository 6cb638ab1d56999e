"""Where the package's data lives: the task tables and bundled samples (``tasks/``) and the local caches."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def tasks_dir() -> Path:
    """The ``tasks/`` data folder: shipped inside the wheel as ``mmeb_dllm/_tasks``, or the source checkout's."""
    for candidate in (_PACKAGE_DIR / "_tasks", _PACKAGE_DIR.parent / "tasks"):
        if (candidate / "mmeb.toml").is_file():
            return candidate
    raise FileNotFoundError(
        f"mmeb_dllm's task tables are missing: looked for mmeb.toml in {_PACKAGE_DIR / '_tasks'} and "
        f"{_PACKAGE_DIR.parent / 'tasks'}. Reinstall the package (pip install --force-reinstall mmeb-dllm)."
    )


def cache_dir() -> Path:
    """Root of mmeb_dllm's own caches (tiny checkpoints, extracted images): ``$MMEB_DLLM_CACHE`` or ~/.cache."""
    root = os.environ.get("MMEB_DLLM_CACHE") or Path.home() / ".cache" / "mmeb_dllm"
    return Path(root)
