"""Writes small datasets in the real MMEB-eval on-disk layout (parquet + eval_images/) for tests.

Three real MMEB keys so the registered ``MMEB-<key>`` tasks read them through ``$MMEB_DATA_DIR``: a classification
set (image -> label), a VQA set (image+question -> answer) and a text-to-image retrieval set (caption -> image
candidates). Candidate lists repeat items across queries, like real MMEB.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

FIXTURE_DATASETS = ("VOC2007", "OK-VQA", "MSCOCO_t2i")
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "cyan", "pink", "brown", "grey"]
RGB = {
    "red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40),
    "purple": (140, 40, 170), "orange": (250, 140, 20), "white": (245, 245, 245), "black": (10, 10, 10),
    "cyan": (40, 220, 220), "pink": (250, 150, 190), "brown": (120, 70, 30), "grey": (128, 128, 128),
}


def _image(path: Path, colour: str, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (rng.randint(24, 60), rng.randint(24, 60)), RGB[colour])
    draw = ImageDraw.Draw(img)
    x, y = rng.randint(0, 10), rng.randint(0, 10)
    draw.rectangle([x, y, x + 10, y + 8], fill=RGB[rng.choice(COLOURS)])
    img.save(path)


def _write(root: Path, key: str, rows: list[dict]) -> None:
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [("qry_text", pa.string()), ("qry_img_path", pa.string()),
         ("tgt_text", pa.list_(pa.string())), ("tgt_img_path", pa.list_(pa.string()))]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "test-00000-of-00001.parquet")


def write_mmeb_fixture(root: Path, *, n_queries: int = 24, n_candidates: int = 12, seed: int = 0) -> Path:
    """Create ``root/<Dataset>/test-00000-of-00001.parquet`` and ``root/eval_images/`` and return ``root``."""
    rng = random.Random(seed)
    images = root / "eval_images"
    labels = COLOURS[:n_candidates]

    cls_rows = []
    for i in range(n_queries):
        colour = rng.choice(labels)
        rel = f"VOC2007/q{i}.png"
        _image(images / rel, colour, rng)
        others = [c for c in labels if c != colour]
        cls_rows.append({
            "qry_text": "<|image_1|>\nIdentify the object shown in the image.",
            "qry_img_path": rel, "tgt_text": [colour, *others], "tgt_img_path": [""] * len(labels),
        })
    _write(root, "VOC2007", cls_rows)

    answers = [f"{n} things" for n in range(2 * n_candidates)]
    vqa_rows = []
    for i in range(n_queries):
        colour = rng.choice(COLOURS)
        rel = f"OK-VQA/q{i}.png"
        _image(images / rel, colour, rng)
        cands = rng.sample(answers, n_candidates)
        vqa_rows.append({
            "qry_text": f"<|image_1|>\nRepresent the given image with the following question: What is {i}?",
            "qry_img_path": rel, "tgt_text": cands, "tgt_img_path": [""] * n_candidates,
        })
    _write(root, "OK-VQA", vqa_rows)

    pool = []
    for j in range(2 * n_candidates):
        rel = f"MSCOCO_t2i/c{j}.png"
        _image(images / rel, COLOURS[j % len(COLOURS)], rng)
        pool.append(rel)
    ret_rows = []
    for i in range(n_queries):
        chosen = rng.sample(pool, n_candidates)
        ret_rows.append({
            "qry_text": f"Find me an everyday image that matches the given caption: picture number {i}",
            "qry_img_path": "", "tgt_text": ["<|image_1|>\nRepresent the given image."] * n_candidates,
            "tgt_img_path": chosen,
        })
    _write(root, "MSCOCO_t2i", ret_rows)
    return root


def unique_items(root: Path, key: str) -> int:
    """Number of distinct (text, image file) items among queries and candidates of one fixture dataset."""
    table = pq.read_table(next((root / key).glob("test-*.parquet"))).to_pylist()
    items = set()
    for row in table:
        items.add((row["qry_text"], row["qry_img_path"]))
        items.update(zip(row["tgt_text"], row["tgt_img_path"], strict=True))
    return len(items)
