"""Exports: the MMEB leaderboard JSON matches the documented schema (mmeb.md section 6) and its metrics equal an
independent computation from the ranks; the mteb results-repo layout loads in mteb and re-submits identically."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
from mteb.results.task_result import TaskResult

from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.leaderboard.validate import read_submission
from tests.leaderboard.conftest import REPO, run_cli
from tests.leaderboard.fixtures import ranks_for, write_run

MODEL = "test-org/ar-embed"
METADATA_FIELDS = {
    "model_name", "model_backbone", "model_size", "embedding_dimension", "max_length_tokens", "model_release_date",
    "data_source", "url", "report_generated_date",
}
METRIC_KEYS = {
    f"{name}@{k}" for name in ("hit", "ndcg_linear", "ndcg_exponential", "precision", "recall", "f1", "map", "mrr")
    for k in (1, 5, 10)
} | {"num_pred", "num_data"}


def documented_keys() -> list[str]:
    """The 36 leaderboard keys from mmeb.md section 2 (the package's table when the fact sheet is absent)."""
    sheet = Path(os.environ.get("MMEB_REFERENCE_DIR", REPO.parent / "shared" / "reference")) / "mmeb.md"
    if not sheet.is_file():
        return [d.key for d in load_table("MMEB").datasets]
    section = sheet.read_text(encoding="utf-8").split("## 2.")[1].split("## 3.")[0]
    return [line.split("|")[3].strip() for line in section.splitlines() if re.match(r"\| \d+ \|", line)]


def expected_metrics(ranks: list[int]) -> dict[str, float]:
    """The 26 metrics for one positive per query, computed per query from the ground truth's rank."""
    n = len(ranks)
    out: dict[str, float] = {"num_pred": n, "num_data": n}
    for k in (1, 5, 10):
        hit = [r <= k for r in ranks]
        out[f"hit@{k}"] = out[f"recall@{k}"] = sum(hit) / n
        out[f"precision@{k}"] = sum(hit) / n / k
        out[f"f1@{k}"] = sum(2 * (1 / k) * 1 / (1 / k + 1) for h in hit if h) / n
        ndcg = sum(1 / math.log2(r + 1) for r in ranks if r <= k) / n
        out[f"ndcg_linear@{k}"] = out[f"ndcg_exponential@{k}"] = ndcg
        out[f"map@{k}"] = out[f"mrr@{k}"] = sum(1 / r for r in ranks if r <= k) / n
    return out


@pytest.fixture
def submitted(lb_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "run"
    keys = [d.key for d in load_table("MMEB").datasets if d.key != "NIGHTS"]
    write_run(out, model=MODEL, seed=7, skill=0.45, keys=keys)
    code, _, err = run_cli(capsys, "submit", out, "--partial", "--leaderboard-dir", lb_dir, "--no-build",
                           "--url", "https://example.org/ar-embed", "--date", "2026-03-04")
    assert code == 0, err
    return out


def test_mmeb_json_matches_the_documented_schema(submitted, lb_dir, tmp_path, capsys):
    code, _, _ = run_cli(capsys, "export", MODEL, "--format", "mmeb", "--out", tmp_path / "x",
                           "--leaderboard-dir", lb_dir)
    assert code == 0
    data = json.loads((tmp_path / "x" / "test-org__ar-embed.json").read_text())
    assert set(data) == {"metadata", "metrics"} and set(data["metrics"]) == {"image"}
    meta = data["metadata"]
    assert set(meta) == METADATA_FIELDS
    assert meta["model_name"] == MODEL and meta["data_source"] == "Self-Reported" and meta["model_size"] == 2.0
    assert meta["url"] == "https://example.org/ar-embed" and meta["report_generated_date"] == "2026-03-04"
    image = data["metrics"]["image"]
    assert list(image) == documented_keys()
    assert image["NIGHTS"] == "FILE_N/A"
    keys = [d.key for d in load_table("MMEB").datasets]
    for index, key in enumerate(keys):
        if key == "NIGHTS":
            continue
        metrics = image[key]
        assert set(metrics) == METRIC_KEYS, key
        assert isinstance(metrics["num_pred"], int) and isinstance(metrics["num_data"], int)
        floats = {k: v for k, v in metrics.items() if not k.startswith("num_")}
        assert all(isinstance(v, float) and 0 <= v <= 1 for v in floats.values()), key
        ranks = ranks_for(7 * 1000 + index - (index > keys.index("NIGHTS")), 1000, 0.45)
        expected = expected_metrics(ranks)
        for name, value in metrics.items():
            assert value == pytest.approx(expected[name], abs=2e-5), (key, name)
        assert len({metrics[f"{m}@1"] for m in ("hit", "precision", "recall", "ndcg_linear", "map", "mrr")}) == 1


def test_mmeb_json_needs_the_mmeb_board(lb_dir, tmp_path, capsys):
    out = tmp_path / "mini"
    write_run(out, board="MMEB-mini", model="test-org/mini-embed")
    assert run_cli(capsys, "submit", out, "--leaderboard-dir", lb_dir, "--no-build")[0] == 0
    code, _, err = run_cli(capsys, "export", "mini-embed", "--format", "mmeb", "--out", tmp_path / "x",
                           "--leaderboard-dir", lb_dir)
    assert code == 2 and "needs MMEB" in err


def test_mteb_layout_loads_in_mteb_and_resubmits_identically(submitted, lb_dir, tmp_path, capsys):
    code, _, _ = run_cli(capsys, "export", MODEL, "--format", "mteb", "--out", tmp_path / "up",
                         "--leaderboard-dir", lb_dir)
    assert code == 0
    run = tmp_path / "up" / "results" / "test-org__ar-embed" / "r1"
    assert (run / "model_meta.json").is_file()
    [stored] = (lb_dir / "submissions" / "MMEB").glob("*.json")
    record = json.loads(stored.read_text())
    for key, entry in record["datasets"].items():
        result = TaskResult.from_disk(run / f"MMEB-{key}.json")
        assert result.task_name == f"MMEB-{key}"
        assert result.get_score() == pytest.approx(entry["hit_at_1"])
    again = read_submission(tmp_path / "up", partial=True, submitted=record["submitted"],
                            url=record["url"])
    assert again["result_hash"] == record["result_hash"]
    assert again["datasets"] == record["datasets"] and again["recipe"] == record["recipe"]
    shutil.rmtree(tmp_path / "up")
