"""Dream on stock transformers: the upstream config mapped onto ``Qwen2Model(is_causal=False)``.

Dream checkpoints already use Qwen2 key names (``model.embed_tokens``, ``model.layers.N...``, ``model.norm``,
``lm_head``), so only the config needs translating. Every dimension is read from the checkpoint's ``config.json``:
the vendored ``DreamConfig`` defaults are not the real checkpoint's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model

from mmeb_dllm.backbones.llada import (
    DiffusionLM,
    KeyMap,
    SafetensorsCheckpoint,
    check_unexpected,
    empty_modules,
    load_strict,
    read_checkpoint_config,
    resolve_dtype,
)
from mmeb_dllm.errors import CheckpointError, ConfigError

DREAM_PREFIX = "model."
DREAM_LM_HEAD = "lm_head.weight"
_BODY_PARTS = ("embed_tokens", "layers", "norm")
_REQUIRED_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)


def dream_config_to_qwen2(cfg: Mapping[str, Any]) -> Qwen2Config:
    """Map an upstream Dream ``config.json`` dict (Qwen2-style field names) onto a bidirectional ``Qwen2Config``.

    Raises :class:`ConfigError` when a dimension is missing or a setting cannot be reproduced.
    """
    for field in _REQUIRED_FIELDS:
        value = cfg.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(
                f"Dream config field {field!r} must be a positive integer, found {value!r}; Dream dimensions are "
                f"read from the checkpoint's config.json, which must list them"
            )
    if cfg.get("use_sliding_window"):
        raise ConfigError("Dream config 'use_sliding_window' = true is not supported (Dream attends to everything)")
    if cfg.get("rope_scaling") not in (None, {}):
        raise ConfigError(f"Dream config 'rope_scaling' = {cfg['rope_scaling']!r} is not supported (only null)")
    return Qwen2Config(
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
        hidden_act=cfg.get("hidden_act", "silu"),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
        vocab_size=cfg["vocab_size"],
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        use_sliding_window=False,
        attention_dropout=0.0,
        is_causal=False,
        pad_token_id=cfg.get("pad_token_id"),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        use_cache=False,
    )


def is_dream_body_key(key: str) -> bool:
    """Whether a checkpoint key belongs to the Dream transformer body (not LaViDa's vision/projector keys)."""
    if not key.startswith(DREAM_PREFIX):
        return False
    return key[len(DREAM_PREFIX) :].split(".", 1)[0] in _BODY_PARTS


class DreamLM(DiffusionLM):
    """Dream as ``Qwen2Model(is_causal=False)`` (``self.model``) + optional ``lm_head`` (tied if the config says so)."""

    def __init__(self, config: Qwen2Config, *, lm_head: bool = True) -> None:
        super().__init__()
        self.model = Qwen2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False) if lm_head else None
        if self.lm_head is not None and config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def key_map(self) -> KeyMap:
        """Upstream key of every tensor of this module's ``state_dict`` (identity names; tied head → embeddings)."""
        sources: dict[str, str | None] = {}
        for key in self.state_dict():
            if key == DREAM_LM_HEAD and self.config.tie_word_embeddings:
                sources[key] = f"{DREAM_PREFIX}embed_tokens.weight"
            else:
                sources[key] = key
        return KeyMap(sources)

    @classmethod
    def build(
        cls,
        cfg: Mapping[str, Any],
        *,
        lm_head: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> DreamLM:
        """An uninitialised model for an upstream config dict (weights must be loaded next)."""
        config = dream_config_to_qwen2(cfg)
        with empty_modules(dtype, device):
            return cls(config, lm_head=lm_head)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path,
        *,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
        lm_head: bool = True,
    ) -> DreamLM:
        """Load ``config.json`` + ``model.safetensors`` (or sharded weights) of a Dream checkpoint.

        Tensors other than the body (``model.embed_tokens|layers|norm``) and ``lm_head`` are ignored; those must all
        be used and every parameter filled, else :class:`CheckpointError` names the keys and the file.
        """
        directory = Path(checkpoint_dir)
        cfg = read_checkpoint_config(directory)
        checkpoint = SafetensorsCheckpoint(directory)
        model = cls.build(cfg, lm_head=lm_head, dtype=resolve_dtype(dtype), device=device)
        key_map = model.key_map()
        what = f"Dream checkpoint {directory}"
        load_strict(model, key_map, checkpoint, what=what)
        ours = {key for key in checkpoint.names() if is_dream_body_key(key)}
        if lm_head and not model.config.tie_word_embeddings:
            ours |= {DREAM_LM_HEAD} & set(checkpoint.names())
        check_unexpected(checkpoint, ours, key_map.checkpoint_keys(), what=what)
        return model.eval()


def dream_mask_token_id(cfg: Mapping[str, Any], tokenizer: Any | None) -> int | None:
    """Dream's ``<|mask|>`` id: ``mask_token_id`` of config.json, else the tokenizer's mask token."""
    if cfg.get("mask_token_id") is not None:
        return int(cfg["mask_token_id"])
    if tokenizer is None:
        return None
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    token_id = tokenizer.convert_tokens_to_ids("<|mask|>")
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise CheckpointError("Dream tokenizer has no <|mask|> token and config.json no mask_token_id")
    return int(token_id)
