"""``mmeb-dllm finetune --model <name> --train <datasets|MMEB-mini> --out <dir> [options]``.

Every :class:`~mmeb_dllm.finetune.config.FinetuneConfig` field is an option (``--learning-rate``, ``--no-dora``,
...) with the field's help text; unset options keep the VLM2Vec defaults, or those of ``--preset`` (e.g.
``--preset tiny-cpu``, see :mod:`mmeb_dllm.finetune.presets`). Launch under ``torchrun`` /
``accelerate launch`` (e.g. ``torchrun --nproc_per_node 8 -m mmeb_dllm finetune ...``) to train on several
processes with the same global batch.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from mmeb_dllm.finetune.config import FinetuneConfig, parse_list
from mmeb_dllm.finetune.presets import PRESETS, preset_overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmeb-dllm finetune",
        description="Train a contrastive LoRA adapter (VLM2Vec recipe by default) that becomes an mteb model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--preset", default="vlm2vec", choices=list(PRESETS),
        help="named recipe whose values replace the defaults below (explicit options still win): "
        + "; ".join(f"{p.name}: {p.help}" for p in PRESETS.values()),
    )
    hints = typing.get_type_hints(FinetuneConfig)
    for spec in fields(FinetuneConfig):
        flag = f"--{spec.name.replace('_', '-')}"
        kind = hints[spec.name]
        help_text = spec.metadata.get("help", "")
        required = spec.default is MISSING and spec.default_factory is MISSING
        default = None if required else (spec.default if spec.default is not MISSING else spec.default_factory())
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif spec.name == "train":
            parser.add_argument(flag, type=parse_list, default=",".join(default), help=help_text)
        else:
            parser.add_argument(flag, type=_scalar_type(kind), default=default, required=required, help=help_text)
    return parser


def _scalar_type(kind: Any) -> type:
    if isinstance(kind, types.UnionType):  # X | None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return kind


def parse_config(argv: Sequence[str]) -> FinetuneConfig:
    """The config the command line describes (unset options keep the defaults of the chosen preset)."""
    argv = list(argv)
    parser = build_parser()
    chosen = argparse.ArgumentParser(add_help=False)
    chosen.add_argument("--preset", default="vlm2vec", choices=list(PRESETS))
    overrides = preset_overrides(chosen.parse_known_args(argv)[0].preset)
    if "train" in overrides:
        overrides["train"] = ",".join(overrides["train"])
    parser.set_defaults(**overrides)
    values = vars(parser.parse_args(argv))
    values.pop("preset")
    if isinstance(values["train"], str):
        values["train"] = parse_list(values["train"])
    return FinetuneConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, train, print where the adapter is and how to evaluate it. Returns the exit code."""
    config = parse_config(sys.argv[1:] if argv is None else argv)

    from mmeb_dllm.finetune import distributed
    from mmeb_dllm.finetune.trainer import train

    try:
        result = train(config)
    finally:
        distributed.teardown()
    if result.card is not None:
        _report(result.out, result.card)
    return 0


def _report(out: Path, card: dict[str, Any]) -> None:
    from mmeb_dllm.adapters import adapters_dir

    print(f"adapter: {out}")
    print(f"steps {card['steps']}, final loss {card['final_loss']:.4f}, training {card['wall_time_s']:.1f} s, "
          f"hash {card['adapter_hash'][:12]}")
    if out.resolve().parent == adapters_dir().resolve():
        print(f"evaluate: mteb run -m {out.name} -t MMEB-mini")
    else:
        print(f"evaluate: MMEB_DLLM_ADAPTERS={out.resolve().parent} mteb run -m {out.name} -t MMEB-mini")
