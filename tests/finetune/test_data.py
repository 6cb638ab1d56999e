"""Training data: the bundled MMEB-mini split, a local MMEB-train mirror, seeded sampling, batch order, bad rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmeb_dllm.errors import DataError
from mmeb_dllm.finetune.data import TrainData, load_train_data, resolve_train_names, sample_rows

MINI_SETS = ["Digits", "Shapes", "ShapeColorVQA", "Scenes_t2i", "Scenes_i2t", "ShapeGrounding"]


def _write_mirror(root: Path, name: str, rows: list[dict], split: str = "original") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}-00000-of-00001.parquet")
    return folder


def _image(root: Path, rel: str, colour: tuple[int, int, int] = (200, 10, 10)) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return rel


def _rows(root: Path, count: int, *, negatives: bool = False) -> list[dict]:
    rows = []
    for i in range(count):
        row = {
            "qry": "<|image_1|>\nRepresent the given image for classification\n",
            "qry_image_path": _image(root, f"images/Toy/{i}.png", (i * 20 % 256, 0, 0)),
            "pos_text": f"label {i % 3}",
            "pos_image_path": "",
        }
        if negatives:
            row |= {"neg_text": f"label {(i + 1) % 3}", "neg_image_path": ""}
        rows.append(row)
    return rows


def test_mini_split_reads_every_train_set_with_images_and_hard_negatives():
    data = load_train_data(["MMEB-mini"], split="original", samples_per_task=50_000, seed=0)
    assert [s.name for s in data.sets] == [f"MMEB-mini/{k}" for k in MINI_SETS]
    by_name = {s.name: s for s in data.sets}
    assert len(by_name["MMEB-mini/Digits"].pairs) == 800  # tasks/README.md: 80 per class
    assert len(by_name["MMEB-mini/ShapeGrounding"].pairs) == 210
    digits = by_name["MMEB-mini/Digits"].pairs[0]
    assert digits.query.image is not None and digits.query.image.is_file()
    assert digits.positive.text == "zero" and digits.positive.image is None
    assert all(len(p.negatives) == 1 for p in by_name["MMEB-mini/ShapeColorVQA"].pairs)
    assert all(not p.negatives for p in by_name["MMEB-mini/Digits"].pairs)
    t2i = by_name["MMEB-mini/Scenes_t2i"].pairs[0]
    assert t2i.query.image is None and t2i.positive.image is not None
    no_negatives = load_train_data(["MMEB-mini/ShapeColorVQA"], split="original", samples_per_task=10, seed=0,
                                   hard_negatives=False)
    assert all(not p.negatives for p in no_negatives.pairs)


def test_names_expand_and_map_eval_keys_to_train_configs():
    assert [r.name for r in resolve_train_names(["MMEB-mini/Shapes", "MMEB-mini"])][:2] == [
        "MMEB-mini/Shapes", "MMEB-mini/Digits"]
    assert [r.config for r in resolve_train_names(["ImageNet-1K"])] == ["ImageNet_1K"]
    assert len(resolve_train_names(["MMEB"])) == 20
    with pytest.raises(DataError, match="OOD"):
        resolve_train_names(["MMEB-mini/Photos"])


def test_seeded_sampling_per_task():
    first = sample_rows(200, 50, seed=1, dataset="A")
    assert first == sample_rows(200, 50, seed=1, dataset="A") == sorted(set(first))
    assert len(first) == 50
    assert first != sample_rows(200, 50, seed=2, dataset="A")
    assert first != sample_rows(200, 50, seed=1, dataset="B")
    assert sample_rows(30, 50, seed=1, dataset="A") == list(range(30))
    data = load_train_data(["MMEB-mini"], split="original", samples_per_task=7, seed=3)
    assert [len(s.pairs) for s in data.sets] == [7] * len(MINI_SETS)
    assert all(s.rows_available >= 200 for s in data.sets)
    again = load_train_data(["MMEB-mini"], split="original", samples_per_task=7, seed=3)
    assert [p.row for p in data.pairs] == [p.row for p in again.pairs]


def test_batches_are_a_function_of_seed_and_step_and_cover_each_epoch():
    data = load_train_data(["MMEB-mini/Digits"], split="original", samples_per_task=10, seed=5)
    epoch = [p.row for step in range(5) for p in data.batch(step, 2)]
    assert sorted(epoch) == sorted(p.row for p in data.pairs)
    fresh = TrainData(data.sets, seed=5)
    assert [p.row for p in fresh.batch(3, 4)] == [p.row for p in data.batch(3, 4)]
    assert [p.row for p in TrainData(data.sets, seed=6).batch(0, 10)] != [p.row for p in data.batch(0, 10)]
    assert data.position(3, 4) == (1, 2)


def test_local_mirror_layout_and_diverse_split(tmp_path, monkeypatch):
    _write_mirror(tmp_path, "Toy", _rows(tmp_path, 5, negatives=True))
    _write_mirror(tmp_path, "Toy", _rows(tmp_path, 3), split="diverse_instruction")
    monkeypatch.setenv("MMEB_TRAIN_DIR", str(tmp_path))
    data = load_train_data(["Toy"], split="original", samples_per_task=100, seed=0)
    assert len(data) == 5 and data.sets[0].source.startswith("local mirror")
    assert data.pairs[2].query.image == (tmp_path / "images/Toy/2.png").resolve()
    assert data.pairs[2].negatives[0].text == "label 0"
    assert data.sets[0].revision.startswith("local-")
    assert len(load_train_data(["Toy"], split="diverse_instruction", samples_per_task=100, seed=0)) == 3
    with pytest.raises(DataError, match=r"Missing.*original-\*\.parquet|expected .*Missing/original"):
        load_train_data(["Missing"], split="original", samples_per_task=100, seed=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"qry_image_path": "images/Toy/absent.png"}, r"row 1 .*image file .*absent\.png is missing"),
        ({"qry": "", "qry_image_path": ""}, r"row 1 .*query .* neither text nor image"),
        ({"qry_image_path": "../outside.png"}, r"row 1 .*escapes the image root"),
    ],
)
def test_bad_rows_name_dataset_row_and_file(tmp_path, monkeypatch, change, message):
    rows = _rows(tmp_path, 3)
    rows[1] = {**rows[1], **change}
    folder = _write_mirror(tmp_path, "Toy", rows)
    monkeypatch.setenv("MMEB_TRAIN_DIR", str(tmp_path))
    with pytest.raises(DataError, match=message) as error:
        load_train_data(["Toy"], split="original", samples_per_task=100, seed=0)
    assert "training data Toy" in str(error.value) and str(folder) in str(error.value)


def test_wrongly_typed_column_names_the_row(tmp_path, monkeypatch):
    _write_mirror(tmp_path, "Toy", [{**row, "pos_text": 7} for row in _rows(tmp_path, 2)])
    monkeypatch.setenv("MMEB_TRAIN_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"training data Toy, row 0 .*'pos_text' must be a string, got int"):
        load_train_data(["Toy"], split="original", samples_per_task=100, seed=0)


def test_missing_columns_and_missing_split(tmp_path, monkeypatch):
    _write_mirror(tmp_path, "Toy", [{"qry": "a", "pos_text": "b"}])
    monkeypatch.setenv("MMEB_TRAIN_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"Toy.*lacks column\(s\) \['qry_image_path', 'pos_image_path'\]"):
        load_train_data(["Toy"], split="original", samples_per_task=100, seed=0)
    with pytest.raises(DataError, match="diverse_instruction"):
        load_train_data(["MMEB-mini/Digits"], split="diverse_instruction", samples_per_task=100, seed=0)


def test_homogeneous_batches_come_from_one_dataset_each():
    data = load_train_data(["MMEB-mini/Digits", "MMEB-mini/Shapes"], split="original", samples_per_task=12,
                           seed=1, homogeneous=True)
    batches = [data.batch(step, 4) for step in range(12)]
    assert all(len({p.dataset for p in batch}) == 1 for batch in batches)
    first_epoch = [(p.dataset, p.row) for batch in batches[:6] for p in batch]
    assert len(set(first_epoch)) == 24 and {d for d, _ in first_epoch} == {"MMEB-mini/Digits", "MMEB-mini/Shapes"}
    assert data.position(7, 4) == (1, 1)
    again = load_train_data(["MMEB-mini/Digits", "MMEB-mini/Shapes"], split="original", samples_per_task=12,
                            seed=1, homogeneous=True)
    assert [p.row for p in again.batch(9, 4)] == [p.row for p in data.batch(9, 4)]
