"""The embedding recipe: everything that decides what vector an item gets, in one frozen dataclass.

It is recorded with every result (mteb ``model_meta.json`` loader kwargs, experiment folders for non-defaults) and
its :meth:`EmbeddingRecipe.key` identifies the embedding space (e.g. to key a cache).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from mmeb_dllm.errors import ConfigError

POOLINGS = ("last", "mean", "mask")
ATTENTIONS = ("default", "causal", "bidirectional")
INSTRUCTION_PLACEMENTS = ("mmeb",)
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EmbeddingRecipe:
    """How a backbone turns an item into a vector.

    Attributes:
        model: registered model name (``mmeb-dllm/<name>``).
        checkpoint: hub id or local folder of the weights.
        revision: requested revision (hub commit, or a content tag for built-in tiny checkpoints).
        resolved_revision: the snapshot actually loaded (hub commit hash or local folder), filled at load time.
        adapter: path of a peft adapter folder, or ``None``.
        adapter_hash: content hash of the adapter weights, or ``None``.
        pooling: ``last`` (last real token), ``mean`` (all real tokens) or ``mask`` (append
            ``num_mask_tokens`` diffusion mask tokens after the prompt and average their states).
        num_mask_tokens: how many mask tokens ``mask`` pooling appends.
        max_text_tokens: most token ids a prompt may hand the backbone (chat template, instruction, text and
            appended mask tokens; image feature positions not counted). Longer texts are cut at the end, keeping
            the instruction, the image placeholder and the beginning of the text, and counted in the task's
            protocol record. ``None``: the model's own limit (the smaller of its tokenizer's ``model_max_length``
            and its language model's maximum positions, whichever are declared).
        attention: ``default`` (the family's own), ``causal`` or ``bidirectional``.
        instruction: instruction placement; ``mmeb`` = the dataset's instruction text as in MMEB's rows
            (image placeholder, instruction, then the query text) inside the user turn of the chat template.
        image_resolution: the backbone's image mode: ``native`` (the family's own preprocessing, recorded in detail
            by the backbone's ``describe()``) or a named mode such as ``anyres`` (LaViDa/LLaVA-NeXT tiling).
        dtype: compute dtype of the model.
        normalize: L2-normalise vectors (cosine similarity = dot product).
    """

    model: str
    checkpoint: str
    revision: str
    resolved_revision: str = ""
    adapter: str | None = None
    adapter_hash: str | None = None
    pooling: str = "last"
    num_mask_tokens: int = 8
    max_text_tokens: int | None = None
    attention: str = "default"
    instruction: str = "mmeb"
    image_resolution: str = "native"
    dtype: str = "float32"
    normalize: bool = True

    def __post_init__(self) -> None:
        choices = {
            "pooling": (self.pooling, POOLINGS),
            "attention": (self.attention, ATTENTIONS),
            "instruction": (self.instruction, INSTRUCTION_PLACEMENTS),
            "dtype": (self.dtype, DTYPES),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r} for model {self.model}; choose one of {list(allowed)}")
        if self.num_mask_tokens < 1:
            raise ConfigError(f"num_mask_tokens must be >= 1, got {self.num_mask_tokens}")
        limit = self.max_text_tokens
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ConfigError(f"max_text_tokens must be a positive integer or None, got {self.max_text_tokens!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def key(self) -> str:
        """Stable hash of every field that changes the vectors."""
        payload = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]
