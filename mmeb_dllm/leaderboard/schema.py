"""Leaderboard data types, format identifiers and the rules every stored string must follow.

Three kinds of JSON live in a leaderboard folder (see docs/leaderboard.md):

- ``baselines/*.json`` (``mmeb-dllm-baselines/1``): published numbers in percent, one entry per model and source;
- ``baselines/*.json`` (``mmeb-dllm-annotations/1``): the seed paper's autoregressive-minus-diffusion gaps;
- ``submissions/<benchmark>/*.json`` (``mmeb-dllm-submission/1``): normalised, validated results in [0, 1] with a
  content hash.

:class:`Row` is what the renderers, the comparison and the exports read: one model on one board, scores as
fractions, aggregates recomputed from per-dataset scores whenever those exist.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from mmeb_dllm.errors import MmebDllmError

BASELINES_FORMAT = "mmeb-dllm-baselines/1"
ANNOTATIONS_FORMAT = "mmeb-dllm-annotations/1"
SUBMISSION_FORMAT = "mmeb-dllm-submission/1"
BOARDS = ("MMEB", "MMEB-mini")
AGGREGATE_KEYS = ("CLS", "VQA", "RET", "VG", "IND", "OOD", "Overall")
ARCHITECTURES = ("autoregressive", "diffusion", "encoder", "unknown")
STATUSES = ("published", "computed", "self-reported", "unverified")
# mteb retrieval metrics kept per dataset (the MMEB export derives its @5/@10 values from them).
KEPT_METRICS = tuple(
    f"{name}_at_{k}" for name in ("ndcg", "map", "recall", "precision", "mrr", "hit_rate") for k in (1, 5, 10)
)
REQUIRED_METRICS = tuple(m for m in KEPT_METRICS if not m.startswith("hit_rate") and not m.endswith("_at_1"))

# A model name is "name" or "org/name"; each part starts with a letter or digit and uses only [A-Za-z0-9._+-].
# No "..", no other "/", no whitespace, no markup: the name becomes a file name and is shown on a web page.
_NAME_PART = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}"
MODEL_NAME_RE = re.compile(rf"{_NAME_PART}(/{_NAME_PART})?")
REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
URL_RE = re.compile(r"https://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{1,300}")
MAX_TEXT = 300


class LeaderboardError(MmebDllmError, ValueError):
    """The leaderboard folder is missing, unreadable or was edited by hand."""


class SubmissionError(MmebDllmError, ValueError):
    """A submitted result folder was rejected; the message lists every problem found."""

    def __init__(self, problems: list[str], folder: object = None) -> None:
        self.problems = list(dict.fromkeys(problems))
        where = f" {folder}" if folder is not None else ""
        lines = "\n  - ".join(self.problems)
        super().__init__(f"submission{where} rejected:\n  - {lines}")


def unsafe_name_reason(name: object, what: str = "model name") -> str | None:
    """Why ``name`` is not a safe model name, or None when it is."""
    if not isinstance(name, str):
        return f"{what} must be a string, got {type(name).__name__}"
    if ".." in name:
        return f"{what} {name!r} contains '..' (path traversal)"
    if re.search(r"[<>\"'&`]", name):
        return f"{what} {name!r} contains HTML/script characters (<, >, quotes, &, backtick)"
    if not MODEL_NAME_RE.fullmatch(name):
        return (
            f"{what} {name!r} is not of the form 'name' or 'org/name' with letters, digits and . _ + - "
            "(no spaces, no path separators other than one '/', at most 100 characters per part)"
        )
    return None


def unsafe_revision_reason(revision: object) -> str | None:
    if not isinstance(revision, str):
        return f"model revision must be a string, got {type(revision).__name__}"
    if ".." in revision or not REVISION_RE.fullmatch(revision):
        return f"model revision {revision!r} must be letters, digits and . _ - (at most 64 characters, no '..')"
    return None


def plain_text_reason(value: object, what: str) -> str | None:
    """Free text (source, notes): a printable string of at most MAX_TEXT characters (escaped on output)."""
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if len(value) > MAX_TEXT or not value.isprintable():
        return f"{what} must be printable text of at most {MAX_TEXT} characters"
    return None


def is_number(value: object) -> bool:
    """A real JSON number (bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def fraction_reason(value: object, what: str) -> str | None:
    """Why ``value`` is not a finite score in [0, 1], or None."""
    if value is None:
        return f"{what} is missing (or null)"
    if not is_number(value):
        return f"{what} must be a number, got {type(value).__name__} {value!r}"
    if not math.isfinite(value):
        return f"{what} is {value} (not finite)"
    if not 0.0 <= value <= 1.0:
        return f"{what} = {value} is outside [0, 1]"
    return None


@dataclass
class Row:
    """One model on one board, ready to display or compare. Scores and aggregates are fractions in [0, 1].

    ``aggregates`` are recomputed from ``scores`` when the row has per-dataset scores (``aggregate_origin`` =
    ``recomputed``), else they are the published numbers (``published``) or the fact sheet's (``computed``);
    ``published_aggregates`` keeps what the source printed.
    """

    id: str
    name: str
    benchmark: str
    kind: str  # "baseline" or "submission"
    architecture: str
    size_b: float | None
    source: str
    status: str
    date: str
    recipe: str
    url: str = ""
    on_board: bool = True
    scores: dict[str, float] = field(default_factory=dict)
    aggregates: dict[str, float] = field(default_factory=dict)
    aggregate_origin: str = "recomputed"
    published_aggregates: dict[str, float] = field(default_factory=dict)
    partial: bool = False
    n_datasets: int = 0
    notes: list[str] = field(default_factory=list)
    below_chance: list[str] = field(default_factory=list)
    same_as: str = ""
    rank: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def overall(self) -> float | None:
        return self.aggregates.get("Overall")


@dataclass
class Gap:
    """One seed-paper annotation: autoregressive minus ``diffusion_model`` on ``meta_task`` is ``relation value``."""

    comparison: str
    diffusion_model: str
    meta_task: str
    relation: str  # "=" or ">"
    value: float  # percentage points
