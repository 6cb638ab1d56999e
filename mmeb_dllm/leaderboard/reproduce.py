"""Reproduction check: our per-dataset scores against a published baseline, with the protocol fields that differ.

For each dataset where ``|ours - published|`` exceeds a threshold (percentage points), the report lists every
protocol field of our run (from the ``mmeb_protocol`` record in each task result) that differs from the protocol the
published number was produced with (``leaderboard/protocols.json``): query count, candidate-list length,
pooling, normalisation, instruction placement, image resolution, data source. A large gap with no differing field
points at the model itself (weights, adapter, preprocessing details) rather than the harness.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.leaderboard.schema import LeaderboardError, Row

RECIPE_FIELDS = ("pooling", "normalize", "instruction", "image_resolution")


@dataclass
class Finding:
    dataset: str
    ours: float
    published: float
    differences: list[str] = field(default_factory=list)

    @property
    def delta(self) -> float:
        return self.ours - self.published


def load_protocols(leaderboard_dir: Path) -> dict[str, dict[str, Any]]:
    path = leaderboard_dir / "protocols.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["protocols"]


def read_run(folder: Path) -> dict[str, dict[str, Any]]:
    """``{dataset key: {"score": percent, "protocol": record}}`` from the MMEB task JSONs under ``folder``."""
    keys = {f"MMEB-{spec.key}": spec.key for spec in load_table("MMEB").datasets}
    run: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("MMEB-*.json")):
        key = keys.get(path.stem)
        if key is None:
            continue
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))["scores"]["test"][0]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise LeaderboardError(f"{path}: not an mteb task result ({type(exc).__name__}: {exc})") from None
        score = entry.get("mmeb_hit_at_1", entry.get("main_score"))
        run[key] = {"score": 100.0 * float(score), "protocol": entry.get("mmeb_protocol") or {}}
    if not run:
        raise LeaderboardError(f"{folder}: no MMEB-<dataset>.json results found (the --output-folder of `mteb run`)")
    return run


def protocol_differences(record: dict[str, Any], expected: dict[str, Any], declared_candidates: int) -> list[str]:
    """Human-readable ``field: ours != published`` lines (missing record fields are reported too)."""
    if not record:
        return ["no mmeb_protocol record in the result (produced by another harness?)"]
    differences = []
    counts = record.get("candidates", {})
    if "queries" in expected and counts.get("queries") != expected["queries"]:
        differences.append(f"queries: {counts.get('queries')} != {expected['queries']}")
    if expected.get("candidates") == "declared" and counts.get("per_query_max") != declared_candidates:
        differences.append(f"candidates per query: {counts.get('per_query_max')} != {declared_candidates}")
    recipe = (record.get("model") or {}).get("recipe") or {}
    for name in RECIPE_FIELDS:
        if name in expected and recipe.get(name) != expected[name]:
            differences.append(f"{name}: {recipe.get(name)!r} != {expected[name]!r}")
    skipped = (record.get("data") or {}).get("skipped_rows")
    if skipped:
        differences.append(f"skipped rows: {skipped} != 0")
    return differences


def reproduce(run: dict[str, dict[str, Any]], baseline: Row, protocol: dict[str, Any], threshold: float) -> list:
    """Findings for every dataset above ``threshold`` points, largest gap first."""
    table = load_table("MMEB")
    findings = []
    for key, ours in run.items():
        published = baseline.scores.get(key)
        if published is None:
            continue
        finding = Finding(key, ours["score"], 100.0 * published)
        if abs(finding.delta) > threshold:
            finding.differences = protocol_differences(ours["protocol"], protocol, table.dataset(key).num_candidates)
            findings.append(finding)
    return sorted(findings, key=lambda f: -abs(f.delta))


def format_findings(findings: list[Finding], baseline: Row, compared: int, threshold: float) -> str:
    lines = [f"reproduction check against {baseline.name} ({baseline.id}): {compared} datasets compared, "
             f"{len(findings)} differ by more than {threshold:g} points"]
    for finding in findings:
        lines.append(f"  {finding.dataset:<20} ours {finding.ours:5.1f}  published {finding.published:5.1f}  "
                     f"delta {finding.delta:+5.1f}")
        for difference in finding.differences or ["no protocol field differs: look at weights/adapter/preprocessing"]:
            lines.append(f"      - {difference}")
    return "\n".join(lines)
