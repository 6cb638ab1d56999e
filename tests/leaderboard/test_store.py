"""Leaderboard folder: atomic writes leave no partial file; invalid baseline data is refused with its location."""

from __future__ import annotations

import json
import os

import pytest

from mmeb_dllm.leaderboard.schema import LeaderboardError
from mmeb_dllm.leaderboard.store import Leaderboard, write_atomic
from tests.leaderboard.conftest import run_cli
from tests.leaderboard.fixtures import snapshot


def test_write_atomic_replaces_or_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "site" / "index.html"
    write_atomic(path, b"old")
    assert path.read_bytes() == b"old"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["index.html"]  # no temporary file left behind


def test_invalid_baseline_data_is_refused(lb_dir, capsys):
    path = lb_dir / "baselines" / "vlm2vec_table6.json"
    data = json.loads(path.read_text())
    data["entries"][0]["scores"]["ImageNet-1K"] = 120
    data["entries"][1]["scores"]["ImageNet-2K"] = 50
    path.write_text(json.dumps(data))
    before = snapshot(lb_dir)
    with pytest.raises(LeaderboardError, match=r"vlm2vec_table6.json entry 0 \('clip'\) scores: ImageNet-1K = 120"):
        Leaderboard(lb_dir).load_baselines()
    code, _, err = run_cli(capsys, "build", "--leaderboard-dir", lb_dir)
    assert code == 2 and "unknown key 'ImageNet-2K'" in err
    assert snapshot(lb_dir) == before


def test_missing_leaderboard_names_the_fix(tmp_path, capsys):
    code, _, err = run_cli(capsys, "build", "--leaderboard-dir", tmp_path / "nowhere")
    assert code == 2 and "--leaderboard-dir" in err and "MMEB_LEADERBOARD_DIR" in err


def test_wired_as_the_leaderboard_subcommand(lb_dir, capsys):
    from mmeb_dllm.cli import main

    assert main(["leaderboard", "list", "--leaderboard-dir", str(lb_dir), "--benchmark", "MMEB"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "MMEB:" and lines[1].split()[:2] == ["1", "77.8"]  # Seed-1.6-embedding, fact sheet section 6
