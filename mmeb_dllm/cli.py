"""``mmeb-dllm``: the stock mteb CLI with the plugin registered explicitly, plus our own subcommands.

- ``mmeb-dllm run ...`` takes exactly ``mteb run``'s arguments, checks model and task names *before* any weights
  load, runs mteb, then prints the scores (per dataset, meta-task, IND/OOD, overall).
- ``mmeb-dllm models`` lists the zoo.
- Any other mteb subcommand (``available-tasks``, ``available-benchmarks``, ...) is passed through.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Sequence

from mmeb_dllm.errors import ConfigError, MmebDllmError

OWN_COMMANDS = {"models": "list the registered models and their embedding recipes (--markdown: the docs table)"}
# Subcommands that live in their own modules ("module:function", imported only when used). Each function takes the
# remaining arguments and returns an exit code.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "finetune": ("mmeb_dllm.finetune.cli:main", "train a contrastive LoRA adapter that becomes an mteb model"),
    "leaderboard": ("mmeb_dllm.leaderboard.cli:main", "submit, compare, build and export leaderboard results"),
    "analyze": ("mmeb_dllm.analysis.cli:analyze_main", "alignment and per-layer diagnostics"),
    "sweep": ("mmeb_dllm.analysis.cli:sweep_main", "data-scale sweeps (fine-tune + evaluate per scale)"),
    "doctor": ("mmeb_dllm.doctor:main", "self-checks of a model's embedding recipe on a few real rows"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0] in {"-h", "--help"}:
        _print_help()
        return 0
    try:
        if argv[0] == "models":
            return _models(markdown="--markdown" in argv[1:])
        if argv[0] in SUBCOMMANDS and _available(argv[0]):
            return _subcommand(argv[0])(argv[1:])
        return _mteb(argv)
    except MmebDllmError as exc:
        if os.environ.get("MMEB_DLLM_DEBUG"):
            raise
        print(f"mmeb-dllm error: {exc}", file=sys.stderr)
        return 2


def _print_help() -> None:
    print("usage: mmeb-dllm <command> [options]\n")
    print("  run                 mteb run with the plugin registered; prints the scores afterwards")
    for name, text in OWN_COMMANDS.items():
        print(f"  {name:<19} {text}")
    for name, (_, text) in SUBCOMMANDS.items():
        if _available(name):
            print(f"  {name:<19} {text}")
    print("  <mteb command>      any other mteb subcommand, e.g. available-tasks, available-benchmarks\n")
    print("example: mmeb-dllm run -m lavida-embed-tiny -t MMEB-mini --output-folder results")


def _available(name: str) -> bool:
    import importlib.util

    module_name = SUBCOMMANDS[name][0].partition(":")[0]
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


def _subcommand(name: str) -> Callable[[list[str]], int]:
    import importlib

    module_name, _, function = SUBCOMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module_name), function)


def _models(*, markdown: bool = False) -> int:
    from mmeb_dllm.zoo import load_zoo, zoo_markdown

    if markdown:
        print(zoo_markdown())
        return 0
    print(f"{'name':<26} {'aliases':<34} {'checkpoint':<42} {'revision':<9} pooling  attention")
    for spec in load_zoo().values():
        aliases = ",".join(spec.aliases)
        print(
            f"{spec.full_name:<26} {aliases:<34} {spec.checkpoint:<42} {spec.revision:<9} {spec.pooling:<8} "
            f"{spec.attention}"
        )
    return 0


def _mteb(argv: list[str]) -> int:
    import mteb
    from mteb.cli.build_cli import build_cli

    import mmeb_dllm

    mmeb_dllm.register()
    parser = build_cli()
    args = parser.parse_args(argv)
    if argv[0] != "run":
        args.func(args)
        return 0
    _check_names(args, mteb)
    from mmeb_dllm.embed.distributed import is_main_process, results_written_by_rank_zero

    if not is_main_process():  # under torchrun / accelerate: every rank encodes, rank 0 alone writes
        args.prediction_folder, args.save_predictions = None, False
    with results_written_by_rank_zero():
        args.func(args)
    if not is_main_process():
        return 0
    from mmeb_dllm.summary import print_summary

    print_summary(args.output_folder, args.model, args.tasks or [], args.benchmarks or [])
    return 0


def _check_names(args: argparse.Namespace, mteb: object) -> None:
    """Fail on a misspelt model, task or benchmark before the model is loaded (mteb checks tasks only after)."""
    from mteb.get_tasks import _TASKS_REGISTRY
    from mteb.models.model_implementations import MODEL_REGISTRY

    problems = []
    if args.model not in MODEL_REGISTRY:
        problems.append(_unknown("model", args.model, MODEL_REGISTRY))
    for name in args.tasks or []:
        if name not in _TASKS_REGISTRY:
            problems.append(_unknown("task", name, _TASKS_REGISTRY))
    for name in args.benchmarks or []:
        try:
            mteb.get_benchmark(name)  # type: ignore[attr-defined]
        except KeyError:
            problems.append(f"unknown benchmark {name!r}")
    if problems:
        raise ConfigError("; ".join(problems))


def _unknown(kind: str, name: str, known: dict) -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    return f"unknown {kind} {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")


if __name__ == "__main__":
    raise SystemExit(main())
