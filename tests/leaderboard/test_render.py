"""Generated outputs: every user string escaped, the page's script allowed by its own CSP hash, byte-identical
rebuilds, and all on-board baselines present."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re

from mmeb_dllm.leaderboard.render import SORT_SCRIPT, md_escape, render_all, render_html, render_markdown
from mmeb_dllm.leaderboard.schema import Row
from mmeb_dllm.leaderboard.store import Leaderboard
from tests.leaderboard.conftest import BASELINES, run_cli

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)> | *bold* `code`'


def evil_row() -> Row:
    return Row(
        id="evil/" + EVIL, name=EVIL, benchmark="MMEB", kind="submission", architecture="unknown", size_b=1.0,
        source=EVIL, status="self-reported", date=EVIL, recipe=EVIL, aggregates={"Overall": 0.5, "CLS": 0.4},
        notes=[EVIL],
    )


def test_user_strings_are_escaped_in_html_and_markdown():
    page = render_html([evil_row()], [], [{"label": EVIL, "citation": EVIL, "url": "javascript:alert(1)"}])
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "href" not in page  # the non-https source URL is not linked
    assert page.count("<script>") == 1  # only the page's own sorting script
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    markdown = render_markdown([evil_row()], [])
    assert "<script" not in markdown and "<img" not in markdown
    [line] = [ln for ln in markdown.splitlines() if "alert" in ln and ln.startswith("| 1 ")]
    assert len(re.findall(r"(?<!\\)\|", line)) == 16  # 15 columns: the pipes inside names are escaped


def test_content_security_policy_allows_exactly_the_sorting_script():
    page = html.unescape(render_html([evil_row()], [], []))
    digest = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page and f"<script>{SORT_SCRIPT}</script>" in page
    assert "default-src 'none'" in page


def test_build_is_deterministic_and_shows_every_on_board_baseline(lb_dir, capsys):
    assert run_cli(capsys, "build", "--leaderboard-dir", lb_dir)[0] == 0
    first = {p.name: p.read_bytes() for p in (lb_dir / "site").iterdir()}
    assert set(first) == {"index.html", "leaderboard.md", "chart.png"}
    assert first["chart.png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert run_cli(capsys, "build", "--leaderboard-dir", lb_dir)[0] == 0
    assert {p.name: p.read_bytes() for p in (lb_dir / "site").iterdir()} == first
    page = first["index.html"].decode()
    markdown = first["leaderboard.md"].decode()
    for path in BASELINES.glob("*.json"):
        data = json.loads(path.read_text())
        for entry in data.get("entries", []):
            row_id = f"{data['source']['id']}/{entry['id']}"
            assert f'data-id="{row_id}"' in page
            if entry["on_board"]:
                assert f"| {md_escape(entry['name'])}" in markdown


def test_render_all_matches_what_build_writes(lb_dir, capsys):
    assert run_cli(capsys, "build", "--leaderboard-dir", lb_dir)[0] == 0
    rows, gaps, sources = Leaderboard(lb_dir).rows()
    for name, data in render_all(rows, gaps, sources).items():
        assert (lb_dir / "site" / name).read_bytes() == data
