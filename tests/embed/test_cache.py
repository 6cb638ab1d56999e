"""The shared embedding cache: equality with fresh vectors, recipe keying, concurrent and killed writers, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mteb
import numpy as np
import pytest
import torch
from PIL import Image

from mmeb_dllm.embed.cache import EmbeddingCache, cache_location, default_cache
from mmeb_dllm.embed.embedder import Embedder, Item
from mmeb_dllm.embed.recipe import EmbeddingRecipe
from mmeb_dllm.paths import cache_dir
from tests.embed.toy_backbone import ToyBackbone
from tests.mmeb_fixture import write_mmeb_fixture

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def _recipe(**kw) -> EmbeddingRecipe:
    return EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0", **kw)


def _items() -> list[Item]:
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (5, 9), (0, 0, 255))
    return [
        Item("<|image_1|>\nRepresent the given image for classification", red),
        Item("a much longer text only query that needs more tokens than the others"),
        Item("<|image_1|>\nRepresent the given image.", blue),
        Item("short"),
        Item("<|image_1|>\nRepresent the given image for classification", red),
    ]


def test_cached_vectors_equal_fresh_ones(tmp_path):
    cache = EmbeddingCache(tmp_path)
    first = Embedder(ToyBackbone(), _recipe(), cache=cache)
    stored = first.embed(_items(), batch_size=2, show_progress=False)
    assert first.items_encoded == 4 and cache.count(_recipe().key()) == 4

    fresh = Embedder(ToyBackbone(), _recipe()).embed(_items(), batch_size=2, show_progress=False)
    reader = Embedder(ToyBackbone(seed=1), _recipe(), cache=EmbeddingCache(tmp_path))  # other weights: must not run
    cached = reader.embed(_items(), batch_size=2, show_progress=False)
    assert reader.items_encoded == 0
    np.testing.assert_array_equal(cached, stored)
    np.testing.assert_array_equal(cached, fresh)
    assert cached.dtype == np.float32


@pytest.mark.parametrize(
    "change", [{"pooling": "mean"}, {"attention": "causal"}, {"adapter_hash": "0123abcd"}, {"normalize": False}]
)
def test_a_changed_recipe_misses_the_cache(tmp_path, change):
    cache = EmbeddingCache(tmp_path)
    Embedder(ToyBackbone(), _recipe(), cache=cache).embed(_items(), show_progress=False)
    changed = Embedder(ToyBackbone(), _recipe(**change), cache=cache)
    changed.embed(_items(), show_progress=False)
    assert changed.items_encoded == 4
    assert cache.count() == 8 and len(cache.spaces()) == 2
    assert cache.spaces()[_recipe(**change).key()] == _recipe(**change).to_dict()


def test_only_missing_items_are_encoded(tmp_path):
    cache = EmbeddingCache(tmp_path)
    items = _items()
    Embedder(ToyBackbone(), _recipe(), cache=cache).embed(items[:2], show_progress=False)
    later = Embedder(ToyBackbone(), _recipe(), cache=cache)
    vectors = later.embed(items, batch_size=2, show_progress=False)
    assert later.items_encoded == 2
    fresh = Embedder(ToyBackbone(), _recipe()).embed(items, batch_size=2, show_progress=False)
    np.testing.assert_allclose(vectors, fresh, atol=1e-6)


def test_location_and_switch(monkeypatch, tmp_path):
    monkeypatch.setenv("MMEB_DLLM_EMBED_CACHE", str(tmp_path / "here"))
    assert cache_location() == tmp_path / "here"
    assert default_cache().path == tmp_path / "here" / "vectors.sqlite3"
    for value in ("off", "0", "OFF", "none"):
        monkeypatch.setenv("MMEB_DLLM_EMBED_CACHE", value)
        assert cache_location() is None and default_cache() is None
    monkeypatch.delenv("MMEB_DLLM_EMBED_CACHE")
    assert cache_location() == cache_dir() / "embeddings"


WRITER = textwrap.dedent(
    """
    import os, sys, time, numpy as np
    from mmeb_dllm.embed.cache import EmbeddingCache
    cache, writer, batches = EmbeddingCache(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    while len(sys.argv) > 4 and not os.path.exists(sys.argv[4]):  # start together: they race to create the file
        time.sleep(0.001)
    for b in range(batches):
        # batch b of every writer holds the same 8 shared keys plus 8 of its own; values encode (batch, slot)
        keys = [f"shared-{b}-{i}" for i in range(8)] + [f"w{writer}-{b}-{i}" for i in range(8)]
        cache.put("space", {k: np.full(64, b * 100 + i, dtype=np.float32) for i, k in enumerate(keys)})
        print(b, flush=True)
    """
)


def test_concurrent_writers_lose_nothing(tmp_path):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), "40", str(go)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for w in range(4)
    ]
    time.sleep(1.0)
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
    cache = EmbeddingCache(tmp_path)
    assert cache.count("space") == 40 * 8 + 4 * 40 * 8
    got = cache.get("space", [f"shared-{b}-{i}" for b in range(40) for i in range(8)])
    for key, vector in got.items():
        _, b, i = key.split("-")
        assert (vector == int(b) * 100 + int(i)).all()


def test_kill_minus_nine_keeps_whole_batches_only(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "0", "100000"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(30):  # let some batches commit
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    cache = EmbeddingCache(tmp_path)
    items = cache.items("space")
    batches = {int(key.split("-")[1]) for key in items}
    assert len(batches) >= 30
    assert len(items) == 16 * len(batches)  # no half-written batch
    assert batches == set(range(len(batches)))


def _scores(folder: Path, task: str) -> dict[str, float]:
    [path] = list(folder.rglob(f"{task}.json"))
    scores = json.loads(path.read_text())["scores"]["test"][0]
    return {k: v for k, v in scores.items() if isinstance(v, float)}


def _logged_items(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [key for line in log.read_text().splitlines() if line for key in json.loads(line)["items"]]


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.slow
def test_a_run_killed_mid_task_resumes_with_identical_scores_and_no_re_encoding(tmp_path):
    task = "MMEB-mini-Scenes_t2i"
    cache_folder = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in {"MMEB_DATA_DIR", "PYTHONPATH"}}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MMEB_DLLM_EMBED_CACHE=str(cache_folder),
               OMP_NUM_THREADS="1")  # the tiny model's ops are too small for threads to pay off

    def run(name: str) -> subprocess.Popen:
        command = [str(BIN / "mteb"), "run", "-m", "lavida-embed-tiny", "-t", task, "--batch-size", "2",
                   "--output-folder", str(tmp_path / name), "--no-co2-tracker"]
        return subprocess.Popen(command, env={**env, "MMEB_DLLM_ENCODE_LOG": str(tmp_path / f"{name}.log")},
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    killed = run("killed")
    deadline = time.monotonic() + 300
    while len(_logged_items(tmp_path / "killed.log")) < 40 and killed.poll() is None:  # queries + some candidates
        assert time.monotonic() < deadline, "the run produced no batches"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert not list((tmp_path / "killed").rglob(f"{task}.json"))
    done_before = _logged_items(tmp_path / "killed.log")

    resumed = run("resumed")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-3000:]
    done_after = _logged_items(tmp_path / "resumed.log")

    reference = mteb.get_model("lavida-embed-tiny", device="cpu")
    assert reference.embedding_cache is None  # conftest switches the cache off: fresh vectors
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mteb.evaluate(reference, mteb.get_tasks(tasks=[task]), cache=mteb.ResultCache(tmp_path / "reference"),
                      encode_kwargs={"batch_size": 2}, co2_tracker=False, show_progress_bar=False)
    finally:
        torch.set_num_threads(threads)

    assert set(done_before).isdisjoint(done_after)  # nothing finished before the kill was encoded again
    assert len(done_before) + len(done_after) == reference.embedder.items_encoded  # and nothing twice
    space = reference.recipe.key()
    assert EmbeddingCache(cache_folder).items(space) == set(done_before) | set(done_after)
    assert _same(_scores(tmp_path / "resumed", task), _scores(tmp_path / "reference", task))


def test_a_fully_cached_rerun_does_not_load_the_weights(tmp_path, monkeypatch):
    data = write_mmeb_fixture(tmp_path / "data", n_queries=4, n_candidates=3)
    monkeypatch.setenv("MMEB_DATA_DIR", str(data))
    monkeypatch.setenv("MMEB_DLLM_EMBED_CACHE", str(tmp_path / "cache"))
    tasks = mteb.get_tasks(tasks=["MMEB-VOC2007"])
    first = mteb.get_model("lavida-embed-tiny", device="cpu")
    mteb.evaluate(first, tasks, cache=mteb.ResultCache(tmp_path / "first"), co2_tracker=False,
                  show_progress_bar=False)
    again = mteb.get_model("lavida-embed-tiny", device="cpu")
    mteb.evaluate(again, tasks, cache=mteb.ResultCache(tmp_path / "again"), co2_tracker=False,
                  show_progress_bar=False)
    assert first.embedder.items_encoded > 0
    assert again._embedder is None  # every window came from the cache
    assert _same(_scores(tmp_path / "first", "MMEB-VOC2007"), _scores(tmp_path / "again", "MMEB-VOC2007"))
    assert EmbeddingCache(tmp_path / "cache").count(first.recipe.key()) == first.embedder.items_encoded
