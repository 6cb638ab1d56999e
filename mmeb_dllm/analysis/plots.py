"""Figures of the analyses (matplotlib, headless): a t-SNE of query-target pairs and line plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tsne_pairs_plot(q: np.ndarray, t: np.ndarray, out: Path, *, title: str, seed: int = 0) -> Path:
    """t-SNE of queries (circles) and targets (triangles), a dashed line joining each matched pair."""
    from sklearn.manifold import TSNE

    points = np.concatenate([q, t])
    perplexity = float(max(2, min(30, (len(points) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    qxy, txy = xy[: len(q)], xy[len(q) :]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    for a, b in zip(qxy, txy, strict=True):
        ax.plot([a[0], b[0]], [a[1], b[1]], linestyle="--", linewidth=0.6, color="0.6", zorder=1)
    ax.scatter(qxy[:, 0], qxy[:, 1], marker="o", s=28, label="queries", zorder=2)
    ax.scatter(txy[:, 0], txy[:, 1], marker="^", s=34, label="targets", zorder=2)
    ax.set_title(title)
    ax.legend(loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    reference: float | None = None,
    log_x: bool = False,
) -> Path:
    """One line per series name (x values, y values); an optional horizontal reference line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", label=name)
    if reference is not None:
        ax.axhline(reference, linestyle=":", color="black", label=f"reference {reference:.1f}")
    if log_x:  # ticks at the data's x values, written as plain numbers (not 2×10¹)
        ax.set_xscale("log")
        ticks = sorted({float(x) for xs, _ in series.values() for x in xs if float(x) > 0})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
