"""The plugin is visible to the stock mteb CLI and API with nothing imported by the user (installed package)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"MMEB_DATA_DIR", "MMEB_MODEL_DIR", "PYTHONPATH"}}
    full_env = {**base, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


def test_interpreter_start_imports_nothing_heavy(tmp_path):
    code = "import sys; print(sorted(m for m in ('mteb', 'torch', 'transformers', 'mmeb_dllm') if m in sys.modules));"
    code += "print('_mmeb_dllm_hook' in sys.modules)"
    out = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert out.stdout.split() == ["[]", "True"], out.stderr


def test_python_api_sees_models_tasks_and_benchmark(tmp_path):
    code = (
        "import mteb\n"
        "assert mteb.get_model_meta('lavida-embed').name == 'mmeb-dllm/lavida-embed'\n"
        "assert mteb.get_model_meta('mmeb-dllm/lavida-dream-embed').name == 'mmeb-dllm/lavida-dream-embed'\n"
        "assert len(mteb.get_task('MMEB').metadata.tasks) == 36\n"
        "assert len(mteb.get_task('MMEB-paper').metadata.tasks) == 32\n"
        "assert mteb.get_task('MMEB-MSCOCO_t2i').metadata.category == 't2it'\n"
        "assert len(mteb.get_benchmark('MMEB').tasks) == 36\n"
        "print('ok')\n"
    )
    out = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert out.stdout.strip() == "ok", out.stderr


def test_stock_cli_lists_plugin_tasks_and_benchmarks(tmp_path):
    tasks = _run([str(BIN / "mteb"), "available-tasks"], cwd=tmp_path)
    assert "MMEB-ImageNet-1K" in tasks.stdout and "MMEB-mini-Digits" in tasks.stdout, tasks.stderr[-2000:]
    benchmarks = _run([sys.executable, "-m", "mteb", "available-benchmarks"], cwd=tmp_path)
    assert "MMEB" in benchmarks.stdout, benchmarks.stderr[-2000:]


def test_environment_variable_turns_the_hook_off(tmp_path):
    code = "import mteb\ntry:\n    mteb.get_model_meta('lavida-embed')\nexcept Exception:\n    print('absent')"
    out = _run([sys.executable, "-c", code], env={"MMEB_DLLM_DISABLE_HOOK": "1"}, cwd=tmp_path)
    assert out.stdout.strip() == "absent", out.stderr


def test_a_broken_plugin_warns_and_mteb_still_works(tmp_path):
    fake = tmp_path / "fake" / "mmeb_dllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("def register():\n    raise RuntimeError('boom')\n")
    code = "import mteb\nprint(len(mteb.get_tasks(tasks=['STS12'])))"
    out = _run([sys.executable, "-c", code], env={"PYTHONPATH": str(tmp_path / "fake")}, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr
    assert "mmeb_dllm could not register with mteb (RuntimeError: boom)" in out.stderr


def test_missing_weights_fail_fast_with_instructions(tmp_path):
    start = time.monotonic()
    out = _run([str(BIN / "mteb"), "run", "-m", "lavida-embed", "-t", "MMEB", "--output-folder", str(tmp_path)],
               env={"MMEB_MODEL_DIR": str(tmp_path / "no-models")}, cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert out.returncode != 0
    assert "weights of mmeb-dllm/lavida-embed" in out.stderr
    assert "huggingface-cli download jacklishufan/lavida-llada-v1.0-instruct" in out.stderr
    assert "Traceback" not in out.stderr
    assert elapsed < 60


def test_missing_data_is_reported_before_weights_load(tmp_path):
    """The tiny model resolves instantly; the data check must fire before any forward pass or weight load."""
    out = _run([str(BIN / "mteb"), "run", "-m", "lavida-embed-tiny", "-t", "MMEB-ImageNet-1K",
                "--output-folder", str(tmp_path)], env={"MMEB_DATA_DIR": str(tmp_path / "nowhere")}, cwd=tmp_path)
    assert out.returncode != 0
    assert "MMEB data folder" in out.stderr and "ImageNet-1K" in out.stderr and "huggingface-cli" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("argv", [["run", "-m", "lavida-embd-tiny", "-t", "MMEB-mini"],
                                  ["run", "-m", "lavida-embed-tiny", "-t", "MMEB-mni"]])
def test_mmeb_dllm_cli_checks_names_before_loading(argv, tmp_path):
    out = _run([str(BIN / "mmeb-dllm"), *argv, "--output-folder", str(tmp_path)], cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown" in out.stderr and "did you mean" in out.stderr


@pytest.mark.parametrize(
    "first",
    ["import mmeb_dllm.benchmark.tasks", "import mmeb_dllm; mmeb_dllm.register()", "import mmeb_dllm.analysis.reports"],
)
def test_registration_survives_our_own_modules_importing_mteb_first(first, tmp_path):
    code = f"{first}\nimport json\nimport mteb\nprint(mteb.get_model_meta('lavida-embed').name)"
    out = _run([sys.executable, "-W", "error::UserWarning", "-c", code], cwd=tmp_path)
    assert out.stdout.strip() == "mmeb-dllm/lavida-embed", out.stderr[-2000:]
