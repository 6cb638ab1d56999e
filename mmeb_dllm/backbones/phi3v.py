"""Phi-3.5-V (``microsoft/Phi-3.5-vision-instruct``) and the VLM2Vec checkpoints built on it: registered, refused.

Phi-3.5-V exists only as remote code (``Phi3VForCausalLM``, ``model_type = "phi3_v"``); transformers 5 has no
native class for it. That code does not import on transformers 5 (``transformers.modeling_attn_mask_utils`` is gone;
its cache path uses ``DynamicCache.from_legacy_cache``, ``get_usable_length`` and ``seen_tokens``, all removed), its
image processor needs torchvision, and running it would need ``trust_remote_code``, which this project never sets.
A transformers-5 re-implementation (CLIP ViT-L/14-336 with the HD crop transform, ``sub_GN``/``glb_GN`` separators,
the 4096→3072 projector and a Phi-3-mini decoder) is possible but not done.

So the zoo entries ``vlm2vec-phi3v-lora`` / ``vlm2vec-phi3v-full`` exist for their names and metadata, and loading
them raises :class:`~mmeb_dllm.errors.ConfigError` with :data:`REFUSAL` (the zoo's ``unavailable`` field carries it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmeb_dllm.errors import ConfigError

REFUSAL = (
    "Phi-3.5-V (model_type 'phi3_v') is remote code only: transformers 5 has no native class for it, the remote code "
    "fails to import on transformers 5 (transformers.modeling_attn_mask_utils and the legacy cache API are gone), its "
    "image processor needs torchvision, and mmeb-dllm never runs trust_remote_code. Ways out: (1) score it with mteb's "
    "own wrapper `TIGER-Lab/VLM2Vec-LoRA` (or `TIGER-Lab/VLM2Vec-Full`) in a separate environment pinned to "
    "transformers 4.4x (e.g. 4.46) with peft and flash-attn, where that wrapper runs the remote code; or (2) compare "
    "against the published VLM2Vec Phi-3.5-V numbers in the leaderboard baselines (VLM2Vec paper, Table 2). See "
    "docs/models.md, section 'Phi-3.5-V'."
)


class Phi3VBackbone:
    """Placeholder family: every load raises :class:`ConfigError` with :data:`REFUSAL`."""

    image_token = "<|image_1|>"

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path, **_: Any) -> Phi3VBackbone:
        raise ConfigError(f"cannot load {checkpoint_dir}: {REFUSAL}")
