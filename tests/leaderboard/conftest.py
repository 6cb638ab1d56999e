"""Leaderboard fixtures: a private copy of the registered baselines, synthetic runs, and the README's default run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmeb_dllm.leaderboard.cli import main as leaderboard_main

REPO = Path(__file__).resolve().parents[2]
BASELINES = REPO / "leaderboard" / "baselines"
BIN = Path(sys.executable).parent


@pytest.fixture
def lb_dir(tmp_path: Path) -> Path:
    """An empty leaderboard (the repository's baselines, no submissions, no site) in a temporary folder."""
    root = tmp_path / "leaderboard"
    shutil.copytree(BASELINES, root / "baselines")
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``mmeb-dllm leaderboard <args>`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = leaderboard_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _demo_command(out: Path) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in {"MMEB_DATA_DIR", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [str(BIN / "mmeb-dllm"), "run", "-m", "lavida-embed-tiny", "-t", "MMEB-mini", "--output-folder", str(out)]
    return command, env


@pytest.fixture(scope="session", autouse=True)
def _demo_run_started(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Start the README's default run in the background when a selected test needs it, so that it overlaps the
    fast tests of this folder (the test that needs it runs last here, in test_webpage.py)."""
    needed = any("demo_results" in item.fixturenames for item in request.session.items)
    if not needed or os.environ.get("MMEB_LEADERBOARD_DEMO_RESULTS"):
        yield None
        return
    out = tmp_path_factory.mktemp("demo")
    command, env = _demo_command(out)
    log = (out.parent / "demo_run.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
    yield out, process, log
    if process.poll() is None:
        process.kill()
        process.wait()
    log.close()


@pytest.fixture(scope="session")
def demo_results(_demo_run_started) -> Path:
    """The output folder of the README's default run (`mmeb-dllm run -m lavida-embed-tiny -t MMEB-mini`).

    Set ``MMEB_LEADERBOARD_DEMO_RESULTS`` to an existing output folder of that command to skip the ~50 s run.
    """
    reuse = os.environ.get("MMEB_LEADERBOARD_DEMO_RESULTS")
    if reuse:
        return Path(reuse)
    out, process, log = _demo_run_started
    code = process.wait(timeout=900)
    log.flush()
    assert code == 0, Path(log.name).read_text()[-3000:]
    return out
