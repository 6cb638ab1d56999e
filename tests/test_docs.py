"""Documentation that is generated from data stays in sync with it."""

from pathlib import Path

from mmeb_dllm.zoo import ZOO_TABLE_END, ZOO_TABLE_START, load_zoo, zoo_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_models_doc_table_matches_the_zoo():
    text = (DOCS / "models.md").read_text(encoding="utf-8")
    start, end = text.index(ZOO_TABLE_START), text.index(ZOO_TABLE_END) + len(ZOO_TABLE_END)
    assert text[start:end] == zoo_markdown(), "run `mmeb-dllm models --markdown` and paste it into docs/models.md"
    for spec in load_zoo().values():
        assert f"`{spec.full_name}`" in text
