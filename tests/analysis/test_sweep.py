"""``mmeb-dllm sweep data-scale`` end to end on MMEB-mini with the tiny LaViDa: one CSV row per (model, scale) with
the seeded data size the adapter card records, a non-blank plot with the data line drawn, a rerun that trains and
evaluates nothing and leaves the CSV byte-identical, and a killed sweep that redoes only the missing scales.

Small settings keep it fast (3 scales of 4/8/16 ShapeColorVQA rows, 2 steps of 4 pairs, evaluation on MMEB-mini's
VQA datasets); the timing of the documented 3-scale sweep is benchmarks/sweep_timing.py's job (docs/analysis.md).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mmeb_dllm.finetune.trainer as trainer
from mmeb_dllm.analysis import sweep
from mmeb_dllm.cli import main as cli_main
from mmeb_dllm.errors import ConfigError

MODEL = "lavida-embed-tiny"
SCALES = (4, 8, 16)
TRAIN = "MMEB-mini/ShapeColorVQA"
TASKS = "MMEB-mini-ShapeColorVQA MMEB-mini-CountVQA"  # MMEB-mini-VQA: two datasets of 30 queries each
RECIPE = {"steps": 2, "global_batch_size": 4, "chunk_size": 0, "warmup_steps": 0, "learning_rate": 1e-3,
          "lora_dropout": 0.0, "checkpoint_every": 0, "progress": False}


def sweep_argv(out: Path, recipe: dict[str, object] = RECIPE) -> list[str]:
    argv = ["sweep", "data-scale", "--model", MODEL, "--scales", ",".join(map(str, SCALES)), "--meta-task", "VQA",
            "--train", TRAIN, "--out", str(out)]
    for key, value in recipe.items():
        argv += ["--set", f"{key}={value}"]
    return argv


class Spy:
    """Counts the fine-tunes and evaluations a sweep starts (the real functions still run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trained: list[int] = []
        self.evaluated: list[str] = []
        real_train, real_evaluate = trainer.train, sweep.evaluate_adapter

        def train(config, **kwargs):
            self.trained.append(config.samples_per_task)
            return real_train(config, **kwargs)

        def evaluate(base_model, adapter, tasks, **kwargs):
            self.evaluated.append(Path(adapter).name)
            return real_evaluate(base_model, adapter, tasks, **kwargs)

        monkeypatch.setattr(trainer, "train", train)
        monkeypatch.setattr(sweep, "evaluate_adapter", evaluate)


def run(argv: list[str]) -> tuple[Spy, str]:
    """The ``mmeb-dllm`` entry point in this process, with a spy; returns the spy and what it printed."""
    import contextlib
    import io

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(printed):
        spy = Spy(monkeypatch)
        assert cli_main(argv) == 0
    return spy, printed.getvalue()


def card(adapter: Path) -> dict:
    return json.loads((adapter / "adapter_card.json").read_text())


def adapter_mtimes(out: Path) -> dict[str, int]:
    return {p.name: (p / "adapter_card.json").stat().st_mtime_ns for p in sorted((out / "adapters").iterdir())}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Spy]]:
    out = tmp_path_factory.mktemp("sweep") / "data-scale"
    spy, _ = run(sweep_argv(out))
    yield out, spy


@pytest.mark.slow
def test_sweep_writes_one_row_per_scale_trained_on_that_many_samples(first):
    out, spy = first
    assert spy.trained == list(SCALES)
    assert spy.evaluated == [f"{MODEL}-s{scale}" for scale in SCALES]
    rows = list(csv.DictReader((out / "sweep.csv").open(newline="")))
    assert list(rows[0]) == list(sweep.CSV_FIELDS)
    assert [(r["model"], int(r["scale"])) for r in rows] == [(MODEL, scale) for scale in SCALES]
    hashes = set()
    for row, scale in zip(rows, SCALES, strict=True):
        adapter = Path(row["adapter"])
        assert adapter == out / "adapters" / f"{MODEL}-s{scale}"
        made = card(adapter)
        assert len(made["data"]) == 1 and made["data"][0]["dataset"] == TRAIN and made["data"][0]["rows_used"] == scale
        assert made["train_pairs"] == scale == int(row["train_samples"])
        assert made["finetune_recipe"]["samples_per_task"] == scale and made["steps"] == int(row["steps"]) == 2
        assert float(row["final_loss"]) == pytest.approx(made["final_loss"], abs=1e-6)
        hashes.add(made["adapter_hash"])
        assert row["tasks"] == TASKS
        # the mean of two 30-query P@1 values is a multiple of 1/60
        p_at_1 = float(row["p_at_1"])
        assert 0.0 <= p_at_1 <= 1.0 and p_at_1 * 60 == pytest.approx(round(p_at_1 * 60), abs=1e-3)
        assert float(row["train_seconds"]) > 0 and float(row["eval_seconds"]) > 0
        assert math.isfinite(float(row["final_loss"]))
    assert len(hashes) == len(SCALES)  # each scale trained its own adapter


