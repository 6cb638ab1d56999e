"""``leaderboard submit``: valid runs add a row with recomputed aggregates; malformed or tampered ones are rejected
with a message naming the problem and leave every leaderboard file byte-identical."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.leaderboard.store import Leaderboard
from tests.leaderboard.conftest import BASELINES, run_cli
from tests.leaderboard.fixtures import snapshot, write_run

MODEL = "test-org/ar-embed"
RUN = Path("results") / "test-org__ar-embed" / "r1"


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A leaderboard with one accepted MMEB submission and a built site, plus that submission's run folder."""
    from mmeb_dllm.leaderboard.cli import main

    base = tmp_path_factory.mktemp("populated")
    root = base / "leaderboard"
    shutil.copytree(BASELINES, root / "baselines")
    first = base / "first"
    write_run(first, model="test-org/first-embed", skill=0.6, seed=1)
    assert main(["submit", str(first), "--leaderboard-dir", str(root), "--date", "2026-01-02"]) == 0
    return root, first


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid full-MMEB output folder of MODEL (copied by each test before it is broken)."""
    out = tmp_path_factory.mktemp("template") / "out"
    write_run(out, model=MODEL)
    return out


@pytest.fixture
def board(populated: tuple[Path, Path], tmp_path: Path) -> Path:
    root = tmp_path / "leaderboard"
    shutil.copytree(populated[0], root)
    return root


def _edit(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _entry(run: Path, key: str, change: Callable[[dict], None]) -> None:
    _edit(run / f"MMEB-{key}.json", lambda d: change(d["scores"]["test"][0]))


def _all_entries(run: Path, change: Callable[[dict], None]) -> None:
    for spec in load_table("MMEB").datasets:
        _entry(run, spec.key, change)


def _set(**values: object) -> Callable[[dict], None]:
    return lambda entry: entry.update(values)


def _rename_model(name: str) -> Callable[[Path, Path], None]:
    def mutate(run: Path, out: Path) -> None:
        _edit(run / "model_meta.json", lambda m: m.update(name=name))
        _all_entries(run, lambda e: e["mmeb_protocol"]["model"].update(name=name))

    return mutate


def _duplicate_key(run: Path, out: Path) -> None:
    path = run / "MMEB-GQA.json"
    text = path.read_text()
    path.write_text(text.replace('"main_score":', '"main_score": 0.99, "main_score":', 1))


def _truncate(run: Path, out: Path) -> None:
    path = run / "MMEB-OK-VQA.json"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _symlink(run: Path, out: Path) -> None:
    path = run / "MMEB-EDIS.json"
    target = out / "elsewhere.json"
    shutil.move(path, target)
    os.symlink(target, path)


def _no_recipe(run: Path, out: Path) -> None:
    _all_entries(run, lambda e: e.pop("mmeb_protocol"))
    _edit(run / "model_meta.json", lambda m: m.update(loader_kwargs={}, experiment_kwargs=None))


def _two_boards(run: Path, out: Path) -> None:
    mini = write_run(out.parent / "mini", board="MMEB-mini", model=MODEL)
    for path in mini.glob("MMEB-mini*.json"):
        shutil.copy(path, run / path.name)


# (id, mutation of a valid full-MMEB run, extra CLI arguments, a phrase the error message must contain)
CASES: list[tuple[str, Callable[[Path, Path], None], list[str], str]] = [
    ("missing_task", lambda r, o: (r / "MMEB-VOC2007.json").unlink(), [], "missing 1 of 36 MMEB datasets: VOC2007"),
    ("score_above_one", lambda r, o: _entry(r, "SUN397", _set(mmeb_hit_at_1=1.2, main_score=1.2)), [],
     "mmeb_hit_at_1 = 1.2 is outside [0, 1]"),
    ("negative_metric", lambda r, o: _entry(r, "SUN397", _set(ndcg_at_10=-0.1)), [], "ndcg_at_10 = -0.1 is outside"),
    ("nan_score", lambda r, o: _entry(r, "N24News", _set(mmeb_hit_at_1=float("nan"))), [],
     "MMEB-N24News.json: mmeb_hit_at_1 is nan (not finite)"),
    ("infinite_metric", lambda r, o: _entry(r, "N24News", _set(recall_at_5=float("inf"))), [], "recall_at_5 is inf"),
    ("aggregate_disagrees", lambda r, o: _edit(r / "MMEB.json", lambda d: d["scores"]["test"][0].update(
        CLS=d["scores"]["test"][0]["CLS"] + 0.05)), [], "aggregate CLS"),
    ("overall_disagrees", lambda r, o: _edit(r / "MMEB.json", lambda d: d["scores"]["test"][0].update(
        main_score=0.99, mmeb_hit_at_1=0.99)), [], "aggregate main_score = 0.99 disagrees"),
    ("unknown_dataset_key", lambda r, o: shutil.copy(r / "MMEB-CIRR.json", r / "MMEB-ImageNet-2K.json"), [],
     "unknown MMEB dataset key 'ImageNet-2K'"),
    ("not_an_mmeb_file", lambda r, o: (r / "STS12.json").write_text("{}"), [], "STS12.json is not an MMEB result"),
    ("path_traversal_name", _rename_model("../../etc/passwd"), [], "contains '..' (path traversal)"),
    ("html_in_name", _rename_model("org/<script>alert(1)</script>"), [], "contains HTML/script characters"),
    ("unsafe_revision", lambda r, o: _edit(r / "model_meta.json", lambda m: m.update(revision="../r1")), [],
     "model revision '../r1'"),
    ("truncated_json", _truncate, [], "MMEB-OK-VQA.json is not valid JSON (truncated file?)"),
    ("duplicate_json_key", _duplicate_key, [], "has the key 'main_score' twice"),
    ("score_is_string", lambda r, o: _entry(r, "VizWiz", _set(mmeb_hit_at_1="0.5")), [],
     "mmeb_hit_at_1 must be a number, got str"),
    ("score_is_bool", lambda r, o: _entry(r, "VizWiz", _set(main_score=True)), [], "main_score must be a number"),
    ("scores_wrong_shape", lambda r, o: _edit(r / "MMEB-DocVQA.json", lambda d: d["scores"].update(test={})), [],
     "MMEB-DocVQA.json must have scores.test"),
    ("renamed_file", lambda r, o: _edit(r / "MMEB-CIRR.json", lambda d: d.update(task_name="MMEB-EDIS")), [],
     "renamed or tampered"),
    ("main_differs_from_hit", lambda r, o: _entry(r, "ObjectNet", _set(main_score=0.999)), [],
     "main_score 0.999 differs from mmeb_hit_at_1"),
    ("not_whole_hits", lambda r, o: _entry(r, "ObjectNet", _set(mmeb_hit_at_1=0.5005, main_score=0.5005)), [],
     "not a whole number of hits out of 1000"),
    ("wrong_query_count", lambda r, o: _entry(r, "OVEN", _set(mmeb_num_queries=500.0)), [],
     "scored 500 queries, but MMEB OVEN has 1000"),
    ("missing_metric", lambda r, o: _entry(r, "WebQA", lambda e: e.pop("ndcg_at_5")), [], "ndcg_at_5 is missing"),
    ("no_model_meta", lambda r, o: (r / "model_meta.json").unlink(), [], "no model_meta.json"),
    ("model_meta_wrong_type", lambda r, o: _edit(r / "model_meta.json", lambda m: m.update(n_parameters="7B")), [],
     "n_parameters must be a positive integer"),
    ("no_recipe", _no_recipe, [], "no embedding recipe"),
    ("mixed_recipes", lambda r, o: _entry(r, "RefCOCO", lambda e: e["mmeb_protocol"]["model"].update(
        recipe_key="0" * 20)), [], "different recipes (mixed runs)"),
    ("protocol_other_model", lambda r, o: _entry(r, "RefCOCO", lambda e: e["mmeb_protocol"]["model"].update(
        name="someone/else")), [], "names model 'someone/else'"),
    ("folder_does_not_match_meta", lambda r, o: _edit(r / "model_meta.json", lambda m: m.update(revision="r2")), [],
     "does not match model_meta.json revision"),
    ("symlinked_file", _symlink, [], "MMEB-EDIS.json is a symbolic link"),
    ("two_benchmarks", _two_boards, [], "pass --benchmark"),
    ("bad_url", lambda r, o: None, ["--url", "javascript:alert(1)"], "must be an https:// address"),
    ("html_in_source", lambda r, o: None, ["--source", "<b>x</b>\n"], "source must be printable text"),
]


@pytest.mark.parametrize(("mutate", "extra", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_submission_is_rejected_and_changes_nothing(board, template, tmp_path, capsys, mutate, extra, phrase):
    out = tmp_path / "run"
    shutil.copytree(template, out)
    run = out / RUN
    mutate(run, out)
    before = snapshot(board)
    code, stdout, stderr = run_cli(capsys, "submit", out, "--leaderboard-dir", board, *extra)
    assert code == 2, stdout
    assert "rejected" in stderr and phrase in stderr, stderr
    assert snapshot(board) == before


def test_duplicate_and_resubmission_are_rejected(board, populated, tmp_path, capsys):
    before = snapshot(board)
    code, _, err = run_cli(capsys, "submit", populated[1], "--leaderboard-dir", board)
    assert code == 2 and "duplicate: identical results are already on the leaderboard" in err
    other = tmp_path / "again"
    write_run(other, model="test-org/first-embed", skill=0.3, seed=9)  # same model/revision/recipe, new scores
    code, _, err = run_cli(capsys, "submit", other, "--leaderboard-dir", board)
    assert code == 2 and "pass --replace" in err
    assert snapshot(board) == before
    code, out, _ = run_cli(capsys, "submit", other, "--leaderboard-dir", board, "--replace")
    assert code == 0, out
    assert len(list((board / "submissions" / "MMEB").glob("*.json"))) == 1


def test_tampered_stored_submission_blocks_build_and_submit(board, template, capsys):
    [stored] = (board / "submissions" / "MMEB").glob("*.json")
    record = json.loads(stored.read_text())
    record["datasets"]["VOC2007"]["hit_at_1"] = 0.999
    stored.write_text(json.dumps(record, indent=2))
    before = snapshot(board)
    code, _, err = run_cli(capsys, "build", "--leaderboard-dir", board)
    assert code == 2 and "content hash mismatch" in err and stored.name in err
    code, _, err = run_cli(capsys, "submit", template, "--leaderboard-dir", board)
    assert code == 2 and "content hash mismatch" in err
    assert snapshot(board) == before


def test_valid_submission_adds_a_row_with_recomputed_aggregates(board, tmp_path, capsys):
    out = tmp_path / "run"
    run = write_run(out, model=MODEL, skill=0.4, seed=3, with_aggregate=False)
    code, stdout, _ = run_cli(capsys, "submit", out, "--leaderboard-dir", board, "--date", "2026-02-03")
    assert code == 0
    assert f"added {MODEL} to MMEB" in stdout
    rows, _, _ = Leaderboard(board).rows()
    [row] = [r for r in rows if r.name == MODEL]
    table = load_table("MMEB")
    hits = {}
    for spec in table.datasets:
        entry = json.loads((run / f"MMEB-{spec.key}.json").read_text())["scores"]["test"][0]
        hits[spec.key] = entry["mmeb_hit_at_1"]
    assert row.scores == hits
    for group in ("CLS", "VQA", "RET", "VG", "IND", "OOD"):
        members = [hits[d.key] for d in table.datasets if group in (d.meta_task, d.split)]
        assert row.aggregates[group] == pytest.approx(np.mean(members), abs=1e-12)
    assert row.overall == pytest.approx(np.mean(list(hits.values())), abs=1e-12)
    assert row.overall != pytest.approx(np.mean([row.aggregates[m] for m in ("CLS", "VQA", "RET", "VG")]))
    assert row.recipe.startswith("pooling=last") and row.size_b == 2.0 and not row.partial
    page = (board / "site" / "index.html").read_text()
    assert f'data-id="{row.id}"' in page
    assert f"**{MODEL}**" in (board / "site" / "leaderboard.md").read_text()


def test_partial_submission_needs_the_flag_and_is_unranked(board, tmp_path, capsys):
    out = tmp_path / "run"
    keys = [d.key for d in load_table("MMEB").datasets if d.meta_task == "CLS"]
    write_run(out, model=MODEL, keys=keys)
    code, _, err = run_cli(capsys, "submit", out, "--leaderboard-dir", board)
    assert code == 2 and "pass --partial" in err
    code, stdout, _ = run_cli(capsys, "submit", out, "--leaderboard-dir", board, "--partial")
    assert code == 0 and "partial (10 datasets)" in stdout
    rows, _, _ = Leaderboard(board).rows()
    [row] = [r for r in rows if r.name == MODEL]
    assert row.partial and row.overall is None and set(row.aggregates) == {"CLS"}
    code, stdout, _ = run_cli(capsys, "list", "--leaderboard-dir", board, "--benchmark", "MMEB")
    assert stdout.splitlines()[-1].split()[0] == "-"


def test_benchmark_option_picks_one_board(board, template, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(template, out)
    _two_boards(out / RUN, out)
    code, stdout, err = run_cli(capsys, "submit", out, "--leaderboard-dir", board, "--benchmark", "MMEB-mini")
    assert code == 0, err
    assert f"added {MODEL} to MMEB-mini" in stdout
    assert len(list((board / "submissions" / "MMEB-mini").glob("*.json"))) == 1
