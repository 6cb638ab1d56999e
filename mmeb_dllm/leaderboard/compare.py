"""Compare two leaderboard rows: per-dataset and per-group deltas, and the seed paper's AR-minus-diffusion framing.

Deltas are ``A - B`` in percentage points. Per-dataset deltas need per-dataset scores on both sides; group deltas
(CLS, VQA, RET, VG, IND, OOD, Overall) use each row's aggregates (recomputed from per-dataset scores where they
exist). When one row is autoregressive and the other diffusion, the comparison adds "autoregressive minus
diffusion" per meta-task next to the gaps arXiv 2602.06056 reports (LaViDa: CLS +3.5, VQA +2.5, RET +4.4; MMaDA:
more than 20 on each).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from mmeb_dllm.benchmark.table import META_TASKS, load_table
from mmeb_dllm.leaderboard.schema import AGGREGATE_KEYS, Gap, LeaderboardError, Row


@dataclass
class Comparison:
    """A versus B. Every number is in percentage points (scores x 100)."""

    a: Row
    b: Row
    datasets: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    framing: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"id": self.a.id, "name": self.a.name, "architecture": self.a.architecture},
            "b": {"id": self.b.id, "name": self.b.name, "architecture": self.b.architecture},
            "benchmark": self.a.benchmark,
            "datasets": self.datasets,
            "groups": self.groups,
            "ar_minus_diffusion": self.framing,
            "notes": self.notes,
        }


def find_row(rows: list[Row], query: str) -> Row:
    """A row by id, else by exact (case-insensitive) name, else by a unique substring of name or id."""
    for row in rows:
        if row.id == query:
            return row
    lowered = query.lower()
    for matches in (
        [r for r in rows if r.name.lower() == lowered],
        [r for r in rows if lowered in r.name.lower() or lowered in r.id.lower()],
    ):
        if len(matches) > 1:
            on_board = [r for r in matches if r.on_board]
            matches = on_board or matches
        if len(matches) == 1:
            return matches[0]
        if matches:
            listing = "\n  ".join(f"{r.id}  ({r.name})" for r in matches[:20])
            raise LeaderboardError(f"{query!r} matches {len(matches)} rows; pass one id:\n  {listing}")
    close = difflib.get_close_matches(query, [r.name for r in rows] + [r.id for r in rows], n=5, cutoff=0.5)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise LeaderboardError(f"no leaderboard row named {query!r}{hint}; `mmeb-dllm leaderboard list` shows them")


def _pp(value: float | None) -> float | None:
    return None if value is None else round(100.0 * value, 4)


def _gap_for(row: Row, gaps: list[Gap]) -> list[Gap]:
    """The seed-paper gaps whose diffusion model the row names (LaViDa, MMaDA), or all of them."""
    text = f"{row.name} {row.recipe}".lower()
    named = [g for g in gaps if g.diffusion_model.lower() in text]
    return named or gaps


def compare(a: Row, b: Row, gaps: list[Gap] | None = None) -> Comparison:
    """Deltas of ``a`` minus ``b`` (same benchmark), with the AR-minus-diffusion framing when it applies."""
    if a.benchmark != b.benchmark:
        raise LeaderboardError(f"{a.name} is on {a.benchmark} and {b.name} on {b.benchmark}; compare one benchmark")
    table = load_table(a.benchmark)
    result = Comparison(a, b)
    for spec in table.datasets:
        if spec.key in a.scores and spec.key in b.scores:
            sa, sb = a.scores[spec.key], b.scores[spec.key]
            result.datasets.append(
                {"dataset": spec.key, "meta_task": spec.meta_task, "split": spec.split,
                 "a": _pp(sa), "b": _pp(sb), "delta": _pp(sa - sb)}
            )
    if not result.datasets:
        result.notes.append("no per-dataset comparison: at least one side has only published aggregates")
    for name in AGGREGATE_KEYS:
        va, vb = a.aggregates.get(name), b.aggregates.get(name)
        if va is not None or vb is not None:
            delta = None if va is None or vb is None else va - vb
            result.groups.append({"group": name, "a": _pp(va), "b": _pp(vb), "delta": _pp(delta)})
    for row in (a, b):
        if row.partial:
            result.notes.append(f"{row.name} is partial ({row.n_datasets}/{len(table.datasets)} datasets)")
        if row.aggregate_origin != "recomputed":
            result.notes.append(f"{row.name}: aggregates are {row.aggregate_origin} numbers, not recomputed here")
    kinds = {a.architecture, b.architecture}
    if kinds == {"autoregressive", "diffusion"}:
        ar, diffusion = (a, b) if a.architecture == "autoregressive" else (b, a)
        paper = _gap_for(diffusion, gaps or [])
        for meta in META_TASKS:
            va, vd = ar.aggregates.get(meta), diffusion.aggregates.get(meta)
            if va is None or vd is None:
                continue
            reported = [f"{g.comparison}: {'+' if g.relation == '=' else '> '}{g.value:g}" for g in paper
                        if g.meta_task == meta]
            result.framing.append(
                {"meta_task": meta, "autoregressive": ar.name, "diffusion": diffusion.name,
                 "ar_minus_diffusion": _pp(va - vd), "seed_paper": "; ".join(reported) or "not reported"}
            )
    else:
        result.notes.append(
            "the seed paper's framing (autoregressive minus diffusion) needs one autoregressive and one diffusion "
            f"row; these are {a.architecture} and {b.architecture}"
        )
    return result


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def format_comparison(result: Comparison) -> str:
    """Plain-text report: groups, framing, then per-dataset deltas."""
    a, b = result.a, result.b
    lines = [
        f"A = {a.name}  [{a.id}, {a.architecture}, {a.source}]",
        f"B = {b.name}  [{b.id}, {b.architecture}, {b.source}]",
        f"{a.benchmark}, P@1 x 100, delta = A - B",
        "",
        f"{'group':<18} {'A':>8} {'B':>8} {'A-B':>8}",
    ]
    for g in result.groups:
        lines.append(f"{g['group']:<18} {_cell(g['a']):>8} {_cell(g['b']):>8} {_cell(g['delta'], True):>8}")
    if result.framing:
        lines += ["", "Seed paper framing: autoregressive minus diffusion, per meta-task"]
        for f in result.framing:
            delta = _cell(f["ar_minus_diffusion"], True)
            lines.append(f"  {f['meta_task']:<4} {delta:>8}   (paper: {f['seed_paper']})")
    if result.datasets:
        lines += ["", f"{'dataset':<22} {'meta':<4} {'split':<5} {'A':>7} {'B':>7} {'A-B':>8}"]
        for d in result.datasets:
            lines.append(
                f"{d['dataset']:<22} {d['meta_task']:<4} {d['split']:<5} {_cell(d['a']):>7} {_cell(d['b']):>7} "
                f"{_cell(d['delta'], True):>8}"
            )
    if result.notes:
        lines += ["", *(f"note: {n}" for n in result.notes)]
    return "\n".join(lines)
