"""Atomic file writes: a reader (or a rerun after ``kill -9``) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any, **dump_options: Any) -> None:
    atomic_write_text(path, json.dumps(data, **{"indent": 2, **dump_options}))


def patch_mteb_result_writes() -> None:
    """Make mteb's ``TaskResult.to_disk`` atomic (mteb writes result JSON in place)."""
    from mteb.results.task_result import TaskResult

    if getattr(TaskResult.to_disk, "_mmeb_dllm_atomic", False):
        return

    def to_disk(self: TaskResult, path: Path) -> None:
        json_obj = self.model_dump()
        json_obj["date"] = self.date.timestamp() if self.date else None
        self._round_scores(json_obj["scores"], 6)
        atomic_write_json(path, json_obj)

    to_disk._mmeb_dllm_atomic = True  # type: ignore[attr-defined]
    TaskResult.to_disk = to_disk  # type: ignore[method-assign]
