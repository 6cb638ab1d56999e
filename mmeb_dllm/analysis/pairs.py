"""Seeded samples of an MMEB task's rows as items: the same rows for every model, so results are comparable."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from mmeb_dllm.benchmark.data import ItemRef, LoadedDataset
from mmeb_dllm.benchmark.images import open_image
from mmeb_dllm.embed.embedder import Item


@dataclass
class TaskSample:
    """Sampled rows: query items, ground-truth target items, and every candidate of those rows (by content id)."""

    task: str
    rows: list[int]
    queries: list[Item]
    targets: list[Item]
    candidate_ids: list[list[str]]
    candidates: dict[str, Item]


def load_task(task_name: str) -> LoadedDataset:
    import mteb

    import mmeb_dllm

    mmeb_dllm.register()
    task = mteb.get_task(task_name)
    if not hasattr(task, "loaded"):
        from mmeb_dllm.errors import ConfigError

        raise ConfigError(f"{task_name} is not an MMEB dataset task (aggregates are not analysed as one task)")
    task.load_data()
    return task.loaded


def sample_task(task_name: str, *, sample: int, seed: int) -> TaskSample:
    """``sample`` rows chosen with ``random.Random(seed)`` (all rows if fewer), kept in source order."""
    loaded = load_task(task_name)
    count = min(sample, len(loaded.rows))
    chosen = sorted(random.Random(seed).sample(range(len(loaded.rows)), count))
    images: dict[str, Image.Image] = {}

    def item(ref: ItemRef) -> Item:
        path = loaded.image_file(ref)
        if path is None:
            return Item(ref.text)
        if ref.image_path not in images:
            images[ref.image_path] = open_image(path, where=f"{task_name}, {ref.image_path}")
        return Item(ref.text, images[ref.image_path])

    rows = [loaded.rows[i] for i in chosen]
    candidates: dict[str, Item] = {}
    for row in rows:
        for cand in row.candidates:
            if cand.item_id not in candidates:
                candidates[cand.item_id] = item(cand)
    return TaskSample(
        task=task_name,
        rows=[row.index for row in rows],
        queries=[item(row.query) for row in rows],
        targets=[item(row.candidates[0]) for row in rows],
        candidate_ids=[[c.item_id for c in row.candidates] for row in rows],
        candidates=candidates,
    )
