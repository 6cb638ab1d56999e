"""Multi-process encoding: the work split, rank handling, and 2-rank torchrun runs equal to 1 rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mteb
import numpy as np
import pytest
from PIL import Image

from mmeb_dllm.backbones.lavida import LavidaBackbone
from mmeb_dllm.backbones.tiny import tiny_checkpoint_dir
from mmeb_dllm.embed.cache import EmbeddingCache
from mmeb_dllm.embed.distributed import RankGroup, rank_device, results_written_by_rank_zero
from mmeb_dllm.embed.embedder import Embedder, Item, item_key
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from tests.mmeb_fixture import write_mmeb_fixture

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def test_batches_go_to_the_least_loaded_rank():
    two = RankGroup(rank=0, world_size=2)
    assert two.assign([10, 9, 8, 3, 3, 2]) == [0, 1, 1, 0, 0, 0]  # final loads 18 and 17
    assert two.assign([5, 5, 5, 5]) == [0, 1, 0, 1]
    three = RankGroup(rank=2, world_size=3)
    owners = three.assign([7] * 9)
    assert all(owners.count(rank) == 3 for rank in range(3))
    assert RankGroup().assign([4, 3, 2]) == [0, 0, 0]


def test_every_rank_gets_a_batch_when_there_are_few_items():
    two = RankGroup(rank=1, world_size=2)
    assert two.batch_count(5, 32) == 2 and two.batch_count(1, 32) == 1 and two.batch_count(70, 32) == 4
    assert RankGroup().batch_count(5, 32) == 1 and RankGroup().batch_count(70, 32) == 3


def test_rank_comes_from_the_launcher_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert RankGroup.from_env() == RankGroup() and not RankGroup().is_distributed
    assert rank_device("cuda") == "cuda"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    group = RankGroup.from_env()
    assert (group.rank, group.world_size, group.local_rank, group.is_main) == (5, 4, 1, False)
    assert rank_device("cuda") == "cuda:1" and rank_device("cpu") == "cpu" and rank_device("cuda:3") == "cuda:3"


def test_only_rank_zero_writes_results(monkeypatch, tmp_path):
    from mteb.cli import build_cli

    original = build_cli.ResultCache
    task_result = mteb.TaskResult.model_construct(task_name="X")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with results_written_by_rank_zero():
        cache = build_cli.ResultCache(tmp_path)
        cache.save_to_cache(task_result, "some/model", "rev")
        assert isinstance(cache, original)  # still reads existing results like rank 0 does
    assert build_cli.ResultCache is original
    assert list(tmp_path.rglob("*.json")) == []
    monkeypatch.setenv("RANK", "0")
    with results_written_by_rank_zero():
        assert build_cli.ResultCache is original


def _fixture_items(root: Path) -> list[tuple[str, str]]:
    """(text, image path) pairs: image queries, text candidates, image candidates, with repeats."""
    data = write_mmeb_fixture(root, n_queries=5, n_candidates=3)
    images = sorted(str(p) for p in (data / "eval_images").rglob("*.png"))[:9]
    pairs = [("<|image_1|>\nRepresent the given image.", path) for path in images]
    pairs += [(f"candidate answer number {i}", "") for i in range(7)]
    pairs += [("a rather long text-only query " * 3, "")]
    return pairs + pairs[:5] + pairs[9:12]


def _items(pairs: list[tuple[str, str]]) -> list[Item]:
    return [Item(text, Image.open(path).convert("RGB") if path else None) for text, path in pairs]


WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from PIL import Image
    from mmeb_dllm.backbones.lavida import LavidaBackbone
    from mmeb_dllm.backbones.tiny import tiny_checkpoint_dir
    from mmeb_dllm.embed.cache import EmbeddingCache
    from mmeb_dllm.embed.distributed import RankGroup
    from mmeb_dllm.embed.embedder import Embedder, Item
    from mmeb_dllm.embed.recipe import EmbeddingRecipe

    spec = json.loads(open(sys.argv[1]).read())
    group = RankGroup.from_env()
    backbone = LavidaBackbone.from_pretrained(tiny_checkpoint_dir("lavida-llada"))
    embedder = Embedder(backbone, EmbeddingRecipe(**spec["recipe"]), cache=EmbeddingCache(spec["cache"]), group=group)
    items = [Item(t, Image.open(p).convert("RGB") if p else None) for t, p in spec["items"]]
    half = len(items) // 2  # two calls, like two windows of one task
    vectors = np.concatenate([embedder.embed(items[:half], batch_size=2, show_progress=False),
                              embedder.embed(items[half:], batch_size=2, show_progress=False)])
    np.save(f"{spec['out']}/rank{group.rank}.npy", vectors)
    report = {"items_encoded": embedder.items_encoded, "world_size": group.world_size}
    open(f"{spec['out']}/rank{group.rank}.json", "w").write(json.dumps(report))
    """
)


