"""Meta-task, IND, OOD and overall means recomputed from per-dataset scores (mmeb.md section 5).

Every aggregate is an unweighted mean over its datasets; the overall is the flat mean over all datasets (not the
mean of the four meta-task means). A group is reported only when every one of its datasets has a score, so a partial
submission gets the aggregates of its complete groups and no overall.
"""

from __future__ import annotations

from collections.abc import Mapping

from mmeb_dllm.benchmark.table import META_TASKS, SPLITS, BenchmarkTable


def groups(table: BenchmarkTable) -> dict[str, list[str]]:
    """Aggregate name -> dataset keys, in table order: CLS, VQA, RET, VG, IND, OOD, Overall."""
    out: dict[str, list[str]] = {}
    for meta in META_TASKS:
        out[meta] = [d.key for d in table.datasets if d.meta_task == meta]
    for split in SPLITS:
        out[split] = [d.key for d in table.datasets if d.split == split]
    out["Overall"] = [d.key for d in table.datasets]
    return {name: keys for name, keys in out.items() if keys}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def aggregate(scores: Mapping[str, float], table: BenchmarkTable) -> dict[str, float]:
    """Means of the groups whose datasets all have a score in ``scores`` (any unit: the mean keeps it)."""
    return {
        name: mean([scores[k] for k in keys])
        for name, keys in groups(table).items()
        if all(k in scores for k in keys)
    }


def subset_means(scores: Mapping[str, float], members: list[str], table: BenchmarkTable) -> dict[str, float]:
    """What an mteb aggregate file over ``members`` reports: the flat mean plus each meta-task/split mean over the
    members that belong to it (keys ``main_score``, ``CLS``, ..., ``OOD``)."""
    out = {"main_score": mean([scores[k] for k in members])}
    for name, keys in groups(table).items():
        if name == "Overall":
            continue
        inside = [k for k in members if k in keys]
        if inside:
            out[name] = mean([scores[k] for k in inside])
    return out
