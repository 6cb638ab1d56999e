"""Faults: kill -9 mid-evaluation and rerun, a kill during a result write, two runs sharing an output folder."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmeb_dllm.atomic import atomic_write_json

BIN = Path(sys.executable).parent
TASKS = ["MMEB-mini-Digits", "MMEB-mini-Scenes_i2t"]


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MMEB_DATA_DIR", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MMEB_DLLM_CACHE=str(cache))
    return env


def _command(output: Path) -> list[str]:
    return [str(BIN / "mteb"), "run", "-m", "lavida-embed-tiny", "-t", *TASKS, "--output-folder", str(output),
            "--no-co2-tracker"]


def _scores(output: Path) -> dict[str, float]:
    scores = {}
    for task in TASKS:
        [path] = list(output.rglob(f"{task}.json"))
        scores[task] = json.loads(path.read_text())["scores"]["test"][0]["mmeb_hit_at_1"]
    return scores


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"score": 1})

    def broken_fsync(fd: int) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk vanished"):
        atomic_write_json(target, {"score": 2, "padding": "x" * 100_000})
    assert json.loads(target.read_text()) == {"score": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.slow
def test_kill_during_result_writes_never_leaves_a_half_written_file(tmp_path):
    target = tmp_path / "result.json"
    writer = (
        "import sys\nfrom mmeb_dllm.atomic import atomic_write_json\n"
        "i = 0\nwhile True:\n    atomic_write_json(sys.argv[1], {'i': i, 'payload': 'x' * 2_000_000})\n    i += 1\n"
    )
    rng = random.Random(0)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(target)])
        time.sleep(rng.uniform(0.3, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = json.loads(target.read_text())
        assert len(data["payload"]) == 2_000_000


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], float]:
    """Scores of an uninterrupted run, and how long it took."""
    root = tmp_path_factory.mktemp("reference")
    start = time.monotonic()
    subprocess.run(_command(root / "out"), env=_env(root / "cache"), check=True, capture_output=True, timeout=600)
    return _scores(root / "out"), time.monotonic() - start


@pytest.mark.slow
def test_kill_at_ten_random_points_then_rerun_gives_identical_scores(tmp_path, reference):
    cache = tmp_path / "cache"
    expected, duration = reference

    output = tmp_path / "killed"
    rng = random.Random(1234)
    for _ in range(10):
        proc = subprocess.Popen(_command(output), env=_env(cache), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in output.rglob("*.json"):
            json.loads(path.read_text())  # every file left behind parses
    subprocess.run(_command(output), env=_env(cache), check=True, capture_output=True, timeout=600)
    assert _scores(output) == expected


@pytest.mark.slow
def test_two_runs_sharing_an_output_folder(tmp_path, reference):
    output = tmp_path / "shared"
    procs = [subprocess.Popen(_command(output), env=_env(tmp_path / "cache"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert _scores(output) == reference[0]
