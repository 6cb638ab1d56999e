"""Generated leaderboard outputs: a markdown table, a static self-contained HTML page and a bar-chart PNG.

Every string that comes from a submission or a data file is escaped (HTML: :func:`html.escape` with quotes;
markdown: HTML-escaped plus markdown punctuation). The page carries a Content-Security-Policy that allows only its
own inline script (by hash), inline styles and the embedded chart. Outputs depend only on the rows, so building
twice gives identical bytes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re

from mmeb_dllm.benchmark.table import load_table
from mmeb_dllm.leaderboard.schema import AGGREGATE_KEYS, BOARDS, Gap, Row
from mmeb_dllm.leaderboard.store import board_rows

COLUMNS = (
    ("rank", "Rank", "num"),
    ("name", "Model", "text"),
    ("size", "Size (B)", "num"),
    ("architecture", "Type", "text"),
    ("source", "Source", "text"),
    ("status", "Status", "text"),
    ("date", "Date", "text"),
    ("recipe", "Recipe", "text"),
    *((key, key, "num") for key in AGGREGATE_KEYS),
)
COLOURS = {"autoregressive": "#4C72B0", "diffusion": "#DD8452", "encoder": "#55A868", "unknown": "#8C8C8C"}

SORT_SCRIPT = """
(function () {
  function cellKey(row, index, type) {
    var cell = row.cells[index];
    var value = cell.getAttribute('data-value');
    if (value === null) { value = cell.textContent.trim(); }
    if (type === 'num') { return value === '' ? null : parseFloat(value); }
    return value === '' ? null : value.toLowerCase();
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, index) {
      th.addEventListener('click', function () {
        var type = th.getAttribute('data-type');
        var current = th.getAttribute('aria-sort');
        var dir;
        if (current === 'ascending') { dir = 'descending'; }
        else if (current === 'descending') { dir = 'ascending'; }
        else { dir = (type === 'num' && th.getAttribute('data-key') !== 'rank') ? 'descending' : 'ascending'; }
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir);
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var sign = dir === 'ascending' ? 1 : -1;
        rows.sort(function (r1, r2) {
          var k1 = cellKey(r1, index, type), k2 = cellKey(r2, index, type);
          if (k1 === null && k2 === null) { return r1.getAttribute('data-order') - r2.getAttribute('data-order'); }
          if (k1 === null) { return 1; }
          if (k2 === null) { return -1; }
          var c = type === 'num' ? k1 - k2 : k1.localeCompare(k2);
          return c !== 0 ? sign * c : r1.getAttribute('data-order') - r2.getAttribute('data-order');
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.45em; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td:nth-child(2) { min-width: 12em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.submission { background: #fff6e0; font-weight: 600; }
.badge { font-size: 0.8em; font-weight: normal; color: #a33; margin-left: 0.3em; }
.muted { color: #666; font-size: 0.85em; }
img.chart { max-width: 100%; }
"""


def esc(text: object) -> str:
    """HTML-escape any value (quotes included)."""
    return html.escape("" if text is None else str(text), quote=True)


def md_escape(text: object) -> str:
    """Escape a value for a markdown table cell: HTML-escaped, markdown punctuation and pipes backslashed."""
    value = html.escape("" if text is None else str(text), quote=False)
    value = re.sub(r"([\\`*_\[\]|#!{}~])", r"\\\1", value)
    return " ".join(value.split())


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def size_text(size: float | None) -> str:
    return "–" if size is None else f"{size:.3g}"


def _row_flags(row: Row, total: int) -> list[str]:
    flags = []
    if row.partial:
        flags.append(f"partial {row.n_datasets}/{total}")
    if row.below_chance:
        flags.append(f"≤2× chance on {len(row.below_chance)}")
    if row.notes:
        flags.append("⚠ see notes")
    return flags


def _cells(row: Row) -> list[tuple[str, str, str]]:
    """(data-value, display, css class) per column of :data:`COLUMNS`."""
    out = [
        ("" if row.rank is None else str(row.rank), "–" if row.rank is None else str(row.rank), "num"),
        (row.name, row.name, ""),
        ("" if row.size_b is None else repr(float(row.size_b)), size_text(row.size_b), "num"),
        (row.architecture, row.architecture, ""),
        (row.source, row.source, ""),
        (row.status, row.status, ""),
        (row.date, row.date or "–", ""),
        (row.recipe, row.recipe or "–", ""),
    ]
    for key in AGGREGATE_KEYS:
        value = row.aggregates.get(key)
        out.append(("" if value is None else f"{100 * value:.4f}", pct(value), "num"))
    return out


def _board_table(rows: list[Row], benchmark: str) -> str:
    total = len(load_table(benchmark).datasets)
    head = "".join(
        f'<th data-key="{esc(key)}" data-type="{esc(kind)}" scope="col">{esc(label)}</th>'
        for key, label, kind in COLUMNS
    )
    body = []
    for order, row in enumerate(rows):
        tds = []
        for index, (value, display, css) in enumerate(_cells(row)):
            text = esc(display)
            if index == 1:
                flags = "".join(f'<span class="badge">{esc(f)}</span>' for f in _row_flags(row, total))
                title = esc(" | ".join(row.notes)) if row.notes else ""
                text = f'<span title="{title}">{text}</span>{flags}' if title else f"{text}{flags}"
            cls = f' class="{css}"' if css else ""
            tds.append(f'<td data-value="{esc(value)}"{cls}>{text}</td>')
        body.append(
            f'<tr class="{esc(row.kind)}" data-id="{esc(row.id)}" data-order="{order}">{"".join(tds)}</tr>'
        )
    return (
        f'<table class="sortable board" id="board-{esc(benchmark)}">'
        f"<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def _dataset_table(rows: list[Row], benchmark: str) -> str:
    table = load_table(benchmark)
    with_scores = [r for r in rows if r.scores]
    if not with_scores:
        return ""
    head = '<th data-type="text" scope="col">Model</th>' + "".join(
        f'<th data-type="num" scope="col" title="{esc(d.meta_task)} {esc(d.split)}">{esc(d.key)}</th>'
        for d in table.datasets
    )
    body = []
    for order, row in enumerate(with_scores):
        cells = [f'<td data-value="{esc(row.name)}">{esc(row.name)}</td>']
        for d in table.datasets:
            value = row.scores.get(d.key)
            cells.append(f'<td class="num" data-value="{"" if value is None else f"{100 * value:.4f}"}">'
                         f"{pct(value)}</td>")
        body.append(f'<tr class="{esc(row.kind)}" data-id="{esc(row.id)}" data-order="{order}">{"".join(cells)}</tr>')
    return (
        f"<details><summary>Per-dataset P@1 ({len(with_scores)} rows with per-dataset scores)</summary>"
        f'<table class="sortable" id="datasets-{esc(benchmark)}"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(body) + "\n</tbody></table></details>"
    )


def _others_table(rows: list[Row]) -> str:
    others = [r for r in rows if not r.on_board]
    if not others:
        return ""
    keys = ("name", "source", "status", *AGGREGATE_KEYS, "same_as")
    head = "".join(
        f'<th data-type="{"num" if k in AGGREGATE_KEYS else "text"}" scope="col">{esc(k)}</th>' for k in keys
    )
    body = []
    for order, row in enumerate(others):
        cells = [f"<td>{esc(row.name)}</td>", f"<td>{esc(row.source)}</td>", f"<td>{esc(row.status)}</td>"]
        for key in AGGREGATE_KEYS:
            value = row.published_aggregates.get(key, row.aggregates.get(key))
            shown = "–" if value is None else format(round(100 * value, 4), "g")  # as printed
            cells.append(f'<td class="num" data-value="{"" if value is None else f"{100 * value:.4f}"}">'
                         f"{shown}</td>")
        cells.append(f"<td>{esc(row.same_as)}</td>")
        body.append(f'<tr class="{esc(row.kind)}" data-id="{esc(row.id)}" data-order="{order}">{"".join(cells)}</tr>')
    return (
        "<h2>Other registered numbers (not ranked)</h2>"
        '<p class="muted">Ablations, unverified numbers and copies of rows shown on the board with per-dataset '
        "scores (same_as). Published aggregates, as printed.</p>"
        f'<table class="sortable" id="others"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(body) + "\n</tbody></table>"
    )


def _gaps_html(gaps: list[Gap]) -> str:
    if not gaps:
        return ""
    items = "".join(
        f"<tr><td>{esc(g.comparison)}</td><td>{esc(g.meta_task)}</td>"
        f"<td class=\"num\">{esc(('+' if g.relation == '=' else '> ') + format(g.value, 'g'))}</td></tr>"
        for g in gaps
    )
    return (
        "<h2>Seed paper: autoregressive minus diffusion</h2>"
        '<p class="muted">arXiv 2602.06056, abstract: the only published figures (percentage points). '
        "Use <code>mmeb-dllm leaderboard compare AR DIFFUSION</code> for the same framing on any two rows.</p>"
        f"<table><thead><tr><th>comparison</th><th>meta-task</th><th>gap</th></tr></thead><tbody>{items}"
        "</tbody></table>"
    )


def _notes_html(rows: list[Row]) -> str:
    noted = [r for r in rows if r.notes and r.on_board]
    if not noted:
        return ""
    items = "".join(f"<li><b>{esc(r.name)}</b>: {esc(' '.join(r.notes))}</li>" for r in noted)
    return f"<h2>Notes and conflicts between sources</h2><ul>{items}</ul>"


def _sources_html(sources: list[dict]) -> str:
    items = []
    for source in sources:
        url = str(source.get("url", ""))
        link = f' <a href="{esc(url)}" rel="noopener noreferrer">{esc(url)}</a>' if url.startswith("https://") else ""
        notes = " ".join(str(n) for n in source.get("notes", []))
        items.append(
            f"<li><b>{esc(source.get('label', source.get('id', '')))}</b> ({esc(source.get('status', ''))}): "
            f"{esc(source.get('citation', ''))}.{link}<br><span class=\"muted\">{esc(notes)}</span></li>"
        )
    return "<h2>Sources</h2><ul>" + "".join(items) + "</ul>"


def boards(rows: list[Row]) -> dict[str, list[Row]]:
    """Board name -> ranked rows, for the boards that have any row."""
    out = {}
    for name in BOARDS:
        ranked = board_rows(rows, name)
        if ranked:
            out[name] = ranked
    return out


def render_html(rows: list[Row], gaps: list[Gap], sources: list[dict], chart_png: bytes | None = None) -> str:
    """The whole static page (UTF-8 text)."""
    script = SORT_SCRIPT
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>MMEB leaderboard (mmeb-dllm)</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>MMEB leaderboard</h1>",
        '<p class="muted">P@1 × 100 (hit@1). CLS, VQA, RET, VG, IND and OOD are unweighted means over their datasets; '
        "Overall is the flat mean over all datasets. Rows with per-dataset scores show aggregates recomputed from "
        "them; rows without show the published aggregates. Click a column header to sort. Submitted rows are "
        "highlighted.</p>",
    ]
    for name, ranked in boards(rows).items():
        n = len(load_table(name).datasets)
        parts.append(f'<section id="section-{esc(name)}"><h2>{esc(name)} ({n} datasets)</h2>')
        parts.append(_board_table(ranked, name))
        parts.append(_dataset_table(ranked, name))
        parts.append("</section>")
    if chart_png:
        data = base64.b64encode(chart_png).decode()
        parts.append(f'<h2>Overall</h2><img class="chart" alt="bar chart of overall scores" '
                     f'src="data:image/png;base64,{data}">')
    parts += [_gaps_html(gaps), _notes_html(rows), _others_table(rows), _sources_html(sources)]
    parts.append(f"<script>{script}</script></body></html>")
    return "\n".join(p for p in parts if p) + "\n"


def render_markdown(rows: list[Row], gaps: list[Gap]) -> str:
    """Markdown tables, one per board, plus the seed-paper gaps and the notes."""
    out = [
        "# MMEB leaderboard",
        "",
        "P@1 × 100. Meta-task, IND and OOD are unweighted means; Overall is the flat mean over all datasets. Rows "
        "with per-dataset scores show recomputed aggregates. Generated by `mmeb-dllm leaderboard build`; do not "
        "edit.",
    ]
    for name, ranked in boards(rows).items():
        total = len(load_table(name).datasets)
        out += ["", f"## {name} ({total} datasets)", ""]
        out.append("| " + " | ".join(label for _, label, _ in COLUMNS) + " |")
        out.append("|" + "|".join("---:" if kind == "num" else "---" for _, _, kind in COLUMNS) + "|")
        for row in ranked:
            cells = [display for _, display, _ in _cells(row)]
            text = [cells[0]] + [md_escape(c) for c in cells[1:]]
            if row.kind == "submission":
                text[1] = f"**{text[1]}**"
            flags = _row_flags(row, total)
            if flags:
                text[1] += f" ({md_escape('; '.join(flags))})"
            out.append("| " + " | ".join(text) + " |")
    if gaps:
        out += ["", "## Seed paper (arXiv 2602.06056): autoregressive minus diffusion", ""]
        out += ["| comparison | meta-task | gap |", "|---|---|---:|"]
        for g in gaps:
            gap = ("+" if g.relation == "=" else "> ") + format(g.value, "g")
            out.append(f"| {md_escape(g.comparison)} | {md_escape(g.meta_task)} | {md_escape(gap)} |")
    noted = [r for r in rows if r.notes and r.on_board]
    if noted:
        out += ["", "## Notes", ""]
        out += [f"- **{md_escape(r.name)}**: {md_escape(' '.join(r.notes))}" for r in noted]
    return "\n".join(out) + "\n"


def _label(row: Row) -> str:
    return row.name.replace("$", r"\$")


def render_chart(rows: list[Row], top: int = 30) -> bytes | None:
    """PNG bytes: overall per board (best ``top`` rows plus every submission), coloured by model type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels: list[tuple[str, list[Row]]] = []
    for name, ranked in boards(rows).items():
        scored = [r for r in ranked if r.overall is not None]
        chosen = [r for i, r in enumerate(scored) if i < top or r.kind == "submission"]
        if chosen:
            panels.append((name, chosen))
    if not panels:
        return None
    heights = [max(len(chosen), 2) for _, chosen in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 1.2 + 0.24 * sum(heights) + 0.6 * len(panels)),
        gridspec_kw={"height_ratios": heights}, squeeze=False,
    )
    for ax, (name, chosen) in zip(axes[:, 0], panels, strict=True):
        values = [100 * r.overall for r in chosen]  # type: ignore[operator]
        positions = list(range(len(chosen)))[::-1]
        bars = ax.barh(positions, values, color=[COLOURS.get(r.architecture, COLOURS["unknown"]) for r in chosen])
        for bar, row in zip(bars, chosen, strict=True):
            if row.kind == "submission":
                bar.set_edgecolor("black")
                bar.set_linewidth(1.5)
                bar.set_hatch("//")
        ax.set_yticks(positions, [_label(r) for r in chosen], fontsize=7)
        ax.set_xlim(0, 100)
        ax.set_xlabel("Overall P@1 × 100", fontsize=8)
        ax.set_title(f"{name}: overall (top {min(top, len(chosen))} and submissions)", fontsize=9)
        for pos, value in zip(positions, values, strict=True):
            ax.text(value + 0.5, pos, f"{value:.1f}", va="center", fontsize=6)
    legend = [Patch(color=c, label=k) for k, c in COLOURS.items()]
    legend.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="submission"))
    axes[0, 0].legend(handles=legend, fontsize=7, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def render_all(rows: list[Row], gaps: list[Gap], sources: list[dict]) -> dict[str, bytes]:
    """File name (under ``site/``) -> bytes of every generated output."""
    chart = render_chart(rows)
    outputs = {
        "index.html": render_html(rows, gaps, sources, chart).encode("utf-8"),
        "leaderboard.md": render_markdown(rows, gaps).encode("utf-8"),
    }
    if chart is not None:
        outputs["chart.png"] = chart
    return outputs
