"""``mmeb-dllm analyze alignment|layers`` and ``mmeb-dllm sweep data-scale``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmeb_dllm.analysis.pairs import sample_task


def _embedder(model: str, device: str, options: dict[str, object]):
    import mteb

    import mmeb_dllm

    mmeb_dllm.register()
    return mteb.get_model(model, device=device, **options).embedder


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="registered model name, alias or adapter name")
    parser.add_argument("-t", "--task", required=True, help="one MMEB dataset task, e.g. MMEB-mini-Scenes_t2i")
    parser.add_argument("--sample", type=int, default=64, help="rows to sample (same rows for every model)")
    parser.add_argument("--seed", type=int, default=0, help="sampling and t-SNE seed")
    parser.add_argument("--out", type=Path, default=Path("analysis"), help="output root folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pooling", default=None, help="override the model's pooling (last, mean, mask)")


def analyze_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mmeb-dllm analyze", description="alignment and per-layer diagnostics")
    sub = parser.add_subparsers(dest="what", required=True)
    _common(sub.add_parser("alignment", help="matched/mismatched cosine, margin, gap, alignment, uniformity, R@1"))
    layers = sub.add_parser("layers", help="P@1 and alignment of every hidden layer")
    _common(layers)
    layers.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    from mmeb_dllm.analysis.reports import alignment_report, layers_report

    options = {"pooling": args.pooling} if args.pooling else {}
    embedder = _embedder(args.model, args.device, options)
    sample = sample_task(args.task, sample=args.sample, seed=args.seed)
    out_dir = args.out / args.model.replace("/", "__") / args.task
    if args.what == "alignment":
        report = alignment_report(embedder, sample, out_dir, model=args.model, seed=args.seed)
        for key, value in report["metrics"].items():
            print(f"{key:<22} {value:.4f}")
        print(f"wrote {out_dir / 'alignment.json'} and {out_dir / 'tsne.png'}")
    else:
        rows = layers_report(embedder, sample, out_dir, model=args.model, batch_size=args.batch_size)
        for row in rows:
            print(f"layer {row['layer']:>3}  P@1 {100 * row['p_at_1']:5.1f}  margin {row['margin']:+.4f}")
        print(f"wrote {out_dir / 'layers.csv'} and {out_dir / 'layers.png'}")
    return 0


def sweep_main(argv: list[str]) -> int:
    from mmeb_dllm.analysis.sweep import main

    return main(argv)
