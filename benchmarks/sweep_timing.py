#!/usr/bin/env python
"""Wall time of a 3-scale data-scale sweep on MMEB-mini with the tiny LaViDa, and of its rerun (which must skip all).

    python benchmarks/sweep_timing.py                  # the documented sweep (docs/analysis.md), 2 torch threads
    python benchmarks/sweep_timing.py --threads 1      # one core
    python benchmarks/sweep_timing.py --scales 4,8,16 --steps 10 --meta-task VQA --train MMEB-mini/ShapeColorVQA

It runs the real command, ``mmeb-dllm sweep data-scale ...``, twice in fresh processes in ``--workdir`` (a temporary
folder by default), offline and without the embedding cache (every vector comes from the network), and prints:
the wall time of the first run (interpreter start-up and imports included), per scale the training and evaluation
seconds the sweep records in ``sweep.csv`` and the P@1, the wall time of the rerun and whether it skipped every
scale with the CSV unchanged byte for byte. The load average before and after is printed too: on a shared machine
the figures are only as good as the cores were free.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "lavida-embed-tiny"
# The tiny model's fine-tune preset at 40 steps: the VLM2Vec defaults (batch 1024, 2000 steps, lr 2e-5 after 200
# warm-up steps) take hours per scale on a CPU and do not move a random model.
PRESET = "tiny-cpu"
RECIPE = {"steps": 40, "checkpoint_every": 0, "progress": "false"}
SCALES = "8,32,128"
META_TASK = "CLS"
TRAIN = "MMEB-mini/Digits,MMEB-mini/Shapes"  # the CLS datasets with training rows


def sweep_command(out: Path, *, scales: str, meta_task: str, train: str, recipe: dict[str, object]) -> list[str]:
    """The ``mmeb-dllm sweep data-scale`` command line of the benchmark."""
    command = [str(Path(sys.executable).parent / "mmeb-dllm"), "sweep", "data-scale", "--model", MODEL,
               "--scales", scales, "--meta-task", meta_task, "--train", train, "--out", str(out), "--preset", PRESET]
    for key, value in recipe.items():
        command += ["--set", f"{key}={value}"]
    return command


def timed_run(command: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``command`` (output to ``log``); its wall seconds. A failure prints the log's tail and exits."""
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch/OMP threads of the sweep process")
    parser.add_argument("--scales", default=SCALES)
    parser.add_argument("--meta-task", default=META_TASK)
    parser.add_argument("--train", default=TRAIN)
    parser.add_argument("--steps", type=int, default=int(RECIPE["steps"]))
    parser.add_argument("--workdir", type=Path, default=None, help="keep the sweep here (default: a temporary one)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sweep-timing-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "data-scale"
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MMEB_DLLM_EMBED_CACHE="off",
               MTEB_CACHE=str(workdir / "mteb_cache"))
    command = sweep_command(out, scales=args.scales, meta_task=args.meta_task, train=args.train,
                            recipe={**RECIPE, "steps": args.steps})
    print("command:", " ".join(command[1:]))
    print(f"threads {args.threads}, load average before {os.getloadavg()[0]:.2f}")

    first = timed_run(command, env, workdir / "first.log")
    rows = list(csv.DictReader((out / "sweep.csv").open(newline="")))
    csv_bytes = (out / "sweep.csv").read_bytes()
    print(f"first run: {first:.1f} s wall for {len(rows)} scales")
    for row in rows:
        print(f"  scale {row['scale']:>4} ({row['train_samples']:>4} training rows): "
              f"train {row['train_seconds']:>6} s, evaluate {row['eval_seconds']:>5} s, "
              f"P@1 {100 * float(row['p_at_1']):.1f}")
    rerun = timed_run(command, env, workdir / "rerun.log")
    skipped = (workdir / "rerun.log").read_text().count("already done, skipped")
    unchanged = (out / "sweep.csv").read_bytes() == csv_bytes
    print(f"rerun: {rerun:.1f} s wall, {skipped} of {len(rows)} scales skipped, CSV unchanged: {unchanged}")
    print(f"load average after {os.getloadavg()[0]:.2f}; outputs in {workdir}")
    return 0 if skipped == len(rows) and unchanged else 1


if __name__ == "__main__":
    raise SystemExit(main())
