"""The declarative task tables in ``tasks/*.toml``, read into frozen dataclasses.

A table is data: one ``[benchmark]`` header (hub id and revision, or a bundled data folder) and one ``[[dataset]]``
entry per dataset. Nothing here knows about mteb.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

from mmeb_dllm.errors import ConfigError
from mmeb_dllm.paths import tasks_dir

META_TASKS = ("CLS", "VQA", "RET", "VG")
SPLITS = ("IND", "OOD")
MODALITIES = ("image", "text", "image+text")
TABLES = {"MMEB": "mmeb.toml", "MMEB-mini": "mmeb_mini.toml"}


@dataclass(frozen=True)
class DatasetSpec:
    """One MMEB dataset as the leaderboard defines it."""

    key: str
    meta_task: str
    split: str
    query_modality: str
    target_modality: str
    query_instruction: str
    target_instruction: str
    num_queries: int
    num_candidates: int
    train_config: str = ""
    instruction_evidence: str = ""
    notes: str = ""

    @property
    def query_has_image(self) -> bool:
        return "image" in self.query_modality

    @property
    def target_has_image(self) -> bool:
        return "image" in self.target_modality

    def mteb_category(self) -> str:
        """mteb category (e.g. ``it2t``): a side reads text when it has text or carries an instruction."""
        query = ("i" if self.query_has_image else "") + "t"
        target_text = "text" in self.target_modality or bool(self.target_instruction)
        target = ("i" if self.target_has_image else "") + ("t" if target_text else "")
        return f"{query}2{target}"


@dataclass(frozen=True)
class BenchmarkTable:
    """A benchmark's header plus its datasets, in table order."""

    name: str
    hub_id: str
    hub_revision: str
    images_file: str
    data_dir: Path | None
    datasets: tuple[DatasetSpec, ...]

    def dataset(self, key: str) -> DatasetSpec:
        for spec in self.datasets:
            if spec.key == key:
                return spec
        raise ConfigError(f"{self.name} has no dataset {key!r}; known: {', '.join(d.key for d in self.datasets)}")


def _parse_dataset(entry: dict, source: Path) -> DatasetSpec:
    known = {f.name for f in fields(DatasetSpec)}
    unknown = set(entry) - known
    if unknown:
        raise ConfigError(f"{source}: dataset {entry.get('key')!r} has unknown fields {sorted(unknown)}")
    spec = DatasetSpec(**entry)
    checks = {
        "meta_task": (spec.meta_task, META_TASKS),
        "split": (spec.split, SPLITS),
        "query_modality": (spec.query_modality, MODALITIES),
        "target_modality": (spec.target_modality, MODALITIES),
    }
    for name, (value, allowed) in checks.items():
        if value not in allowed:
            raise ConfigError(f"{source}: dataset {spec.key!r} has {name}={value!r}; allowed: {allowed}")
    return spec


@cache
def load_table(name: str) -> BenchmarkTable:
    """Read ``tasks/<table>.toml`` for ``MMEB`` or ``MMEB-mini``."""
    if name not in TABLES:
        raise ConfigError(f"unknown task table {name!r}; known: {sorted(TABLES)}")
    source = tasks_dir() / TABLES[name]
    raw = tomllib.loads(source.read_text(encoding="utf-8"))
    header = raw["benchmark"]
    datasets = tuple(_parse_dataset(entry, source) for entry in raw["dataset"])
    keys = [d.key for d in datasets]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{source}: duplicate dataset keys")
    data_dir = header.get("data_dir")
    return BenchmarkTable(
        name=header["name"],
        hub_id=header.get("hub_id", ""),
        hub_revision=header.get("hub_revision", ""),
        images_file=header.get("images_file", "images.zip"),
        data_dir=(source.parent / data_dir) if data_dir else None,
        datasets=datasets,
    )
