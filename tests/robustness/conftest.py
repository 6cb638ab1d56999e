"""A small MMEB-layout mirror per test, and helpers to corrupt one row of it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmeb_dllm.benchmark.data import LoadedDataset, load_dataset_rows
from mmeb_dllm.benchmark.table import load_table
from tests.mmeb_fixture import write_mmeb_fixture


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_mmeb_fixture(tmp_path / "mmeb", n_queries=12, n_candidates=10)
    monkeypatch.setenv("MMEB_DATA_DIR", str(root))
    monkeypatch.delenv("MMEB_IMAGE_DIR", raising=False)
    monkeypatch.delenv("MMEB_DLLM_SKIP_BAD_ROWS", raising=False)
    return root


def load(key: str) -> LoadedDataset:
    table = load_table("MMEB")
    return load_dataset_rows(table, table.dataset(key))


def rewrite(root: Path, key: str, mutate: Callable[[list[dict]], None], schema: pa.Schema | None = None) -> None:
    path = next((root / key).glob("test-*.parquet"))
    rows = pq.read_table(path).to_pylist()
    mutate(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def query_image(root: Path, key: str, row: int) -> Path:
    rel = pq.read_table(next((root / key).glob("test-*.parquet"))).to_pylist()[row]["qry_img_path"]
    return root / "eval_images" / rel
