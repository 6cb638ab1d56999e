"""End to end through the stock ``mteb`` CLI on MMEB-layout data, checked against an independent P@1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mteb
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.embed.embedder import Item
from tests.mmeb_fixture import FIXTURE_DATASETS, unique_items

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _env(data_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MMEB_DATA_DIR", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if data_dir is not None:
        env["MMEB_DATA_DIR"] = str(data_dir)
    return env


def _main_score(folder: Path, task: str) -> dict:
    [path] = list((folder / "results" / "mmeb-dllm__lavida-embed-tiny").rglob(f"{task}.json"))
    return json.loads(path.read_text())["scores"]["test"][0]


def _independent_hits(data_dir: Path, key: str, encoder) -> tuple[int, int]:
    """Hits and queries from the model's own vectors: candidate 0 must beat every other distinct (text, image)
    candidate of its row strictly."""
    rows = pq.read_table(next((data_dir / key).glob("test-*.parquet"))).to_pylist()

    def vec(text: str, path: str) -> np.ndarray:
        image = Image.open(data_dir / "eval_images" / path).convert("RGB") if path else None
        return encoder.embedder.embed([Item(text, image)], show_progress=False)[0]

    hits = []
    for row in rows:
        query = vec(row["qry_text"], row["qry_img_path"])
        cands = list(zip(row["tgt_text"], row["tgt_img_path"], strict=True))
        sims = np.array([float(query @ vec(t, p)) for t, p in cands])
        others = [s for c, s in zip(cands, sims, strict=True) if c != cands[0]]
        hits.append(sims[0] > max(others))
    return int(np.sum(hits)), len(hits)


def test_stock_cli_scores_equal_an_independent_computation(mmeb_data_dir, tmp_path):
    out = subprocess.run(
        [
            str(BIN / "mteb"),
            "run",
            "-m",
            "lavida-embed-tiny",
            "-t",
            *[f"MMEB-{k}" for k in FIXTURE_DATASETS],
            "--output-folder",
            str(tmp_path),
            "--no-co2-tracker",
        ],
        capture_output=True,
        text=True,
        env=_env(mmeb_data_dir),
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    encoder = mteb.get_model("lavida-embed-tiny", device="cpu")
    for key in FIXTURE_DATASETS:
        scores = _main_score(tmp_path, f"MMEB-{key}")
        assert scores["main_score"] == scores["mmeb_hit_at_1"]
        hits, queries = _independent_hits(mmeb_data_dir, key, encoder)
        assert scores["mmeb_num_queries"] == queries
        # mteb stores scores rounded to 5 decimals: compare hit counts exactly
        assert round(scores["mmeb_hit_at_1"] * queries) == hits
        assert scores["mmeb_hit_at_1"] == pytest.approx(hits / queries, abs=1e-5)
    meta = json.loads(next(tmp_path.rglob("model_meta.json")).read_text())
    assert meta["loader_kwargs"]["pooling"] == "last" and meta["revision"] == "tiny-v2"


@pytest.mark.parametrize("key", FIXTURE_DATASETS)
def test_embedder_encodes_each_unique_item_once(mmeb_data_dir, key, monkeypatch):
    monkeypatch.setenv("MMEB_DATA_DIR", str(mmeb_data_dir))
    encoder = mteb.get_model("lavida-embed-tiny", device="cpu")
    mteb.evaluate(
        encoder, mteb.get_tasks(tasks=[f"MMEB-{key}"]), cache=None, co2_tracker=False, show_progress_bar=False
    )
    assert encoder.embedder.items_encoded == unique_items(mmeb_data_dir, key)


def test_recipe_options_go_to_an_experiment_folder(mmeb_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MMEB_DATA_DIR", str(mmeb_data_dir))
    encoder = mteb.get_model("lavida-embed-tiny", device="cpu", pooling="mask", num_mask_tokens=4)
    assert encoder.recipe.pooling == "mask" and encoder.recipe.num_mask_tokens == 4
    mteb.evaluate(
        encoder,
        mteb.get_tasks(tasks=["MMEB-VOC2007"]),
        cache=mteb.ResultCache(tmp_path),
        co2_tracker=False,
        show_progress_bar=False,
    )
    [result] = list(tmp_path.rglob("MMEB-VOC2007.json"))
    assert "pooling_mask" in str(result.parent) and "num_mask_tokens_4" in str(result.parent)


def test_readme_main_job_prints_scores_and_aggregates_correctly(tmp_path):
    out = subprocess.run(
        [
            str(BIN / "mmeb-dllm"),
            "run",
            "-m",
            "lavida-embed-tiny",
            "-t",
            "MMEB-mini",
            "--output-folder",
            str(tmp_path),
            "--no-co2-tracker",
        ],
        capture_output=True,
        text=True,
        env=_env(None),
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = load_table("MMEB-mini")
    leaves = {spec.key: _main_score(tmp_path, f"MMEB-mini-{spec.key}")["main_score"] for spec in table.datasets}
    overall = _main_score(tmp_path, "MMEB-mini")
    assert overall["main_score"] == pytest.approx(np.mean(list(leaves.values())), abs=1e-5)  # 5-decimal JSON
    for group in ("CLS", "VQA", "RET", "VG", "IND", "OOD"):
        members = [leaves[s.key] for s in table.datasets if group in (s.meta_task, s.split)]
        assert overall[group] == pytest.approx(np.mean(members), abs=1e-5), group
    for spec in table.datasets:
        assert f"MMEB-mini-{spec.key}" in out.stdout
    assert "MMEB-mini (overall)" in out.stdout
    summary = (
        mteb.ResultCache(tmp_path)
        .load_results(
            models=["mmeb-dllm/lavida-embed-tiny"], tasks=mteb.get_benchmark("MMEB-mini"), include_remote=False
        )
        .get_benchmark_result()
    )
    for column, group in (
        ("Meta-task::CLS", "CLS"),
        ("Meta-task::VG", "VG"),
        ("Split::IND", "IND"),
        ("Split::OOD", "OOD"),
    ):
        assert summary[f"__cg__{column}"].iloc[0] == pytest.approx(overall[group], abs=1e-5), column
