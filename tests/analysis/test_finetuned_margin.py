"""The seed paper's alignment diagnostic sees fine-tuning: ``mmeb-dllm analyze alignment`` on the same seeded sample
of MMEB-mini Digits gives the fine-tuned tiny LaViDa (``tiny-cpu`` preset) a larger matched-pair margin than the
untuned one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MINI_CLS_ADAPTER
from tests.finetune.conftest import subprocess_env

pytestmark = pytest.mark.slow

TASK = "MMEB-mini-Digits"


def _alignment(model: str, adapters: Path, out: Path) -> dict:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mmeb-dllm"), "analyze", "alignment", "-m", model, "-t", TASK,
         "--sample", "30", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=subprocess_env(MMEB_DLLM_ADAPTERS=str(adapters)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / model / TASK / "alignment.json").read_text())


def test_fine_tuned_margin_exceeds_the_untuned_margin(mini_cls_adapter, tmp_path, record_property):
    untuned = _alignment("lavida-embed-tiny", mini_cls_adapter.parent, tmp_path)
    tuned = _alignment(MINI_CLS_ADAPTER, mini_cls_adapter.parent, tmp_path)
    assert tuned["rows"] == untuned["rows"] and len(tuned["rows"]) == 30  # the same pairs for both models
    before, after = untuned["metrics"], tuned["metrics"]
    record_property("margin", {"untuned": before["margin"], "tuned": after["margin"]})
    print(f"{TASK} margin: untuned {before['margin']:.4f}, fine-tuned {after['margin']:.4f}")
    assert after["margin"] > before["margin"]
