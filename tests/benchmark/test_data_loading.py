import shutil
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmeb_dllm.benchmark.data import load_dataset_rows
from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.errors import DataError
from tests.mmeb_fixture import unique_items, write_mmeb_fixture


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_mmeb_fixture(tmp_path / "mmeb", n_queries=20, n_candidates=10)
    monkeypatch.setenv("MMEB_DATA_DIR", str(root))
    monkeypatch.delenv("MMEB_IMAGE_DIR", raising=False)
    return root


def _load(key: str):
    table = load_table("MMEB")
    return load_dataset_rows(table, table.dataset(key))


def _rewrite(root: Path, key: str, mutate) -> None:
    path = next((root / key).glob("test-*.parquet"))
    rows = pq.read_table(path).to_pylist()
    mutate(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_rows_keep_their_source_index_and_ground_truth_first(data_root):
    loaded = _load("MSCOCO_t2i")
    raw = pq.read_table(next((data_root / "MSCOCO_t2i").glob("*.parquet"))).to_pylist()
    assert [r.index for r in loaded.rows] == list(range(len(raw)))
    for row, record in zip(loaded.rows, raw, strict=True):
        assert row.candidates[0].image_path == record["tgt_img_path"][0]
        assert row.query.text == record["qry_text"]
    assert loaded.revision.startswith("local-")


def test_item_ids_collapse_repeated_items(data_root):
    for key in ("VOC2007", "OK-VQA", "MSCOCO_t2i"):
        loaded = _load(key)
        ids = {r.query.item_id for r in loaded.rows} | {c.item_id for r in loaded.rows for c in r.candidates}
        assert len(ids) == unique_items(data_root, key)


def test_missing_dataset_names_it_and_how_to_get_it(data_root):
    shutil.rmtree(data_root / "OK-VQA")
    with pytest.raises(DataError, match=r"'OK-VQA' not found.*huggingface-cli download TIGER-Lab/MMEB-eval"):
        _load("OK-VQA")


def test_wrong_layout_is_explained(tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    src = write_mmeb_fixture(tmp_path / "src", n_queries=3, n_candidates=3)
    shutil.copy(next((src / "VOC2007").glob("*.parquet")), flat / "test-00000-of-00001.parquet")
    monkeypatch.setenv("MMEB_DATA_DIR", str(flat))
    with pytest.raises(DataError, match="folder ABOVE the datasets"):
        _load("VOC2007")












def test_images_zip_is_extracted_on_first_use(data_root):
    images = data_root / "eval_images"
    with zipfile.ZipFile(data_root / "images.zip", "w") as zf:
        for path in images.rglob("*.png"):
            zf.write(path, arcname=str(Path("eval_images") / path.relative_to(images)))
    shutil.rmtree(images)
    loaded = _load("MSCOCO_t2i")
    assert (images / "MSCOCO_t2i" / "c0.png").is_file()
    assert loaded.image_file(loaded.rows[0].candidates[0]).is_file()




def test_revision_changes_when_the_mirror_changes(data_root):
    before = _load("VOC2007").revision
    _rewrite(data_root, "VOC2007", lambda rows: rows[0].update(tgt_text=["changed", *rows[0]["tgt_text"][1:]]))
    assert _load("VOC2007").revision != before


def test_bundled_mini_loads_without_any_environment(monkeypatch):
    monkeypatch.delenv("MMEB_DATA_DIR", raising=False)
    table = load_table("MMEB-mini")
    for spec in table.datasets:
        loaded = load_dataset_rows(table, spec)
        assert len(loaded.rows) == spec.num_queries
        assert all(len(r.candidates) == spec.num_candidates for r in loaded.rows)
