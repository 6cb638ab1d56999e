"""Acceptance: submit the README's default run, open the generated page in headless Chromium, find the new row and
the baselines, and sort by clicking column headers. A hostile baseline name is shown as text, never run."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.leaderboard.browser import CHROMIUM, Chromium
from tests.leaderboard.conftest import BASELINES, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run scripts/install_chromium.sh"),
]
ROWS = "Array.from(document.querySelectorAll('{table} tbody tr'))"
EVIL = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def on_board_baseline_ids() -> set[str]:
    ids = set()
    for path in BASELINES.glob("*.json"):
        data = json.loads(path.read_text())
        ids |= {f"{data['source']['id']}/{e['id']}" for e in data.get("entries", []) if e["on_board"]}
    return ids


def column_values(browser: Chromium, table: str, key: str) -> list[float | None]:
    index = browser.evaluate(
        f"Array.from(document.querySelectorAll('{table} thead th')).findIndex(th => th.dataset.key === '{key}')"
    )
    raw = browser.evaluate(ROWS.format(table=table) + f".map(r => r.cells[{index}].getAttribute('data-value'))")
    return [float(v) if v else None for v in raw]


def is_sorted(values: list[float | None], descending: bool) -> bool:
    present = [v for v in values if v is not None]
    blanks_last = values[: len(present)] == present
    return blanks_last and present == sorted(present, reverse=descending)


def test_default_run_row_baselines_and_sorting_in_chromium(demo_results, lb_dir, tmp_path, capsys):
    code, out, err = run_cli(capsys, "submit", demo_results, "--leaderboard-dir", lb_dir)
    assert code == 0, err
    assert "added mmeb-dllm/lavida-embed-tiny to MMEB-mini" in out
    [run] = {p.parent for p in demo_results.rglob("model_meta.json")}
    hits = [
        json.loads(p.read_text())["scores"]["test"][0]["mmeb_hit_at_1"]
        for p in run.glob("MMEB-mini-*.json")
    ]
    assert len(hits) == 10

    evil_board = tmp_path / "evil"
    shutil.copytree(BASELINES, evil_board / "baselines")
    path = evil_board / "baselines" / "vlm2vec_table6.json"
    data = json.loads(path.read_text())
    data["entries"][0]["name"] = EVIL
    data["entries"][0]["notes"] = [EVIL]
    path.write_text(json.dumps(data))
    assert run_cli(capsys, "build", "--leaderboard-dir", evil_board)[0] == 0

    with Chromium() as browser:
        browser.open((lb_dir / "site" / "index.html").resolve().as_uri())
        assert browser.evaluate("document.title") == "MMEB leaderboard (mmeb-dllm)"

        mini = browser.evaluate(
            ROWS.format(table="#board-MMEB-mini")
            + ".map(r => [r.className, r.cells[1].textContent, r.getBoundingClientRect().height])"
        )
        [(kind, name, height)] = mini
        assert kind == "submission" and name.startswith("mmeb-dllm/lavida-embed-tiny") and height > 0
        [overall] = column_values(browser, "#board-MMEB-mini", "Overall")
        assert overall == pytest.approx(100 * sum(hits) / len(hits), abs=1e-3)

        before = browser.evaluate(ROWS.format(table="#board-MMEB") + ".map(r => r.dataset.id)")
        assert set(before) == on_board_baseline_ids()
        assert column_values(browser, "#board-MMEB", "rank") == sorted(column_values(browser, "#board-MMEB", "rank"))

        browser.click('#board-MMEB th[data-key="VQA"]')
        after = browser.evaluate(ROWS.format(table="#board-MMEB") + ".map(r => r.dataset.id)")
        assert after != before and sorted(after) == sorted(before)
        assert is_sorted(column_values(browser, "#board-MMEB", "VQA"), descending=True)
        browser.click('#board-MMEB th[data-key="VQA"]')
        assert is_sorted(column_values(browser, "#board-MMEB", "VQA"), descending=False)
        browser.click('#board-MMEB th[data-key="size"]')
        assert is_sorted(column_values(browser, "#board-MMEB", "size"), descending=True)

        browser.open((evil_board / "site" / "index.html").resolve().as_uri())
        names = browser.evaluate(ROWS.format(table="#board-MMEB") + ".map(r => r.cells[1].textContent)")
        assert any(n.startswith(EVIL) for n in names)
        assert browser.evaluate("typeof window.pwned") == "undefined"
        assert browser.evaluate("document.querySelectorAll('script').length") == 1
        assert browser.evaluate("document.querySelectorAll('#board-MMEB img').length") == 0
