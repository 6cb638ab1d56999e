"""Fine-tuning learns (issue 4's acceptance): the tiny LaViDa fine-tuned with the ``tiny-cpu`` preset on the MMEB-mini
train split (Digits and Shapes), on CPU, against the untuned tiny model on MMEB-mini's classification subset (Digits,
Shapes, Photos), with the adapter evaluated by the stock ``mteb run`` command through its registered name.

The preset differs from the VLM2Vec defaults where random weights need it (see mmeb_dllm/finetune/presets.py); the
training time is measured by benchmarks/finetune_learning.py, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mteb
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import mmeb_dllm
from mmeb_dllm.adapters import adapter_hash
from mmeb_dllm.embed.embedder import Item
from mmeb_dllm.embed.mteb_encoder import MMEBEncoder
from mmeb_dllm.paths import tasks_dir
from tests.conftest import MINI_CLS_ADAPTER
from tests.finetune.conftest import subprocess_env

pytestmark = pytest.mark.slow

NAME = MINI_CLS_ADAPTER
CLS = ("Digits", "Shapes", "Photos")


@pytest.fixture(scope="module")
def adapter(mini_cls_adapter) -> Path:
    return mini_cls_adapter


@pytest.fixture(scope="module")
def cli_results(adapter, tmp_path_factory) -> Path:
    """``mteb run -m <adapter name> -t MMEB-mini`` in a subprocess; the run folder of its results."""
    output = tmp_path_factory.mktemp("mteb_output")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mteb"), "run", "-m", NAME, "-t", "MMEB-mini",
         "--output-folder", str(output), "--no-co2-tracker"],
        capture_output=True, text=True, timeout=600, cwd=output,
        env=subprocess_env(MMEB_DLLM_ADAPTERS=str(adapter.parent)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return output / "results" / f"mmeb-dllm__{NAME}" / adapter_hash(adapter)[:12]


def _score(folder: Path, task: str) -> float:
    return json.loads((folder / f"{task}.json").read_text())["scores"]["test"][0]["main_score"]


def _digits_p_at_1(encoder: MMEBEncoder) -> float:
    """Independent P@1 on MMEB-mini Digits from the encoder's own vectors (ground truth = candidate 0)."""
    root = tasks_dir() / "mini"
    rows = pq.read_table(next((root / "Digits").glob("test-*.parquet"))).to_pylist()
    hits = []
    for row in rows:
        image = Image.open(root / "eval_images" / row["qry_img_path"]).convert("RGB")
        vectors = encoder.embedder.embed([Item(row["qry_text"], image)] + [Item(t) for t in row["tgt_text"]],
                                         show_progress=False)
        sims = vectors[1:] @ vectors[0]
        hits.append(bool(sims[0] > np.delete(sims, 0).max()))
    return float(np.mean(hits))


def test_stock_mteb_cli_evaluates_the_adapter_by_name(adapter, cli_results):
    assert (cli_results / "MMEB-mini.json").is_file()
    meta = json.loads((cli_results / "model_meta.json").read_text())
    assert meta["name"] == f"mmeb-dllm/{NAME}" and meta["revision"] == adapter_hash(adapter)[:12]
    independent = _digits_p_at_1(MMEBEncoder("lavida-embed-tiny", adapter=str(adapter), device="cpu"))
    assert _score(cli_results, "MMEB-mini-Digits") == pytest.approx(independent, abs=1e-5)  # mteb rounds to 1e-6


def test_fine_tuned_tiny_model_beats_the_untuned_one_on_classification(adapter, cli_results, record_property):
    card = json.loads((adapter / "adapter_card.json").read_text())
    losses = card["loss_history"]
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.2

    mmeb_dllm.register()
    tasks = mteb.get_tasks(tasks=[f"MMEB-mini-{key}" for key in CLS])
    untuned_results = mteb.evaluate(mteb.get_model("lavida-embed-tiny", device="cpu"), tasks, cache=None,
                                    show_progress_bar=False)
    untuned = {r.task_name.removeprefix("MMEB-mini-"): r.get_score() for r in untuned_results.task_results}
    tuned = {key: _score(cli_results, f"MMEB-mini-{key}") for key in CLS}
    before, after = float(np.mean(list(untuned.values()))), float(np.mean(list(tuned.values())))
    record_property("cls_p_at_1", {"untuned": untuned, "tuned": tuned, "train_s": card["wall_time_s"]})
    print(f"MMEB-mini-CLS P@1: untuned {before:.3f} {untuned}, fine-tuned {after:.3f} {tuned}, "
          f"training {card['wall_time_s']:.0f} s")
    assert after >= before + 0.20, f"CLS P@1 {before:.3f} -> {after:.3f}"
