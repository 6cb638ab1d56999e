"""What produced a score, stored inside every MMEB task result, and the chance-level guard.

A score file that looks valid but came from a misconfigured run is MMEB's most common failure (ImageNet hit@1 of
0.001, VLM2Vec #153). Each task result therefore carries ``mmeb_protocol`` (package versions, model and recipe,
instructions and placement, data source and checksum, rows skipped and texts truncated, candidate counts) and a
loud flag when P@1 is at or below twice the chance level.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmeb_dllm.benchmark.data import LoadedDataset

logger = logging.getLogger(__name__)

PACKAGES = ("mmeb-dllm", "mteb", "torch", "transformers", "peft", "datasets", "pillow")
GUARD_FACTOR = 2.0
LIKELY_CAUSES = (
    "the image does not reach the model (placeholder not replaced by image features, or images dropped)",
    "pooling reads the wrong position for the padding side (e.g. last position of a right-padded batch)",
    "the instruction is missing or misplaced relative to the image token and query text",
    "the wrong image token for this backbone (MMEB rows carry Phi-3.5-V's <|image_1|>)",
    "untrained or random weights (tiny test models are expected to sit at chance)",
)


def chance_level(loaded: LoadedDataset) -> float:
    """Mean over queries of 1 / number of distinct candidates (identical candidates count once)."""
    return float(np.mean([1.0 / len({c.item_id for c in row.candidates}) for row in loaded.rows]))


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _sha(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def truncation(loaded: LoadedDataset, model: Any) -> dict[str, Any]:
    """The model's text truncation on this task (``truncated_items`` None if the model cannot say); warns if any."""
    report = getattr(model, "truncation_report", None)
    if not callable(report):
        recipe = getattr(model, "recipe", None)
        return {"max_text_tokens": getattr(recipe, "max_text_tokens", None), "truncated_items": None}
    record = dict(report(loaded.spec.key))
    if record.get("truncated_items"):
        logger.warning(
            "dataset %s: %d item(s) longer than max_text_tokens=%s were truncated (the instruction and the "
            "beginning of each text kept; longest prompt %s tokens); the count is in the result's mmeb_protocol",
            loaded.spec.key, record["truncated_items"], record.get("max_text_tokens"),
            record.get("longest_text_tokens"),
        )
    return record


def protocol_record(loaded: LoadedDataset, model: Any) -> dict[str, Any]:
    """Everything needed to reproduce (or distrust) one task's score (warns once if texts were truncated)."""
    spec = loaded.spec
    counts = [len(row.candidates) for row in loaded.rows]
    corpus = {c.item_id for row in loaded.rows for c in row.candidates}
    recipe = getattr(model, "recipe", None)
    embedder = getattr(model, "_embedder", None)
    backbone = getattr(embedder, "backbone", None)
    meta = getattr(model, "mteb_model_meta", None)
    return {
        "packages": package_versions(),
        "model": {
            "name": getattr(meta, "name", type(model).__name__),
            "revision": getattr(meta, "revision", None),
            "recipe": recipe.to_dict() if recipe is not None else None,
            "recipe_key": recipe.key() if recipe is not None else None,
            "backbone": backbone.describe() if backbone is not None and hasattr(backbone, "describe") else None,
        },
        "instructions": {
            "placement": recipe.instruction if recipe is not None else "unknown",
            "query_instruction": spec.query_instruction,
            "target_instruction": spec.target_instruction,
            "query_texts_sha256": _sha([row.query.text for row in loaded.rows]),
            "candidate_texts_sha256": _sha([c.text for row in loaded.rows for c in row.candidates]),
        },
        "data": {
            "dataset": spec.key,
            "source": loaded.source,
            "revision": loaded.revision,
            "files": [f.rsplit("/", 1)[-1] for f in loaded.files],
            "skipped_rows": len(loaded.skipped),
            "skipped_examples": loaded.skipped[:20],
            "truncation": truncation(loaded, model),
        },
        "candidates": {
            "queries": len(loaded.rows),
            "per_query_min": min(counts),
            "per_query_max": max(counts),
            "per_query_mean": float(np.mean(counts)),
            "unique_candidates": len(corpus),
            "declared": spec.num_candidates,
        },
    }


_GUARDED_MODELS: set[str] = set()
"""Models whose chance-level warning, with the causes, was already given in this process."""


def chance_guard(task_name: str, score: float, chance: float, model: Any) -> bool:
    """Warn loudly when ``score`` is at or below twice the chance level; return whether it fired.

    The first warning for a model in a process lists the likely causes; later ones (other tasks) are one line."""
    if score > GUARD_FACTOR * chance:
        return False
    name = getattr(getattr(model, "mteb_model_meta", None), "name", type(model).__name__)
    headline = (
        f"CHANCE-LEVEL SCORE: {name} on {task_name} has P@1 {score:.3f} <= {GUARD_FACTOR:g} x chance ({chance:.3f}). "
        f"Do not trust this number."
    )
    doctor = f"Run `mmeb-dllm doctor -m {name} -t {task_name}` to check the recipe on a few rows."
    if name in _GUARDED_MODELS:
        message = f"{headline} (likely causes: see the first such warning) {doctor}"
    else:
        _GUARDED_MODELS.add(name)
        causes = "\n  - ".join(LIKELY_CAUSES)
        message = f"{headline} Likely causes:\n  - {causes}\n{doctor}"
    warnings.warn(message, stacklevel=2)
    return True
