"""``mteb mock-run`` (mteb's own offline checks over ~50 mock text and image tasks) for the tiny LaViDa variants."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_stock_mteb_mock_run_passes_for_tiny_lavida(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"MMEB_DATA_DIR", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MMEB_DLLM_CACHE=str(tmp_path / "cache"))
    runs = {}
    for name in ("lavida-embed-tiny", "lavida-dream-embed-tiny"):
        folder = tmp_path / name
        folder.mkdir()
        runs[name] = subprocess.Popen([str(BIN / "mteb"), "mock-run", "-m", name, "--device", "cpu"], cwd=folder,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, proc in runs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        assert f"`mmeb-dllm/{name}` passed all expected checks" in out, out[-3000:]
