"""``leaderboard compare``: deltas equal the difference of the registered numbers; the AR-minus-diffusion framing."""

from __future__ import annotations

import json

import pytest

from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.leaderboard.compare import compare, find_row
from mmeb_dllm.leaderboard.schema import LeaderboardError
from mmeb_dllm.leaderboard.store import Leaderboard
from tests.leaderboard.conftest import BASELINES, run_cli
from tests.leaderboard.fixtures import write_run


def _percent(file: str, entry_id: str) -> dict:
    data = json.loads((BASELINES / file).read_text())
    return next(e for e in data["entries"] if e["id"] == entry_id)


def test_per_dataset_and_group_deltas(lb_dir, capsys):
    code, out, _ = run_cli(capsys, "compare", "vlm2vec-table6/vlm2vec-llava-1-6-lora-1344", "CLIP",
                           "--json", "--leaderboard-dir", lb_dir)
    assert code == 0
    result = json.loads(out)
    a, b = _percent("vlm2vec_table6.json", "vlm2vec-llava-1-6-lora-1344"), _percent("vlm2vec_table6.json", "clip")
    assert [d["dataset"] for d in result["datasets"]] == [d.key for d in load_table("MMEB").datasets]
    for d in result["datasets"]:
        assert d["delta"] == pytest.approx(a["scores"][d["dataset"]] - b["scores"][d["dataset"]], abs=1e-6)
    groups = {g["group"]: g for g in result["groups"]}
    # Both rows reproduce their printed aggregates (fact sheet section 3), so the delta is the printed difference.
    for name in ("CLS", "VQA", "RET", "VG", "IND", "OOD", "Overall"):
        assert groups[name]["delta"] == pytest.approx(a["aggregates"][name] - b["aggregates"][name], abs=0.1)
    assert "needs one autoregressive and one diffusion" in " ".join(result["notes"])  # AR vs encoder


def test_autoregressive_minus_diffusion_framing(lb_dir, tmp_path, capsys):
    out = tmp_path / "run"
    write_run(out, model="mmeb-dllm/lavida-embed-tiny", revision="tiny-v1", skill=0.3, seed=5)
    code, _, err = run_cli(capsys, "submit", out, "--leaderboard-dir", lb_dir, "--no-build")
    assert code == 0, err
    rows, gaps, _ = Leaderboard(lb_dir).rows()
    diffusion = find_row(rows, "mmeb-dllm/lavida-embed-tiny")
    ar = find_row(rows, "VLM2Vec-V1-Qwen2VL-2B (V2 re-run)")
    assert diffusion.architecture == "diffusion" and ar.architecture == "autoregressive"
    result = compare(diffusion, ar, gaps)
    framing = {f["meta_task"]: f for f in result.framing}
    assert set(framing) == {"CLS", "VQA", "RET", "VG"}
    for meta, f in framing.items():
        assert f["ar_minus_diffusion"] == pytest.approx(100 * (ar.aggregates[meta] - diffusion.aggregates[meta]))
    assert framing["CLS"]["seed_paper"] == "AR minus LaViDa: +3.5"
    assert framing["RET"]["seed_paper"] == "AR minus LaViDa: +4.4"
    assert framing["VG"]["seed_paper"] == "not reported"
    code, text, _ = run_cli(
        capsys, "compare", "lavida-embed-tiny", "VLM2Vec-V1-Qwen2VL-2B", "--leaderboard-dir", lb_dir
    )
    assert code == 0 and "autoregressive minus diffusion" in text and "(paper: AR minus LaViDa: +2.5)" in text


def test_unknown_ambiguous_and_cross_board(lb_dir, tmp_path, capsys):
    rows, _, _ = Leaderboard(lb_dir).rows()
    with pytest.raises(LeaderboardError, match="did you mean"):
        find_row(rows, "CLIPP")
    with pytest.raises(LeaderboardError, match=r"matches \d+ rows; pass one id"):
        find_row(rows, "VLM2Vec")
    out = tmp_path / "mini"
    write_run(out, board="MMEB-mini", model="test-org/mini-embed")
    assert run_cli(capsys, "submit", out, "--leaderboard-dir", lb_dir, "--no-build")[0] == 0
    code, _, err = run_cli(capsys, "compare", "test-org/mini-embed", "CLIP", "--leaderboard-dir", lb_dir)
    assert code == 2 and "compare one benchmark" in err
