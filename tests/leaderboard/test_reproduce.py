"""The reproduction check flags gaps to a published baseline and names the protocol fields that differ."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mmeb_dllm.leaderboard.store import Leaderboard
from tests.leaderboard.conftest import REPO, run_cli

BASELINE = "vlm2vec-table6/vlm2vec-llava-1-6-lora-1344"


def _published(lb_dir: Path) -> dict[str, float]:
    rows, _, _ = Leaderboard(lb_dir).rows()
    [row] = [r for r in rows if r.id == BASELINE and r.scores]
    return row.scores


def _result(folder: Path, key: str, score: float, *, pooling: str = "last", candidates: int = 1000) -> None:
    protocol = {
        "model": {"recipe": {"pooling": pooling, "normalize": True, "instruction": "mmeb",
                             "image_resolution": "1344x1344"}},
        "candidates": {"queries": 1000, "per_query_max": candidates},
        "data": {"skipped_rows": 0},
    }
    entry = {"main_score": score, "mmeb_hit_at_1": score, "mmeb_protocol": protocol}
    path = folder / "results" / "mmeb-dllm__vlm2vec-llava-next" / "main" / f"MMEB-{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task_name": f"MMEB-{key}", "scores": {"test": [entry]}}))


def test_gaps_above_threshold_are_flagged_with_differing_protocol_fields(lb_dir, tmp_path, capsys):
    shutil.copy(REPO / "leaderboard" / "protocols.json", lb_dir / "protocols.json")
    published = _published(lb_dir)
    run = tmp_path / "run"
    _result(run, "ImageNet-1K", published["ImageNet-1K"] + 0.005)  # within 2 points: not flagged
    _result(run, "OK-VQA", published["OK-VQA"] - 0.20, pooling="mean")  # 20 points low, pooling differs
    _result(run, "MSCOCO_t2i", published["MSCOCO_t2i"] - 0.10, candidates=100)  # candidate lists cut
    _result(run, "NIGHTS", published["NIGHTS"] + 0.05)  # 5 points high, same protocol
    code, out, _ = run_cli(capsys, "reproduce", run, "--baseline", BASELINE, "--leaderboard-dir", lb_dir)
    assert code == 0
    assert "4 datasets compared, 3 differ by more than 2 points" in out
    assert "ImageNet-1K" not in out
    ok_vqa = out.split("OK-VQA")[1].split("\n  MSCOCO_t2i")[0]
    assert "pooling: 'mean' != 'last'" in ok_vqa and "candidates" not in ok_vqa
    assert "candidates per query: 100 != 1000" in out.split("MSCOCO_t2i")[1]
    assert "no protocol field differs" in out.split("NIGHTS")[1]
    assert out.index("OK-VQA") < out.index("MSCOCO_t2i") < out.index("NIGHTS")  # largest gap first


def test_folder_without_results_is_a_clear_error(lb_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "reproduce", tmp_path, "--baseline", BASELINE, "--leaderboard-dir", lb_dir)
    assert code == 2 and "no MMEB-<dataset>.json results found" in err