@pytest.mark.slow
def test_sweep_plot_is_non_blank_and_draws_the_data_line(first):
    out, _ = first
    path = out / "sweep.png"
    assert path.stat().st_size > 10_000
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    assert rgb.shape[0] >= 300 and rgb.shape[1] >= 500
    assert rgb.mean(axis=2).std() > 5.0
    # the model's line and markers are matplotlib's first colour (#1f77b4); axes, text and grid are grey
    line = (np.abs(rgb - np.array([0x1F, 0x77, 0xB4])).max(axis=2) < 40).sum()
    assert line > 200, f"only {line} pixels of the data line's colour"


@pytest.mark.slow
def test_rerun_skips_every_finished_scale(first):
    out, _ = first
    before_csv = (out / "sweep.csv").read_bytes()
    before_cards = adapter_mtimes(out)
    spy, printed = run(sweep_argv(out))
    assert spy.trained == [] and spy.evaluated == []
    assert printed.count("already done, skipped") == len(SCALES)
    assert (out / "sweep.csv").read_bytes() == before_csv
    assert adapter_mtimes(out) == before_cards


@pytest.mark.slow
def test_rerun_under_the_full_mteb_name_skips_too(first):
    out, _ = first
    before_csv = (out / "sweep.csv").read_bytes()
    argv = sweep_argv(out)
    argv[argv.index(MODEL)] = f"mmeb-dllm/{MODEL}"
    spy, printed = run(argv)
    assert spy.trained == [] and spy.evaluated == []
    assert printed.count("already done, skipped") == len(SCALES)
    assert (out / "sweep.csv").read_bytes() == before_csv


@pytest.mark.slow
def test_killed_sweep_redoes_only_the_missing_scales(first, tmp_path):
    """Killed while evaluating scale 8 (its adapter finished, no CSV row) before scale 16 started."""
    source, _ = first
    out = tmp_path / "data-scale"
    shutil.copytree(source, out)
    full = list(csv.DictReader((out / "sweep.csv").open(newline="")))
    lines = (out / "sweep.csv").read_text().splitlines(keepends=True)
    (out / "sweep.csv").write_text("".join(lines[:2]))  # header + the first scale
    shutil.rmtree(out / "adapters" / f"{MODEL}-s16")
    kept = adapter_mtimes(out)

    spy, printed = run(sweep_argv(out))
    assert spy.trained == [16]
    assert spy.evaluated == [f"{MODEL}-s8", f"{MODEL}-s16"]
    assert printed.count("already done, skipped") == 1 and "reusing the finished adapter" in printed
    assert {name: adapter_mtimes(out)[name] for name in kept} == kept
    rows = list(csv.DictReader((out / "sweep.csv").open(newline="")))
    assert [int(r["scale"]) for r in rows] == list(SCALES)
    assert (out / "sweep.csv").read_text().splitlines()[:2] == [line.rstrip("\n") for line in lines[:2]]
    # same seed, same rows, same adapter: the redone scales reproduce the uninterrupted sweep
    assert card(out / "adapters" / f"{MODEL}-s16")["adapter_hash"] == card(Path(full[2]["adapter"]))["adapter_hash"]
    for redone, original in zip(rows[1:], full[1:], strict=True):
        assert (redone["train_samples"], redone["p_at_1"]) == (original["train_samples"], original["p_at_1"])


@pytest.mark.slow
def test_rerun_with_another_recipe_is_refused(first):
    out, _ = first
    before = (out / "sweep.csv").read_bytes()
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = Spy(monkeypatch)
        with pytest.raises(ConfigError, match=r"steps: 2 -> 3.*another --out"):
            sweep.main(sweep_argv(out, {**RECIPE, "steps": 3})[1:])
    assert spy.trained == [] and spy.evaluated == []
    assert (out / "sweep.csv").read_bytes() == before


def test_csv_rows_round_trip_with_commas_and_quotes(tmp_path):
    path = tmp_path / "sweep.csv"
    row = {key: f"v-{key}" for key in sweep.CSV_FIELDS}
    row["model"], row["tasks"] = 'org/model, "quoted"', "A B"
    sweep.append_row(path, row)
    sweep.append_row(path, {**row, "scale": "32"})
    assert sweep.read_rows(path) == [row, {**row, "scale": "32"}]


def test_bad_options_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="positive integers"):
        sweep.main(["data-scale", "--model", MODEL, "--scales", "8,x"])
    with pytest.raises(ConfigError, match="sweep's own"):
        sweep._overrides(["samples_per_task=3"])
    with pytest.raises(ConfigError, match="not a valid"):
        sweep._overrides(["steps=many"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        sweep._overrides(["steps"])
    assert sweep._overrides(["steps=40", "learning-rate=3e-3", "progress=off", "lora_targets=a,b"]) == {
        "steps": 40, "learning_rate": 3e-3, "progress": False, "lora_targets": "a,b"}
