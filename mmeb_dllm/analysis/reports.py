"""The two diagnostics as functions: alignment of matched pairs, and P@1 + alignment per hidden layer."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmeb_dllm.analysis.alignment import alignment_metrics
from mmeb_dllm.analysis.pairs import TaskSample
from mmeb_dllm.analysis.plots import line_plot, tsne_pairs_plot
from mmeb_dllm.atomic import atomic_write_json
from mmeb_dllm.benchmark.tasks import mmeb_hit_at_1
from mmeb_dllm.embed.embedder import Embedder


def p_at_1(sample: TaskSample, query_vectors: np.ndarray, candidate_vectors: dict[str, np.ndarray]) -> float:
    """MMEB P@1 of the sampled rows (strict: a distinct candidate tying the ground truth is a miss)."""
    hits = []
    for query, ids in zip(query_vectors, sample.candidate_ids, strict=True):
        scores = {cid: float(query @ candidate_vectors[cid]) for cid in ids}
        hits.append(mmeb_hit_at_1(scores, ids, ids[0]))
    return float(np.mean(hits))


def alignment_report(embedder: Embedder, sample: TaskSample, out_dir: Path, *, model: str, seed: int) -> dict:
    """Embed the sampled pairs; write ``alignment.json`` and ``tsne.png`` into ``out_dir``; return the report."""
    queries = embedder.embed(sample.queries, show_progress=True)
    targets = embedder.embed(sample.targets, show_progress=True)
    report: dict[str, Any] = {
        "model": model,
        "task": sample.task,
        "rows": sample.rows,
        "seed": seed,
        "recipe": embedder.recipe.to_dict(),
        "metrics": alignment_metrics(queries, targets),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "alignment.json", report)
    tsne_pairs_plot(queries, targets, out_dir / "tsne.png", title=f"{model} on {sample.task}", seed=seed)
    return report


def _layer_vectors(embedder: Embedder, items: list, batch_size: int) -> np.ndarray:
    """``(layers, N, D)`` pooled, normalised vectors of every hidden layer."""
    chunks = []
    for start in tqdm(range(0, len(items), batch_size), desc="Layers", unit="batch", leave=False):
        with torch.inference_mode():
            chunks.append(embedder.forward_layers(items[start : start + batch_size]).cpu().numpy())
    return np.concatenate(chunks, axis=1)


def layers_report(embedder: Embedder, sample: TaskSample, out_dir: Path, *, model: str, batch_size: int = 8) -> list:
    """P@1 and alignment per hidden layer; writes ``layers.csv`` and ``layers.png``; returns the rows."""
    ids = list(sample.candidates)
    queries = _layer_vectors(embedder, sample.queries, batch_size)
    targets = _layer_vectors(embedder, sample.targets, batch_size)
    candidates = _layer_vectors(embedder, [sample.candidates[i] for i in ids], batch_size)
    rows = []
    for layer in range(queries.shape[0]):
        vectors = dict(zip(ids, candidates[layer], strict=True))
        metrics = alignment_metrics(queries[layer], targets[layer])
        rows.append({"layer": layer, "p_at_1": p_at_1(sample, queries[layer], vectors), **metrics})
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "layers.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    layers = [r["layer"] for r in rows]
    series = {
        "P@1": (layers, [100 * r["p_at_1"] for r in rows]),
        "margin x100": (layers, [100 * r["margin"] for r in rows]),
    }
    line_plot(
        series,
        out_dir / "layers.png",
        title=f"{model} on {sample.task}: quality per layer",
        xlabel="hidden layer (0 = embeddings)",
        ylabel="score",
    )
    (out_dir / "layers.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows
