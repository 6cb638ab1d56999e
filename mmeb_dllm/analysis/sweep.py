"""``mmeb-dllm sweep data-scale``: fine-tune at several training-set sizes, evaluate each, plot P@1 vs samples.

For every model and scale (rows per training dataset, a seeded subset) the sweep trains an adapter into
``<out>/adapters/<model>-s<scale>``, evaluates it on the chosen meta-task's datasets and appends a row to
``<out>/sweep.csv`` (rewritten atomically). A rerun skips every (model, scale) the CSV holds for the same evaluation
datasets, evaluates an adapter that finished before a kill without retraining it, and resumes a killed fine-tune
from its checkpoint; an adapter made with other fine-tune options than the rerun's is refused. The plot
``<out>/sweep.png`` has one line per model (P@1 vs training samples) and an optional reference line (e.g. a
published score).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from mmeb_dllm.analysis.plots import line_plot
from mmeb_dllm.errors import ConfigError
from mmeb_dllm.finetune.card import CARD_FILE, read_card
from mmeb_dllm.finetune.config import FinetuneConfig, recipe_differences

CSV_FIELDS = (
    "model", "scale", "train_samples", "p_at_1", "tasks", "steps", "final_loss", "train_seconds", "eval_seconds",
    "adapter",
)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a sweep CSV (none when it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one finished (model, scale); the file is rewritten atomically so a kill never truncates it."""
    from mmeb_dllm.atomic import atomic_write_text

    rows = [*read_rows(path), {k: str(row[k]) for k in CSV_FIELDS}]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def evaluation_tasks(benchmark: str, meta_task: str) -> list[str]:
    """Dataset task names of ``<benchmark>-<meta_task>`` (e.g. MMEB-mini-CLS)."""
    import mteb

    import mmeb_dllm

    mmeb_dllm.register()
    aggregate = mteb.get_task(f"{benchmark}-{meta_task}")
    return [task.metadata.name for task in aggregate.metadata.tasks]


def evaluate_adapter(base_model: str, adapter: Path | None, tasks: list[str], *, device: str = "cpu") -> float:
    """Mean P@1 of the base model (+ adapter) over ``tasks`` (mteb's evaluation, no result files)."""
    import mteb
    import numpy as np

    from mmeb_dllm.embed.mteb_encoder import MMEBEncoder

    encoder = MMEBEncoder(base_model, None, device=device, **({"adapter": str(adapter)} if adapter else {}))
    encoder.mteb_model_meta = mteb.get_model_meta(base_model)
    result = mteb.evaluate(encoder, mteb.get_tasks(tasks=tasks), cache=None, co2_tracker=False,
                           show_progress_bar=False)
    return float(np.mean([tr.get_score() for tr in result.task_results]))


def adapter_folder(out: Path, model: str, scale: int) -> Path:
    """Where the sweep keeps the adapter of ``model`` at ``scale`` rows per dataset."""
    return out / "adapters" / f"{model.replace('/', '__')}-s{scale}"


def finished_card(adapter: Path, config: FinetuneConfig) -> dict[str, Any] | None:
    """The card of a finished adapter in ``adapter`` made with ``config``'s recipe, or None when none is there.

    A finished adapter of another recipe (the sweep's ``--set`` options or ``--train`` changed since) raises
    :class:`ConfigError`: its CSV row and adapter would silently mix two recipes in one plot.
    """
    if not (adapter / CARD_FILE).is_file():
        return None
    card = read_card(adapter)
    details = recipe_differences(card["finetune_recipe"], json.loads(json.dumps(config.recipe())))
    if details:
        raise ConfigError(
            f"{adapter} holds an adapter made with other fine-tune options ({details}); rerun with the options it "
            f"was made with, or use another --out for the new recipe"
        )
    return card


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
    """Train (or reuse) and evaluate every (model, scale) not yet in ``<out>/sweep.csv``; return the CSV rows
    evaluated on this meta-task's datasets.

    A finished (model, scale, tasks) row is skipped; an adapter finished before a kill (no row yet) is evaluated
    without retraining; a checkpoint left by a killed fine-tune is resumed by the trainer.
    """
    from mmeb_dllm.finetune.trainer import train as train_adapter
    from mmeb_dllm.zoo import get_spec

    models = list(dict.fromkeys(get_spec(model).name for model in models))  # one row per model, alias or not
    csv_path = out / "sweep.csv"
    tasks = evaluation_tasks(benchmark, meta_task)
    task_list = " ".join(tasks)
    done = {(r["model"], int(r["scale"])) for r in read_rows(csv_path) if r["tasks"] == task_list}
    for model in models:
        for scale in scales:
            adapter = adapter_folder(out, model, scale)
            config = FinetuneConfig(model=model, out=str(adapter), train=train, samples_per_task=scale, **overrides)
            card = finished_card(adapter, config)
            if (model, scale) in done:
                print(f"sweep: {model} at {scale} rows per dataset already done, skipped")
                continue
            if card is None:
                train_adapter(config)
                card = read_card(adapter)
            else:
                print(f"sweep: {model} at {scale} rows per dataset: reusing the finished adapter {adapter}")
            used = {d["dataset"]: d["rows_used"] for d in card["data"]}
            short = {name: rows for name, rows in used.items() if rows < scale}
            if short:
                print(f"sweep: scale {scale} exceeds the rows of {sorted(short)}; those use all their rows {short}")
            started = time.perf_counter()
            score = evaluate_adapter(model, adapter, tasks, device=_evaluation_device(config.device))
            losses = card.get("loss_history") or []
            append_row(csv_path, {
                "model": model,
                "scale": scale,
                "train_samples": sum(used.values()),
                "p_at_1": f"{score:.6f}",
                "tasks": task_list,
                "steps": card["steps"],
                "final_loss": f"{losses[-1]:.6f}" if losses else "",
                "train_seconds": f"{float(card.get('wall_time_s') or 0.0):.1f}",
                "eval_seconds": f"{time.perf_counter() - started:.1f}",
                "adapter": str(adapter),
            })
            print(f"sweep: {model} at {scale} rows per dataset: P@1 {100 * score:.1f} on {benchmark}-{meta_task}")
    return [r for r in read_rows(csv_path) if r["tasks"] == task_list]


def _evaluation_device(training_device: str) -> str:
    """Evaluate where the fine-tune ran: ``auto`` means the first GPU when there is one."""
    if training_device != "auto":
        return training_device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
    types = {f.name: f.type for f in fields(FinetuneConfig)}
    converted: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if key not in types or key in {"model", "out", "train", "samples_per_task"}:
            raise ConfigError(
                f"--set {pair}: not a fine-tune option the sweep may set (model, out, train and samples_per_task "
                f"are the sweep's own; see mmeb-dllm finetune -h)"
            )
        if not equals:
            raise ConfigError(f"--set {pair}: write KEY=VALUE, e.g. --set {key}=...")
        kind = str(types[key])
        try:
            if "bool" in kind:
                if value.lower() not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                    raise ValueError(value)
                converted[key] = value.lower() in {"1", "true", "yes", "on"}
            elif "int" in kind and "float" not in kind:
                converted[key] = int(value)
            elif "float" in kind:
                converted[key] = float(value)
            else:
                converted[key] = value
        except ValueError:
            raise ConfigError(f"--set {pair}: {value!r} is not a valid {kind} for {key}") from None
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
    scale.add_argument("--preset", default="vlm2vec",
                       help="fine-tune preset every run starts from (see mmeb-dllm finetune -h), e.g. tiny-cpu")
    scale.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="fine-tune option for every run, e.g. --set steps=40 --set learning_rate=3e-3")
    args = parser.parse_args(argv)
    try:
        scales = sorted({int(s) for s in args.scales.split(",") if s.strip()})
    except ValueError:
        scales = []
    if not scales or min(scales) < 1:
        raise ConfigError(f"--scales {args.scales!r}: give comma-separated positive integers, e.g. 8,32,128")
    from mmeb_dllm.finetune.config import parse_list
    from mmeb_dllm.finetune.presets import preset_overrides

    overrides = {key: value for key, value in preset_overrides(args.preset).items()
                 if key not in {"train", "samples_per_task"}}  # the sweep's own
    overrides.update(_overrides(args.set))
    rows = run_sweep(args.model, scales, args.out, benchmark=args.benchmark, meta_task=args.meta_task,
                     train=parse_list(args.train), overrides=overrides)
    plot = plot_sweep(rows, args.out, title=f"data scale: {args.benchmark}-{args.meta_task}", reference=args.reference)
    print(f"wrote {args.out / 'sweep.csv'} and {plot}")
    return 0
