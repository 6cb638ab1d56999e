#!/usr/bin/env python
"""Does fine-tuning learn, and how fast? The tiny LaViDa fine-tuned with a preset (default ``tiny-cpu``) against the
untuned model on MMEB-mini's classification subset, per seed, with the training wall time.

    python benchmarks/finetune_learning.py                     # seed 42 (the preset's), 2 torch threads
    python benchmarks/finetune_learning.py --seeds 42,7,1,2    # seed spread
    python benchmarks/finetune_learning.py --threads 1 --steps 200

Issue 4's acceptance: CLS P@1 at least 20 points above the untuned model after under 2 minutes of CPU training.
Training time is the adapter card's ``wall_time_s`` (model load and data reading included); the load average
before and after is printed because on a shared machine the figure is only as good as the cores were free.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

MODEL = "lavida-embed-tiny"
CLS = ("Digits", "Shapes", "Photos")


def cls_scores(model_name: str) -> dict[str, float]:
    """P@1 per MMEB-mini classification dataset through ``mteb.evaluate``."""
    import mteb

    tasks = mteb.get_tasks(tasks=[f"MMEB-mini-{key}" for key in CLS])
    results = mteb.evaluate(mteb.get_model(model_name, device="cpu"), tasks, cache=None, show_progress_bar=False)
    return {r.task_name.removeprefix("MMEB-mini-"): r.get_score() for r in results.task_results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-cpu")
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="finetune-learning-"))
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MMEB_DLLM_EMBED_CACHE="off",
                      MMEB_DLLM_ADAPTERS=str(workdir), MTEB_CACHE=str(workdir / "mteb_cache"))
    import numpy as np
    import torch

    import mmeb_dllm
    from mmeb_dllm.finetune.config import FinetuneConfig
    from mmeb_dllm.finetune.presets import preset_overrides
    from mmeb_dllm.finetune.trainer import train

    torch.set_num_threads(args.threads)
    overrides = preset_overrides(args.preset) | ({"steps": args.steps} if args.steps else {})
    print(f"preset {args.preset} {json.dumps(overrides, default=list)}")
    print(f"threads {args.threads}, load average before {os.getloadavg()[0]:.2f}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = workdir / f"tiny-cls-seed{seed}"
        train(FinetuneConfig(model=MODEL, out=str(out), progress=False, device="cpu", **{**overrides, "seed": seed}))
    mmeb_dllm.register()
    untuned = cls_scores(MODEL)
    before = float(np.mean(list(untuned.values())))
    print(f"untuned: CLS {100 * before:.1f}  " + "  ".join(f"{k} {100 * v:.1f}" for k, v in untuned.items()))
    for seed in [int(s) for s in args.seeds.split(",")]:
        name = f"tiny-cls-seed{seed}"
        card = json.loads((workdir / name / "adapter_card.json").read_text())
        tuned = cls_scores(name)
        after = float(np.mean(list(tuned.values())))
        print(f"seed {seed:>3}: CLS {100 * after:.1f} ({100 * (after - before):+.1f})  "
              + "  ".join(f"{k} {100 * v:.1f}" for k, v in tuned.items())
              + f"  training {card['wall_time_s']:.0f} s, final loss {card['final_loss']:.3f}")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
