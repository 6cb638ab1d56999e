"""Every number registered in ``leaderboard/baselines`` equals the one printed in the fact sheet baselines.md, and
every number of the fact sheet's MMEB tables is registered.

The markdown tables are parsed here, independently of the package. Fact sheet: ``$MMEB_REFERENCE_DIR/baselines.md``
(default ``<repo>/../shared/reference``); the tests skip when it is absent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from mmeb_dllm.benchmark.table import load_table
from tests.leaderboard.conftest import BASELINES, REPO

REFERENCE = Path(os.environ.get("MMEB_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
FACT_SHEET = REFERENCE / "baselines.md"
pytestmark = pytest.mark.skipif(not FACT_SHEET.is_file(), reason=f"fact sheet {FACT_SHEET} not available")

DATASET_LABELS = {"Country-211": "Country211", "MSCOCO (VG)": "MSCOCO"}  # the paper's spellings
NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Tables whose every label (row, or column for the per-dataset tables) must be registered: (section, index).
COVERED_TABLES = (("2", 0), ("3", 0), ("4", 0), ("4", 1), ("4", 2), ("5", 0), ("6", 0))


def parse_fact_sheet(text: str) -> tuple[dict[tuple[str, int], dict], dict[str, str]]:
    """Markdown tables keyed by (section number, index within the section), and each section's text."""
    tables: dict[tuple[str, int], dict] = {}
    sections: dict[str, str] = {}
    section, index, current = "", 0, None
    for line in text.splitlines():
        heading = re.match(r"^## (\d+)\.", line)
        if heading:
            section, index = heading.group(1), 0
        sections[section] = sections.get(section, "") + line + "\n"
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = {"header": cells, "rows": []}
            elif not set("".join(cells)) <= set("-: "):
                current["rows"].append(cells)
        elif current is not None:
            tables[(section, index)] = current
            index += 1
            current = None
    return tables, sections


def metric_key(label: str) -> str | None:
    """'CLS (10)', '*All CLS*', '*All (36)*', 'Overall (36)', 'ImageNet-1K', ... -> our key, None if not a score."""
    name = re.sub(r"\s*\(\d+\)$", "", label.strip("*").strip())
    name = name.removeprefix("All ").strip()
    if name in ("All", "Overall"):
        return "Overall"
    if name in ("CLS", "VQA", "RET", "VG", "IND", "OOD"):
        return name
    name = DATASET_LABELS.get(label, label)
    return name if name in {d.key for d in load_table("MMEB").datasets} else None


def first_number(cell: str) -> float | None:
    if cell.strip() in {"–", "-", ""}:
        return None
    found = NUMBER.search(cell.replace("**", ""))
    return float(found.group()) if found else None


def cells_of(table: dict, label: str) -> tuple[dict[str, str], str]:
    """(score key -> cell text, the whole row/column text) of one model; models are columns or rows."""
    if label in table["header"]:
        col = table["header"].index(label)
        cells = {row[0]: row[col] for row in table["rows"]}
        return cells, " ".join(cells.values())
    [row] = [r for r in table["rows"] if r[0] == label]
    return dict(zip(table["header"][1:], row[1:], strict=True)), " ".join(row)


@pytest.fixture(scope="module")
def fact_sheet() -> tuple[dict, dict]:
    return parse_fact_sheet(FACT_SHEET.read_text(encoding="utf-8"))


def baseline_files() -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(BASELINES.glob("*.json"))]


def entries() -> list[tuple[str, dict]]:
    return [
        (f"{data['source']['id']}/{entry['id']}", entry)
        for data in baseline_files() if data["format"] == "mmeb-dllm-baselines/1"
        for entry in data["entries"]
    ]


@pytest.mark.parametrize(("entry_id", "entry"), entries(), ids=[e[0] for e in entries()])
def test_every_registered_number_is_the_published_one(fact_sheet, entry_id, entry):
    tables, sections = fact_sheet
    where = entry["md"]
    registered = {**entry.get("scores", {}), **entry.get("aggregates", {})}
    if "text" in where:  # a sentence, not a table: "MetaEmbed-7B 76.6"
        [line] = [ln for ln in sections[where["section"]].splitlines() if where["text"] in ln]
        for value in registered.values():
            assert re.search(rf"{re.escape(where['label'])} {value:g}\b", line), (entry_id, value)
        row_text = line
    else:
        cells, row_text = cells_of(tables[(where["section"], where["table"])], where["label"])
        printed = {}
        disputed = {}
        for label, cell in cells.items():
            key, value = metric_key(label), first_number(cell)
            if key is None or value is None:
                continue
            (disputed if cell.startswith("(") else printed)[key] = value
        assert registered == printed, entry_id  # same keys (nothing missing, nothing extra) and same values
        assert entry.get("disputed", {}).get("values", {}) == disputed, entry_id
    numbers_in_row = {float(n) for n in NUMBER.findall(row_text)}
    for other in entry.get("alternates", []):
        for key, value in other["values"].items():
            assert value in numbers_in_row, (entry_id, other["source"], key, value)
    if entry.get("size_b") is not None:
        text = " ".join([where["label"], entry["name"], entry.get("recipe", ""), row_text])
        assert re.search(rf"(?<![\d.]){entry['size_b']:g}B", text), (entry_id, entry["size_b"])


def test_every_fact_sheet_table_row_is_registered(fact_sheet):
    tables, _ = fact_sheet
    registered = {(e["md"]["section"], e["md"].get("table"), e["md"]["label"]) for _, e in entries()}
    for section, index in COVERED_TABLES:
        table = tables[(section, index)]
        per_dataset = table["header"][0] == "Dataset"
        labels = table["header"][1:] if per_dataset else [row[0] for row in table["rows"]]
        for label in labels:
            assert (section, index, label) in registered, (section, index, label)


def test_seed_paper_gaps(fact_sheet):
    tables, _ = fact_sheet
    [annotations] = [d for d in baseline_files() if d["format"] == "mmeb-dllm-annotations/1"]
    table = tables[("1", 0)]
    assert {(g["diffusion_model"], g["meta_task"]) for g in annotations["gaps"]} == {
        (m, t) for m in ("LaViDa", "MMaDA") for t in ("CLS", "VQA", "RET")
    }
    for gap in annotations["gaps"]:
        cells, _ = cells_of(table, gap["md"]["label"])
        cell = cells[gap["md"]["column"]]
        assert first_number(cell) == gap["value"], gap
        assert (">" in cell) == (gap["relation"] == ">"), gap


def test_status_and_source_present():
    for data in baseline_files():
        source = data["source"]
        assert source["citation"] and source["status"] in {"published", "computed", "unverified"}
        for entry in data.get("entries", []):
            assert entry.get("status", source["status"]) in {"published", "computed", "unverified"}
