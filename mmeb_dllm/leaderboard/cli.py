"""``mmeb-dllm leaderboard``: submit, list, compare, build and export.

    mmeb-dllm leaderboard submit <mteb output folder> [--partial] [--benchmark MMEB|MMEB-mini] [--replace]
    mmeb-dllm leaderboard list [--benchmark B] [--all]
    mmeb-dllm leaderboard compare A B [--json]
    mmeb-dllm leaderboard build
    mmeb-dllm leaderboard export MODEL --out DIR [--format mmeb|mteb|both]

Every subcommand takes ``--leaderboard-dir`` (default: ``$MMEB_LEADERBOARD_DIR``, the checkout's ``leaderboard/``,
else ``./leaderboard``). A rejected submission leaves every leaderboard file untouched.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mmeb_dllm.errors import MmebDllmError
from mmeb_dllm.leaderboard.schema import ARCHITECTURES, BOARDS, LeaderboardError, Row
from mmeb_dllm.leaderboard.store import Leaderboard, board_rows, dump_json, submission_row, write_atomic


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmeb-dllm leaderboard", description="Submit, list, compare, build and export MMEB leaderboard results."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--leaderboard-dir", type=Path, default=None, help="leaderboard folder")
    sub = parser.add_subparsers(dest="command", required=True)

    submit = sub.add_parser("submit", parents=[common], help="validate an mteb output folder and add it")
    submit.add_argument("folder", type=Path, help="the --output-folder of `mteb run` (or a run folder inside it)")
    submit.add_argument("--partial", action="store_true", help="accept a subset of the benchmark's datasets")
    submit.add_argument("--benchmark", choices=BOARDS, help="which board, when the folder holds both")
    submit.add_argument("--architecture", choices=ARCHITECTURES, help="override the inferred model type")
    submit.add_argument("--source", default="Self-Reported", help="who produced the numbers (default Self-Reported)")
    submit.add_argument("--url", default="", help="https:// link to the model or paper")
    submit.add_argument("--replace", action="store_true", help="replace this model's earlier submission")
    submit.add_argument("--date", help="submission date YYYY-MM-DD (default today)")
    submit.add_argument("--no-build", action="store_true", help="store only; do not rebuild site/")

    listing = sub.add_parser("list", parents=[common], help="rows and their ids")
    listing.add_argument("--benchmark", choices=BOARDS)
    listing.add_argument("--all", action="store_true", help="include rows not on the board (ablations, copies)")

    compare = sub.add_parser("compare", parents=[common], help="A minus B per dataset, meta-task, IND/OOD")
    compare.add_argument("a", help="row id or model name (see `list`)")
    compare.add_argument("b", help="row id or model name")
    compare.add_argument("--json", action="store_true", help="print JSON instead of text")

    sub.add_parser("build", parents=[common], help="regenerate site/ (markdown, HTML page, chart)")

    repro = sub.add_parser(
        "reproduce", parents=[common], help="flag per-dataset gaps to a published baseline with the protocol fields"
    )
    repro.add_argument("folder", type=Path, help="the --output-folder of `mteb run`")
    repro.add_argument("--baseline", required=True, help="baseline row id with per-dataset scores (see `list --all`)")
    repro.add_argument("--threshold", type=float, default=2.0, help="flag |ours - published| above this many points")

    export = sub.add_parser("export", parents=[common], help="write a submission for upstream boards")
    export.add_argument("model", help="submitted row id or model name")
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument(
        "--format", choices=("mmeb", "mteb", "both"), default="both",
        help="mmeb = MMEB-Leaderboard JSON, mteb = mteb results-repo layout",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    board = Leaderboard(args.leaderboard_dir)
    try:
        return COMMANDS[args.command](board, args)
    except MmebDllmError as exc:
        if os.environ.get("MMEB_DLLM_DEBUG"):
            raise
        print(f"mmeb-dllm leaderboard {args.command}: {exc}", file=sys.stderr)
        return 2


def build(board: Leaderboard, extra: list[dict] | None = None) -> list[Path]:
    """Render every output in memory, then write each atomically; returns the written paths."""
    from mmeb_dllm.leaderboard.render import render_all

    rows, gaps, sources = board.rows()
    rows += [submission_row(record) for record in extra or []]
    written = []
    for name, data in render_all(rows, gaps, sources).items():
        path = board.site_dir / name
        write_atomic(path, data)
        written.append(path)
    return written


def _submit(board: Leaderboard, args: argparse.Namespace) -> int:
    from mmeb_dllm.leaderboard.render import render_all
    from mmeb_dllm.leaderboard.validate import read_submission

    if args.date is not None:
        try:
            datetime.date.fromisoformat(args.date)
        except ValueError:
            raise LeaderboardError(f"--date {args.date!r} is not YYYY-MM-DD") from None
    rows, gaps, sources = board.rows()  # fails early on a missing or tampered leaderboard
    record = read_submission(
        args.folder, partial=args.partial, benchmark=args.benchmark, architecture=args.architecture,
        source=args.source, url=args.url, submitted=args.date,
    )
    target = board.check_new(record, replace=args.replace)
    new_row = submission_row(record)
    replaced = [(p, r) for p, r in board.load_submissions() if args.replace and _same_model(r, record)]
    gone = {r["result_hash"] for _, r in replaced}
    kept = [r for r in rows if not (r.kind == "submission" and r.extra["record"]["result_hash"] in gone)]
    outputs = {} if args.no_build else render_all([*kept, new_row], gaps, sources)
    write_atomic(target, dump_json(record))
    for path, _ in replaced:
        if path != target:
            path.unlink()
    for name, data in outputs.items():
        write_atomic(board.site_dir / name, data)
    ranked = board_rows([*kept, new_row], record["benchmark"])
    position = next(r.rank for r in ranked if r.id == new_row.id)
    overall = new_row.overall
    score = f"overall {100 * overall:.2f}" if overall is not None else f"partial ({new_row.n_datasets} datasets)"
    rank = f", rank {position} of {sum(r.rank is not None for r in ranked)}" if position else ""
    print(f"added {record['model']['name']} to {record['benchmark']}: {score}{rank}")
    print(f"stored {target}")
    for name in outputs:
        print(f"wrote {board.site_dir / name}")
    return 0


def _same_model(existing: dict, record: dict) -> bool:
    return (
        existing["benchmark"] == record["benchmark"]
        and existing["model"]["name"] == record["model"]["name"]
        and existing["model"]["revision"] == record["model"]["revision"]
        and existing["recipe_key"] == record["recipe_key"]
    )


def _list(board: Leaderboard, args: argparse.Namespace) -> int:
    rows, _, _ = board.rows()
    for name in [args.benchmark] if args.benchmark else list(BOARDS):
        shown = board_rows(rows, name)
        if args.all:
            shown += [r for r in rows if r.benchmark == name and not r.on_board]
        if not shown:
            continue
        print(f"{name}:")
        for row in shown:
            rank = "-" if row.rank is None else str(row.rank)
            overall = "  –  " if row.overall is None else f"{100 * row.overall:5.1f}"
            print(f"  {rank:>3} {overall}  {row.name:<45} {row.id}")
    return 0


def _compare(board: Leaderboard, args: argparse.Namespace) -> int:
    from mmeb_dllm.leaderboard.compare import compare, find_row, format_comparison

    rows, gaps, _ = board.rows()
    result = compare(find_row(rows, args.a), find_row(rows, args.b), gaps)
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else format_comparison(result))
    return 0


def _build(board: Leaderboard, args: argparse.Namespace) -> int:
    for path in build(board):
        print(f"wrote {path}")
    return 0


def _export(board: Leaderboard, args: argparse.Namespace) -> int:
    from mmeb_dllm.leaderboard.compare import find_row
    from mmeb_dllm.leaderboard.export import write_mmeb_json, write_mteb_results

    rows, _, _ = board.rows()
    row: Row = find_row([r for r in rows if r.kind == "submission"], args.model)
    record = row.extra["record"]
    if args.format in ("mmeb", "both"):
        if record["benchmark"] == "MMEB":
            print(f"wrote {write_mmeb_json(record, args.out)}")
        elif args.format == "mmeb":
            raise LeaderboardError(f"{row.name} is an {record['benchmark']} result; the MMEB JSON needs MMEB")
        else:
            print(f"skipped the MMEB leaderboard JSON: {row.name} is an {record['benchmark']} result")
    if args.format in ("mteb", "both"):
        print(f"wrote {write_mteb_results(record, args.out)}")
    return 0


def _reproduce(board: Leaderboard, args: argparse.Namespace) -> int:
    from mmeb_dllm.leaderboard.compare import find_row
    from mmeb_dllm.leaderboard.reproduce import format_findings, load_protocols, read_run, reproduce

    rows, _, _ = board.rows()
    baseline = find_row([r for r in rows if r.benchmark == "MMEB" and r.scores], args.baseline)
    protocol = load_protocols(board.root).get(baseline.id, {})
    run = read_run(args.folder)
    findings = reproduce(run, baseline, protocol, args.threshold)
    compared = sum(1 for key in run if key in baseline.scores)
    print(format_findings(findings, baseline, compared, args.threshold))
    if not protocol:
        print(f"  (no published protocol registered for {baseline.id}: only score gaps are shown)")
    return 0


COMMANDS = {
    "submit": _submit,
    "list": _list,
    "compare": _compare,
    "build": _build,
    "export": _export,
    "reproduce": _reproduce,
}
