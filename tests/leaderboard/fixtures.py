"""Synthetic mteb output folders in the exact layout and schema `mteb run` writes for MMEB / MMEB-mini tasks.

Each dataset gets a random rank of the ground truth per query; every metric is computed from those ranks (one
positive per query), so tests can check exports and aggregates against an independent computation.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

from mmeb_dllm.benchmark.table import load_table

K_VALUES = (1, 3, 5, 10, 20, 100, 1000)


def ranks_for(seed: int, n: int, skill: float) -> list[int]:
    """1-based rank of the ground truth for each of ``n`` queries; ``skill`` in [0, 1] is roughly P@1."""
    rng = random.Random(seed)
    return [1 if rng.random() < skill else rng.randint(2, 60) for _ in range(n)]


def metrics_from_ranks(ranks: list[int]) -> dict[str, float]:
    """mteb's retrieval metrics for one relevant item per query, from the ground truth's ranks."""
    n = len(ranks)
    out: dict[str, float] = {}
    for k in K_VALUES:
        hits = [r <= k for r in ranks]
        out[f"ndcg_at_{k}"] = round(sum(1 / math.log2(r + 1) for r in ranks if r <= k) / n, 5)
        out[f"map_at_{k}"] = round(sum(1 / r for r in ranks if r <= k) / n, 5)
        out[f"recall_at_{k}"] = round(sum(hits) / n, 5)
        out[f"precision_at_{k}"] = round(sum(hits) / n / k, 5)
        out[f"mrr_at_{k}"] = round(sum(1 / r for r in ranks if r <= k) / n, 6)
        out[f"hit_rate_at_{k}"] = round(sum(hits) / n, 5)
    out["accuracy"] = out["recall_at_1"]
    return out


def recipe(model: str) -> dict[str, Any]:
    return {
        "model": model, "checkpoint": "org/" + model.split("/")[-1], "revision": "r1", "resolved_revision": "r1",
        "adapter": None, "adapter_hash": None, "pooling": "last", "num_mask_tokens": 8, "attention": "default",
        "instruction": "mmeb", "image_resolution": "anyres", "dtype": "float32", "normalize": True,
    }


def task_json(board: str, key: str, ranks: list[int], model: str, revision: str, recipe_key: str) -> dict[str, Any]:
    spec = load_table(board).dataset(key)
    hit = sum(r == 1 for r in ranks) / len(ranks)
    scores: dict[str, Any] = metrics_from_ranks(ranks)
    scores.update(
        mmeb_hit_at_1=hit,
        mmeb_num_queries=float(len(ranks)),
        mmeb_chance_at_1=1.0 / spec.num_candidates,
        mmeb_below_chance_guard=float(hit <= 2.0 / spec.num_candidates),
        mmeb_protocol={
            "packages": {"mmeb-dllm": "0.1.0", "mteb": "2.26.24"},
            "model": {"name": model, "revision": revision, "recipe": recipe(model), "recipe_key": recipe_key,
                      "backbone": {"class": "LavidaBackbone" if "lavida" in model else "ToyBackbone"}},
            "instructions": {"placement": "mmeb", "query_instruction": spec.query_instruction,
                             "target_instruction": spec.target_instruction},
            "data": {"dataset": key, "source": "/somewhere/local", "revision": "abc", "files": ["test.parquet"]},
            "candidates": {"queries": len(ranks), "declared": spec.num_candidates},
        },
        main_score=hit,
        hf_subset="default",
        languages=["eng-Latn"],
        mteb_version="2.26.24",
    )
    return {
        "dataset_revision": "abc",
        "task_name": f"{board}-{key}",
        "mteb_version": "2.26.24",
        "scores": {"test": [scores]},
        "evaluation_time": 1.5,
        "kg_co2_emissions": float("nan"),
        "date": 1795722199.5,
        "evaluation_phases": None,
    }


def model_meta(model: str, revision: str, n_parameters: int | None = 2_000_000_000) -> dict[str, Any]:
    return {
        "loader_kwargs": {"pooling": "last", "attention": "default", "instruction": "mmeb", "device": "cpu"},
        "name": model, "revision": revision, "release_date": "2026-01-01", "languages": ["eng-Latn"],
        "n_parameters": n_parameters, "max_tokens": 4096.0, "embed_dim": 64, "license": "mit", "open_weights": True,
        "reference": "https://example.org/model", "similarity_fn_name": "cosine", "use_instructions": True,
        "training_datasets": [], "adapted_from": None, "modalities": ["image", "text"], "experiment_kwargs": None,
        "framework": ["PyTorch"], "loader": "load_encoder",
    }


def write_run(
    out: Path,
    *,
    board: str = "MMEB",
    model: str = "test-org/ar-embed",
    revision: str = "r1",
    skill: float = 0.5,
    seed: int = 0,
    keys: list[str] | None = None,
    with_aggregate: bool = True,
) -> Path:
    """Write ``out/results/<org>__<model>/<revision>/`` like `mteb run`; returns the run folder.

    ``keys`` limits the datasets (default: all of the board); the flat-mean aggregate file (``MMEB.json``) is
    written when every dataset is present and ``with_aggregate``.
    """
    table = load_table(board)
    run = out / "results" / model.replace("/", "__") / revision
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    recipe_key = hashlib.sha256(model.encode()).hexdigest()[:20]
    chosen = keys if keys is not None else [d.key for d in table.datasets]
    hits = {}
    for index, key in enumerate(chosen):
        spec = table.dataset(key)
        ranks = ranks_for(seed * 1000 + index, spec.num_queries, skill)
        data = task_json(board, key, ranks, model, revision, recipe_key)
        hits[key] = data["scores"]["test"][0]["mmeb_hit_at_1"]
        (run / f"{board}-{key}.json").write_text(json.dumps(data, indent=2))
    if with_aggregate and len(chosen) == len(table.datasets):
        agg: dict[str, Any] = {"mmeb_hit_at_1": sum(hits.values()) / len(hits)}
        agg["main_score"] = agg["mmeb_hit_at_1"]
        for group in ("CLS", "VQA", "RET", "VG", "IND", "OOD"):
            members = [d.key for d in table.datasets if group in (d.meta_task, d.split)]
            agg[group] = round(sum(hits[k] for k in members) / len(members), 6)
        agg.update(hf_subset="default", languages=["eng-Latn"], mteb_version="2.26.24")
        (run / f"{board}.json").write_text(json.dumps({
            "dataset_revision": "1", "task_name": board, "mteb_version": "2.26.24", "scores": {"test": [agg]},
            "evaluation_time": 10.0, "kg_co2_emissions": None, "date": 1795722238.4, "evaluation_phases": None,
        }, indent=2))
    (run / "model_meta.json").write_text(json.dumps(model_meta(model, revision), indent=4))
    (run / "run_settings.jsonl").write_text('{"task": "x"}\n')
    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to prove a rejected submission changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
