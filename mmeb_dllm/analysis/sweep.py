"""``mmeb-dllm sweep data-scale``: fine-tune at several training-set sizes, evaluate each, plot P@1 vs samples.

For every model and scale (rows per training dataset, a seeded subset) the sweep trains an adapter into
``<out>/adapters/<model>-s<scale>``, evaluates it on the chosen meta-task's datasets and appends a row to
``<out>/sweep.csv``. A rerun skips every (model, scale) already in the CSV. The plot ``<out>/sweep.png`` has one line
per model (P@1 vs training samples) and an optional reference line (e.g. a published score).
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from mmeb_dllm.analysis.plots import line_plot
from mmeb_dllm.errors import ConfigError

CSV_FIELDS = ("model", "scale", "train_samples", "p_at_1", "tasks", "steps", "final_loss", "train_seconds", "adapter")


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one finished (model, scale); the file is rewritten atomically so a kill never truncates it."""
    from mmeb_dllm.atomic import atomic_write_text

    rows = [*read_rows(path), {k: str(row[k]) for k in CSV_FIELDS}]
    lines = [",".join(CSV_FIELDS)] + [",".join(_csv_cell(r[k]) for k in CSV_FIELDS) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_cell(value: str) -> str:
    return f'"{value}"' if ("," in value or '"' in value) else value


def evaluation_tasks(benchmark: str, meta_task: str) -> list[str]:
    """Dataset task names of ``<benchmark>-<meta_task>`` (e.g. MMEB-mini-CLS)."""
    import mteb

    import mmeb_dllm

    mmeb_dllm.register()
    aggregate = mteb.get_task(f"{benchmark}-{meta_task}")
    return [task.metadata.name for task in aggregate.metadata.tasks]


def evaluate_adapter(base_model: str, adapter: Path | None, tasks: list[str]) -> float:
    """Mean P@1 of the base model (+ adapter) over ``tasks`` (mteb's evaluation, no result files)."""
    import mteb
    import numpy as np

    from mmeb_dllm.embed.mteb_encoder import MMEBEncoder

    encoder = MMEBEncoder(base_model, None, device="cpu", **({"adapter": str(adapter)} if adapter else {}))
    encoder.mteb_model_meta = mteb.get_model_meta(base_model)
    result = mteb.evaluate(encoder, mteb.get_tasks(tasks=tasks), cache=None, co2_tracker=False,
                           show_progress_bar=False)
    return float(np.mean([tr.get_score() for tr in result.task_results]))


def run_sweep(
    models: list[str],
    scales: list[int],
    out: Path,
    *,
    benchmark: str,
    meta_task: str,
    train: tuple[str, ...],
    overrides: dict[str, Any],
) -> list[dict[str, str]]:
    from mmeb_dllm.finetune.config import FinetuneConfig
    from mmeb_dllm.finetune.trainer import train as train_adapter

    csv_path = out / "sweep.csv"
    tasks = evaluation_tasks(benchmark, meta_task)
    done = {(r["model"], int(r["scale"])) for r in read_rows(csv_path)}
    for model in models:
        for scale in scales:
            if (model, scale) in done:
                print(f"sweep: {model} at {scale} rows per dataset already done, skipped")
                continue
            adapter = out / "adapters" / f"{model.replace('/', '__')}-s{scale}"
            config = FinetuneConfig(model=model, out=str(adapter), train=train, samples_per_task=scale, **overrides)
            started = time.perf_counter()
            result = train_adapter(config)
            card = result.card or {}
            score = evaluate_adapter(model, adapter, tasks)
            append_row(csv_path, {
                "model": model,
                "scale": scale,
                "train_samples": sum(d.get("rows_used", 0) for d in card.get("data", [])) or "",
                "p_at_1": f"{score:.6f}",
                "tasks": " ".join(tasks),
                "steps": result.steps_done,
                "final_loss": f"{result.losses[-1]:.6f}" if result.losses else "",
                "train_seconds": f"{time.perf_counter() - started:.1f}",
                "adapter": str(adapter),
            })
            print(f"sweep: {model} at {scale} rows per dataset: P@1 {100 * score:.1f} on {benchmark}-{meta_task}")
    return read_rows(csv_path)


def plot_sweep(rows: list[dict[str, str]], out: Path, *, title: str, reference: float | None) -> Path:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in sorted(rows, key=lambda r: int(r["scale"])):
        xs, ys = series.setdefault(row["model"], ([], []))
        xs.append(float(row["train_samples"] or row["scale"]))
        ys.append(100 * float(row["p_at_1"]))
    return line_plot(series, out / "sweep.png", title=title, xlabel="training samples", ylabel="P@1",
                     reference=reference, log_x=True)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` -> FinetuneConfig fields, converted to each field's type."""
    from mmeb_dllm.finetune.config import FinetuneConfig

    types = {f.name: f.type for f in fields(FinetuneConfig)}
    converted: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        key = key.replace("-", "_")
        if key not in types or key in {"model", "out", "train", "samples_per_task"}:
            raise ConfigError(f"--set {pair}: not a fine-tune option the sweep may set (see mmeb-dllm finetune -h)")
        kind = str(types[key])
        if "bool" in kind:
            converted[key] = value.lower() in {"1", "true", "yes", "on"}
        elif "int" in kind and "float" not in kind:
            converted[key] = int(value)
        elif "float" in kind:
            converted[key] = float(value)
        else:
            converted[key] = value
    return converted


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmeb-dllm sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    scale = sub.add_parser("data-scale", help="P@1 vs fine-tuning data size")
    scale.add_argument("--model", action="append", required=True, help="zoo model (repeat for several lines)")
    scale.add_argument("--scales", required=True, help="comma-separated rows per training dataset, e.g. 8,32,128")
    scale.add_argument("--meta-task", default="CLS", choices=("CLS", "VQA", "RET", "VG"))
    scale.add_argument("--benchmark", default="MMEB-mini", help="evaluation benchmark (MMEB-mini or MMEB)")
    scale.add_argument("--train", default="MMEB-mini", help="training data (see mmeb-dllm finetune --train)")
    scale.add_argument("--out", type=Path, default=Path("sweeps/data-scale"))
    scale.add_argument("--reference", type=float, default=None, help="horizontal reference line (P@1 x 100)")
    scale.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="fine-tune option for every run, e.g. --set steps=40 --set learning_rate=3e-3")
    args = parser.parse_args(argv)
    scales = sorted({int(s) for s in args.scales.split(",") if s.strip()})
    if not scales or min(scales) < 1:
        raise ConfigError(f"--scales {args.scales!r}: give positive integers, e.g. 8,32,128")
    from mmeb_dllm.finetune.config import parse_list

    rows = run_sweep(args.model, scales, args.out, benchmark=args.benchmark, meta_task=args.meta_task,
                     train=parse_list(args.train), overrides=_overrides(args.set))
    plot = plot_sweep(rows, args.out, title=f"data scale: {args.benchmark}-{args.meta_task}", reference=args.reference)
    print(f"wrote {args.out / 'sweep.csv'} and {plot}")
    return 0
