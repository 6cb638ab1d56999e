"""A plain-text score table read back from an mteb output folder (what ``mmeb-dllm run`` prints at the end)."""

from __future__ import annotations

import json
from pathlib import Path

from mmeb_dllm.benchmark.tasks import MAIN_SCORE


def _result_files(output_folder: str | Path, model_name: str) -> dict[str, Path]:
    """Newest result file per task name for ``model_name`` (any revision or experiment folder)."""
    folder = Path(output_folder) / "results" / model_name.replace("/", "__")
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.json"), key=lambda p: p.stat().st_mtime):
        if path.name not in {"model_meta.json"}:
            files[path.stem] = path
    return files


def _scores(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = next(iter(data.get("scores", {}).values()), [])
    return entries[0] if entries else {}


def print_summary(output_folder: str | Path, model: str, tasks: list[str], benchmarks: list[str]) -> None:
    import mteb

    meta = mteb.get_model_meta(model)
    files = _result_files(output_folder, meta.name)
    wanted: list[str] = []
    aggregates: list[str] = []
    for name in tasks:
        task = mteb.get_task(name)
        sub = getattr(task.metadata, "tasks", None)
        if sub:
            wanted.extend(t.metadata.name for t in sub)
            aggregates.append(name)
        else:
            wanted.append(name)
    for name in benchmarks:
        wanted.extend(t.metadata.name for t in mteb.get_benchmark(name).tasks)
    print(f"\nScores of {meta.name} (P@1 x 100) from {Path(output_folder).resolve()}")
    for name in dict.fromkeys(wanted):
        if name in files:
            score = _scores(files[name])
            flag = "  <= 2x chance: do not trust" if score.get("mmeb_below_chance_guard") else ""
            print(f"  {name:<40} {100 * score.get(MAIN_SCORE, score.get('main_score', float('nan'))):6.1f}{flag}")
        else:
            print(f"  {name:<40}   n/a")
    for name in aggregates:
        if name not in files:
            continue
        score = _scores(files[name])
        groups = ("CLS", "VQA", "RET", "VG", "IND", "OOD")
        parts = " ".join(f"{k}={100 * score[k]:.1f}" for k in groups if score.get(k) is not None)
        print(f"  {name + ' (overall)':<40} {100 * score['main_score']:6.1f}  {parts}")