@pytest.mark.slow
def test_two_rank_torchrun_encode_equals_one_rank(tmp_path):
    pairs = _fixture_items(tmp_path / "data")
    recipe = EmbeddingRecipe(model="mmeb-dllm/lavida-embed-tiny", checkpoint="tiny:lavida-llada", revision="tiny-v2")
    single = Embedder(LavidaBackbone.from_pretrained(tiny_checkpoint_dir("lavida-llada")), recipe)
    expected = single.embed(_items(pairs), batch_size=2, show_progress=False)
    unique = single.items_encoded
    pre_cached = _items(pairs[:3])  # already in the cache: no rank may encode them again
    cache = EmbeddingCache(tmp_path / "cache")
    cache.put(recipe.key(), {item_key(item): single.embed([item], show_progress=False)[0] for item in pre_cached})

    spec = {"recipe": recipe.to_dict(), "cache": str(tmp_path / "cache"), "items": pairs, "out": str(tmp_path)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([*TORCHRUN, str(tmp_path / "worker.py"), str(tmp_path / "spec.json")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(report["world_size"] == 2 for report in reports)
    encoded = [report["items_encoded"] for report in reports]
    assert sum(encoded) == unique - 3 and min(encoded) > 0  # split between the ranks, each item once
    rank0, rank1 = (np.load(tmp_path / f"rank{r}.npy") for r in range(2))
    np.testing.assert_array_equal(rank0, rank1)  # every rank holds every vector
    np.testing.assert_allclose(rank0, expected, atol=1e-5)
    assert cache.count(recipe.key()) == unique


@pytest.mark.slow
def test_mmeb_dllm_run_under_torchrun_scores_like_one_rank_and_only_rank_zero_reports(tmp_path, monkeypatch):
    data = write_mmeb_fixture(tmp_path / "data", n_queries=5, n_candidates=3)
    tasks = ["MMEB-VOC2007", "MMEB-MSCOCO_t2i"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MMEB_DATA_DIR=str(data), MMEB_DLLM_EMBED_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               MMEB_DLLM_ENCODE_LOG=str(tmp_path / "encoded.log"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [*TORCHRUN, "-m", "mmeb_dllm", "run", "-m", "lavida-embed-tiny", "-t", *tasks, "--batch-size", "2",
               "--output-folder", str(tmp_path / "two"), "--no-co2-tracker"]
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.count("Scores of mmeb-dllm/lavida-embed-tiny") == 1  # the summary comes from rank 0 only

    monkeypatch.setenv("MMEB_DATA_DIR", str(data))
    reference = mteb.get_model("lavida-embed-tiny", device="cpu")
    mteb.evaluate(reference, mteb.get_tasks(tasks=tasks), cache=mteb.ResultCache(tmp_path / "one"),
                  encode_kwargs={"batch_size": 2}, co2_tracker=False, show_progress_bar=False)
    for task in tasks:
        [two] = list((tmp_path / "two").rglob(f"{task}.json"))
        [one] = list((tmp_path / "one").rglob(f"{task}.json"))
        two_scores, one_scores = (json.loads(p.read_text())["scores"]["test"][0] for p in (two, one))
        for name in ("mmeb_hit_at_1", "ndcg_at_3", "map_at_5", "mrr_at_10"):
            assert two_scores[name] == one_scores[name], (task, name)

    batches = [json.loads(line) for line in (tmp_path / "encoded.log").read_text().splitlines()]
    by_rank = {rank: [key for b in batches if b["rank"] == rank for key in b["items"]] for rank in (0, 1)}
    assert by_rank[0] and by_rank[1] and set(by_rank[0]).isdisjoint(by_rank[1])
    assert len(by_rank[0]) + len(by_rank[1]) == reference.embedder.items_encoded
