"""Exports of a stored submission for upstream boards.

- :func:`mmeb_json`: the MMEB-Leaderboard Space format (mmeb.md section 6): ``{"metadata": {...}, "metrics":
  {"image": {<36 dataset keys>: {26 metrics} | "FILE_N/A"}}}``. With exactly one positive per query, every @1 metric
  equals hit@1 (our ``mmeb_hit_at_1``); @5/@10 come from mteb's retrieval metrics (ndcg_linear = ndcg_exponential =
  mteb ndcg for binary relevance; hit@k = mteb hit rate = recall@k; f1@k = 2 hit@k / (k + 1)).
- :func:`write_mteb_results`: the mteb results-repository layout
  ``results/<org>__<model>/<revision>/MMEB-<key>.json`` + ``model_meta.json``, loadable by mteb and re-submittable
  here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.leaderboard.schema import LeaderboardError
from mmeb_dllm.leaderboard.store import dump_json, write_atomic

K_VALUES = (1, 5, 10)
METRIC_NAMES = ("hit", "ndcg_linear", "ndcg_exponential", "precision", "recall", "f1", "map", "mrr")
MMEB_METRIC_KEYS = (*(f"{name}@{k}" for name in METRIC_NAMES for k in K_VALUES), "num_pred", "num_data")
MISSING = "FILE_N/A"


def dataset_metrics(entry: Mapping[str, Any]) -> dict[str, float | int]:
    """The 26 MMEB score-file metrics of one dataset from a stored per-dataset entry."""
    metrics = entry["metrics"]
    out: dict[str, float | int] = {}
    for k in K_VALUES:
        if k == 1:
            hit = ndcg = precision = recall = mean_ap = mrr = entry["hit_at_1"]
        else:
            recall = metrics[f"recall_at_{k}"]
            hit = metrics.get(f"hit_rate_at_{k}", recall)
            ndcg, precision = metrics[f"ndcg_at_{k}"], metrics[f"precision_at_{k}"]
            mean_ap, mrr = metrics[f"map_at_{k}"], metrics[f"mrr_at_{k}"]
        values = {
            "hit": hit, "ndcg_linear": ndcg, "ndcg_exponential": ndcg, "precision": precision, "recall": recall,
            "f1": 2.0 * hit / (k + 1), "map": mean_ap, "mrr": mrr,
        }
        for name, value in values.items():
            out[f"{name}@{k}"] = float(value)
    out["num_pred"] = out["num_data"] = int(entry["num_queries"])
    return {key: out[key] for key in MMEB_METRIC_KEYS}


def mmeb_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """The MMEB leaderboard submission JSON of an MMEB (36-dataset) record; missing datasets are ``FILE_N/A``."""
    if record["benchmark"] != "MMEB":
        raise LeaderboardError(
            f"the MMEB leaderboard JSON needs an MMEB result; {record['model']['name']} is on {record['benchmark']}"
        )
    model = record["model"]
    recipe = record["recipe"]
    image = {
        spec.key: dataset_metrics(record["datasets"][spec.key]) if spec.key in record["datasets"] else MISSING
        for spec in load_table("MMEB").datasets
    }
    return {
        "metadata": {
            "model_name": model["name"],
            "model_backbone": recipe.get("checkpoint") or record["model_meta"].get("adapted_from") or model["name"],
            "model_size": model.get("size_b"),
            "embedding_dimension": model.get("embed_dim"),
            "max_length_tokens": model.get("max_tokens"),
            "model_release_date": model.get("release_date"),
            "data_source": record["source"],
            "url": record.get("url", ""),
            "report_generated_date": record["submitted"],
        },
        "metrics": {"image": image},
    }


def write_mmeb_json(record: Mapping[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / f"{record['model']['name'].replace('/', '__')}.json"
    write_atomic(path, dump_json(mmeb_json(record)))
    return path


def _task_result(record: Mapping[str, Any], key: str) -> dict[str, Any]:
    entry = record["datasets"][key]
    board = record["benchmark"]
    scores: dict[str, Any] = dict(entry["metrics"])
    scores.update(mmeb_hit_at_1=entry["hit_at_1"], main_score=entry["hit_at_1"], mmeb_num_queries=entry["num_queries"])
    if entry.get("chance_at_1") is not None:
        scores["mmeb_chance_at_1"] = entry["chance_at_1"]
    scores["mmeb_below_chance_guard"] = float(entry.get("below_chance_guard", False))
    if entry.get("protocol") is not None:
        protocol = {k: v for k, v in entry["protocol"].items() if k != "backbone"}
        protocol["packages"] = record.get("packages", {})
        protocol["model"] = {
            "name": record["model"]["name"], "revision": record["model"]["revision"], "recipe": record["recipe"],
            "recipe_key": record["recipe_key"], "backbone": entry["protocol"].get("backbone"),
        }
        scores["mmeb_protocol"] = protocol
    scores.update(hf_subset="default", languages=["eng-Latn"])
    return {
        "dataset_revision": entry["dataset_revision"],
        "task_name": f"{board}-{key}",
        "mteb_version": entry["mteb_version"],
        "scores": {"test": [scores]},
        "evaluation_time": entry.get("evaluation_time"),
        "kg_co2_emissions": None,
        "date": entry.get("timestamp"),
    }


def write_mteb_results(record: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write the record in mteb's results-repository layout under ``out_dir``; returns the run folder."""
    model = record["model"]
    run = Path(out_dir) / "results" / model["name"].replace("/", "__") / model["revision"]
    for key in record["datasets"]:
        write_atomic(run / f"{record['benchmark']}-{key}.json", dump_json(_task_result(record, key)))
    write_atomic(run / "model_meta.json", dump_json(record["model_meta"]))
    return run
