"""LLaDA on stock transformers: the upstream config and weights mapped onto ``LlamaModel(is_causal=False)``.

Also holds the checkpoint-file helpers every backbone here shares: reading ``config.json``, lazily opening
``model.safetensors`` or the shards listed in ``model.safetensors.index.json``, building modules without random
initialisation, and strict loading (every parameter filled, every checkpoint tensor used, shapes checked).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import LlamaConfig, LlamaModel

from mmeb_dllm.errors import CheckpointError, ConfigError

LLADA_PREFIX = "model.transformer."
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint files (shared by llada.py, dream.py, lavida.py)
# ---------------------------------------------------------------------------------------------------------------------


def read_json(path: Path, *, what: str) -> dict[str, Any]:
    """Parse a JSON object file; a missing or malformed file raises :class:`CheckpointError` naming it."""
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found: the checkpoint folder must contain {path.name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON ({exc}); re-download the checkpoint") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object, found {type(data).__name__}")
    return data


def read_checkpoint_config(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder as a dict."""
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist; pass a folder holding {CONFIG_FILE}")
    return read_json(directory / CONFIG_FILE, what="checkpoint config")


class SafetensorsCheckpoint:
    """Lazy view of a checkpoint's tensors: ``model.safetensors`` or the shards of ``model.safetensors.index.json``.

    ``names()`` costs no tensor reads; ``get(key)`` reads one tensor (on CPU, stored dtype).
    """

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.directory = Path(checkpoint_dir)
        self._file_of: dict[str, Path] = {}
        self._handles: dict[Path, Any] = {}
        single, index = self.directory / WEIGHTS_FILE, self.directory / WEIGHTS_INDEX_FILE
        if single.is_file():
            files = [single]
        elif index.is_file():
            files = self._files_from_index(index)
        else:
            raise CheckpointError(
                f"no weights in {self.directory}: expected {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} with its "
                f"model-*.safetensors shards (convert .bin weights to safetensors first)"
            )
        for path in files:
            stored = self._open(path).keys()
            for key in stored:
                if key in self._file_of:
                    raise CheckpointError(f"tensor {key!r} is stored twice: in {self._file_of[key]} and {path}")
                self._file_of[key] = path

    def _files_from_index(self, index: Path) -> list[Path]:
        weight_map = read_json(index, what="weights index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"weights index {index} has no 'weight_map'; re-download the checkpoint")
        files = [self.directory / name for name in sorted(set(weight_map.values()))]
        missing = [path.name for path in files if not path.is_file()]
        if missing:
            raise CheckpointError(f"weights index {index} lists shards missing from {self.directory}: {missing}")
        return files

    def _open(self, path: Path) -> Any:
        if path not in self._handles:
            try:
                self._handles[path] = safe_open(str(path), framework="pt", device="cpu")
            except Exception as exc:  # safetensors raises its own error types for corrupt headers
                raise CheckpointError(f"weights file {path} cannot be read ({exc}); re-download it") from None
        return self._handles[path]

    def names(self) -> list[str]:
        """All tensor names, sorted."""
        return sorted(self._file_of)

    def file_of(self, key: str) -> Path:
        """The file that stores ``key``."""
        return self._file_of[key]

    @property
    def files(self) -> list[Path]:
        """The weight files, sorted."""
        return sorted(set(self._file_of.values()))

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor."""
        return self._open(self._file_of[key]).get_tensor(key)

    def shape(self, key: str) -> tuple[int, ...] | None:
        """Stored shape of ``key`` without reading it; ``None`` if absent."""
        if key not in self._file_of:
            return None
        return tuple(self._open(self._file_of[key]).get_slice(key).get_shape())


@contextmanager
def empty_modules(dtype: torch.dtype, device: str | torch.device) -> Iterator[None]:
    """Build modules directly in ``dtype`` on ``device`` and skip random initialisation (weights are loaded next).

    Non-persistent buffers (RoPE frequencies, position ids) are still computed by the modules' constructors.
    """
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), no_init_weights():
            yield
    finally:
        torch.set_default_dtype(previous)


@dataclass(frozen=True)
class KeyMap:
    """How one module's ``state_dict`` keys come from checkpoint keys.

    ``sources[module_key]`` is the checkpoint key, or ``None`` for a tensor upstream does not have (a bias the
    stand-in needs but upstream lacks), which is zero-filled. Checkpoint keys in ``optional`` may be absent (the
    module's tensor is then zero-filled: only for tensors the forward pass never uses).
    """

    sources: dict[str, str | None]
    optional: frozenset[str] = frozenset()

    def checkpoint_keys(self) -> set[str]:
        """Every checkpoint key the map reads."""
        return {key for key in self.sources.values() if key is not None}

    def prefixed(self, module_prefix: str) -> KeyMap:
        """The same map for the module mounted as ``module_prefix`` (e.g. ``"language_model."``) in a parent."""
        return KeyMap({module_prefix + key: source for key, source in self.sources.items()}, self.optional)

    def __or__(self, other: KeyMap) -> KeyMap:
        return KeyMap({**self.sources, **other.sources}, self.optional | other.optional)


def load_strict(module: nn.Module, key_map: KeyMap, checkpoint: SafetensorsCheckpoint, *, what: str) -> None:
    """Copy every tensor of ``module.state_dict()`` from the checkpoint (casting to the module's dtype/device).

    Raises :class:`CheckpointError` naming the files and keys when a mapped tensor is missing or has another shape.
    """
    state = module.state_dict()
    unknown = sorted(set(state) ^ set(key_map.sources))
    if unknown:  # a bug in a key map, not in the checkpoint
        raise RuntimeError(f"{what}: key map and module disagree on {unknown[:10]}")
    available = set(checkpoint.names())
    missing = sorted(key_map.checkpoint_keys() - available - key_map.optional)
    if missing:
        raise CheckpointError(
            f"{what}: {len(missing)} tensor(s) missing from {_describe_files(checkpoint)}: {_preview(missing)}; "
            f"the checkpoint is incomplete or of another architecture (check config.json against the weights)"
        )
    with torch.no_grad():
        for module_key, target in state.items():
            source_key = key_map.sources[module_key]
            if source_key is None or source_key not in available:
                target.zero_()
                continue
            source = checkpoint.get(source_key)
            if tuple(source.shape) != tuple(target.shape):
                raise CheckpointError(
                    f"{what}: tensor {source_key!r} in {checkpoint.file_of(source_key)} has shape "
                    f"{tuple(source.shape)} but config.json implies {tuple(target.shape)}; config and weights disagree"
                )
            target.copy_(source)


def check_unexpected(checkpoint: SafetensorsCheckpoint, candidates: set[str], used: set[str], *, what: str) -> None:
    """Raise :class:`CheckpointError` if some of ``candidates`` (checkpoint keys) were not consumed (``used``)."""
    unexpected = sorted(candidates - used)
    if unexpected:
        raise CheckpointError(
            f"{what}: {len(unexpected)} unexpected tensor(s) in {_describe_files(checkpoint)}: "
            f"{_preview(unexpected)}; the weights do not match config.json (wrong model_type or a different model)"
        )


def _describe_files(checkpoint: SafetensorsCheckpoint) -> str:
    files = checkpoint.files
    if len(files) == 1:
        return str(files[0])
    return f"{checkpoint.directory / WEIGHTS_INDEX_FILE} ({len(files)} shards)"


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(key) for key in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Accept ``torch.float32`` or ``"float32"``; only floating dtypes."""
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(f"dtype {dtype!r} is not a floating torch dtype; use float32, bfloat16 or float16")
    return resolved


# ---------------------------------------------------------------------------------------------------------------------
# LLaDA config → LlamaConfig
# ---------------------------------------------------------------------------------------------------------------------

# (field, value upstream must have for the Llama stand-in to be exact)
_REQUIRED_SETTINGS: tuple[tuple[str, Any], ...] = (
    ("block_type", "llama"),
    ("layer_norm_type", "rms"),
    ("activation_type", "silu"),
    ("alibi", False),
    ("rope", True),
    ("weight_tying", False),
    ("attention_layer_norm", False),
    ("input_emb_norm", False),
    ("scale_logits", False),
    ("layer_norm_with_affine", True),
)
_DEFAULT_SETTINGS: dict[str, Any] = {
    "block_type": None,
    "layer_norm_type": None,
    "activation_type": None,
    "alibi": False,
    "rope": False,
    "weight_tying": True,
    "attention_layer_norm": False,
    "input_emb_norm": False,
    "scale_logits": False,
    "layer_norm_with_affine": True,
}


def llada_config_to_llama(cfg: Mapping[str, Any]) -> LlamaConfig:
    """Map an upstream LLaDA ``config.json`` dict onto an equivalent bidirectional :class:`LlamaConfig`.

    Raises :class:`ConfigError` for upstream settings the Llama stand-in cannot reproduce exactly.
    """
    for field, wanted in _REQUIRED_SETTINGS:
        value = cfg.get(field, _DEFAULT_SETTINGS[field])
        if value != wanted:
            raise ConfigError(
                f"LLaDA config field {field!r} = {value!r} is not supported (only {wanted!r}): the LlamaModel "
                f"stand-in reproduces only the LLaDA-8B architecture; use a checkpoint with {field}={wanted!r}"
            )
    if cfg.get("clip_qkv") is not None:
        raise ConfigError(f"LLaDA config field 'clip_qkv' = {cfg['clip_qkv']!r} is not supported (only null)")
    include_bias = bool(cfg.get("include_bias", False))
    if include_bias and cfg.get("bias_for_layer_norm") is not False:
        raise ConfigError(
            "LLaDA config 'include_bias' = true with RMSNorm biases ('bias_for_layer_norm' not false) is not "
            "supported: LlamaRMSNorm has no bias"
        )
    if cfg.get("bias_for_layer_norm"):
        raise ConfigError("LLaDA config 'bias_for_layer_norm' = true is not supported: LlamaRMSNorm has no bias")
    d_model = _required_int(cfg, "d_model")
    n_heads = _required_int(cfg, "n_heads")
    n_kv_heads = 1 if cfg.get("multi_query_attention") else int(cfg.get("n_kv_heads") or n_heads)
    mlp_hidden = cfg.get("mlp_hidden_size") or int(cfg.get("mlp_ratio", 4)) * d_model
    vocab = cfg.get("embedding_size") or _required_int(cfg, "vocab_size")
    llama = LlamaConfig(
        hidden_size=d_model,
        num_hidden_layers=_required_int(cfg, "n_layers"),
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=d_model // n_heads,
        intermediate_size=int(mlp_hidden),
        hidden_act="silu",
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
        vocab_size=int(vocab),
        max_position_embeddings=int(cfg.get("max_sequence_length", 1024)),
        attention_bias=include_bias or bool(cfg.get("include_qkv_bias", False)),
        mlp_bias=include_bias,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        is_causal=False,
        pad_token_id=cfg.get("pad_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        bos_token_id=cfg.get("bos_token_id"),
        use_cache=False,
    )
    return llama


def _required_int(cfg: Mapping[str, Any], field: str) -> int:
    value = cfg.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"LLaDA config field {field!r} must be a positive integer, found {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# LLaDA keys ↔ Llama keys
# ---------------------------------------------------------------------------------------------------------------------

_BLOCK_RENAMES: tuple[tuple[str, str], ...] = (
    ("attn_norm", "input_layernorm"),
    ("ff_norm", "post_attention_layernorm"),
    ("q_proj", "self_attn.q_proj"),
    ("k_proj", "self_attn.k_proj"),
    ("v_proj", "self_attn.v_proj"),
    ("attn_out", "self_attn.o_proj"),
    ("ff_proj", "mlp.gate_proj"),
    ("up_proj", "mlp.up_proj"),
    ("ff_out", "mlp.down_proj"),
)
_TOP_RENAMES: tuple[tuple[str, str], ...] = (("wte", "embed_tokens"), ("ln_f", "norm"))
_LM_HEAD = "ff_out"
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(\w+)\.(weight|bias)")
_LAYER_KEY = re.compile(r"layers\.(\d+)\.([\w.]+)\.(weight|bias)")


def llada_key_to_llama(key: str, prefix: str = LLADA_PREFIX) -> str | None:
    """``model.transformer.blocks.0.attn_out.weight`` → ``layers.0.self_attn.o_proj.weight``.

    The top-level ``ff_out`` maps to ``lm_head.<weight|bias>``. Keys outside ``prefix`` give ``None``; keys inside it
    that LLaDA does not have raise :class:`CheckpointError`.
    """
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    block = _BLOCK_KEY.fullmatch(rest)
    if block:
        index, name, kind = block.groups()
        for llada_name, llama_name in _BLOCK_RENAMES:
            if name == llada_name:
                return f"layers.{index}.{llama_name}.{kind}"
    else:
        name, _, kind = rest.partition(".")
        if name == _LM_HEAD and kind in ("weight", "bias"):
            return f"lm_head.{kind}"
        for llada_name, llama_name in _TOP_RENAMES:
            if name == llada_name and kind in ("weight", "bias"):
                return f"{llama_name}.{kind}"
    raise CheckpointError(f"unknown LLaDA weight {key!r}: not part of a llama-block LLaDA model")


def llama_key_to_llada(key: str, prefix: str = LLADA_PREFIX) -> str:
    """Inverse of :func:`llada_key_to_llama` (``lm_head.weight`` → ``model.transformer.ff_out.weight``)."""
    layer = _LAYER_KEY.fullmatch(key)
    if layer:
        index, name, kind = layer.groups()
        for llada_name, llama_name in _BLOCK_RENAMES:
            if name == llama_name:
                return f"{prefix}blocks.{index}.{llada_name}.{kind}"
    name, _, kind = key.rpartition(".")
    if name == "lm_head":
        return f"{prefix}{_LM_HEAD}.{kind}"
    for llada_name, llama_name in _TOP_RENAMES:
        if name == llama_name:
            return f"{prefix}{llada_name}.{kind}"
    raise ValueError(f"{key!r} is not a LlamaModel key with a LLaDA counterpart")


def convert_llada_state_dict(
    sd: Mapping[str, torch.Tensor], prefix: str = LLADA_PREFIX
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Rename an upstream LLaDA state dict for ``LlamaModel``; returns ``(llama_state_dict, lm_head_weight | None)``.

    Keys outside ``prefix`` (LaViDa's vision tower, projector, ...) are ignored.
    """
    llama: dict[str, torch.Tensor] = {}
    lm_head: torch.Tensor | None = None
    for key, tensor in sd.items():
        new_key = llada_key_to_llama(key, prefix)
        if new_key is None:
            continue
        if new_key == "lm_head.weight":
            lm_head = tensor
        else:
            llama[new_key] = tensor
    return llama, lm_head


# ---------------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LMOutput:
    """Output of :class:`LladaLM` / :class:`~mmeb_dllm.backbones.dream.DreamLM`.

    ``last_hidden_state`` ``(B, L, D)`` after the final norm; ``hidden_states`` the ``n_layers + 1`` states (last one
    equal to ``last_hidden_state``) when asked for; ``logits`` ``(B, L, V)`` when the LM head is loaded.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    logits: torch.Tensor | None = None


class DiffusionLM(nn.Module):
    """A bidirectional transformer body (``self.model``) plus an optional untied output head (``self.lm_head``)."""

    model: nn.Module
    lm_head: nn.Linear | None

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> LMOutput:
        """Run ``(B, L)`` ids or ``(B, L, D)`` embeddings with an optional ``(B, L)`` 0/1 padding mask."""
        out = self.model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            use_cache=False,
        )
        hidden = out.last_hidden_state
        logits = self.lm_head(hidden) if self.lm_head is not None else None
        states = tuple(out.hidden_states) if output_hidden_states else None
        return LMOutput(last_hidden_state=hidden, hidden_states=states, logits=logits)

    @property
    def config(self) -> Any:
        return self.model.config

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ``ids``."""
        return self.model.get_input_embeddings()(ids)


class LladaLM(DiffusionLM):
    """LLaDA as ``LlamaModel(is_causal=False)`` (``self.model``) + optional untied ``lm_head`` (upstream ``ff_out``)."""

    def __init__(self, config: LlamaConfig, *, lm_head: bool = True, include_bias: bool = False) -> None:
        """``include_bias`` is upstream's flag: every linear layer (and ``ff_out``) has a bias. Without it, an
        ``attention_bias`` config (upstream ``include_qkv_bias``) gets a zero ``o_proj`` bias that upstream lacks."""
        super().__init__()
        self.model = LlamaModel(config)
        self.include_bias = include_bias
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=include_bias) if lm_head else None

    def key_map(self, prefix: str = LLADA_PREFIX) -> KeyMap:
        """Upstream key of every tensor of this module's ``state_dict``."""
        sources: dict[str, str | None] = {}
        for key in self.state_dict():
            inner = key.removeprefix("model.")
            if inner.endswith("self_attn.o_proj.bias") and not self.include_bias:
                sources[key] = None
            else:
                sources[key] = llama_key_to_llada(inner, prefix)
        return KeyMap(sources)

    @classmethod
    def build(
        cls,
        cfg: Mapping[str, Any],
        *,
        lm_head: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> LladaLM:
        """An uninitialised model for an upstream config dict (weights must be loaded next)."""
        config = llada_config_to_llama(cfg)
        with empty_modules(dtype, device):
            return cls(config, lm_head=lm_head, include_bias=bool(cfg.get("include_bias", False)))

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path,
        *,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
        lm_head: bool = True,
    ) -> LladaLM:
        """Load ``config.json`` + ``model.safetensors`` (or sharded weights) of an upstream LLaDA checkpoint.

        Tensors outside ``model.transformer.`` are ignored; every other tensor must be used and every parameter
        filled, else :class:`CheckpointError` names the keys and the file.
        """
        directory = Path(checkpoint_dir)
        cfg = read_checkpoint_config(directory)
        checkpoint = SafetensorsCheckpoint(directory)
        model = cls.build(cfg, lm_head=lm_head, dtype=resolve_dtype(dtype), device=device)
        key_map = model.key_map()
        load_strict(model, key_map, checkpoint, what=f"LLaDA checkpoint {directory}")
        ours = {key for key in checkpoint.names() if key.startswith(LLADA_PREFIX)}
        if not lm_head:
            ours -= {f"{LLADA_PREFIX}{_LM_HEAD}.weight", f"{LLADA_PREFIX}{_LM_HEAD}.bias"}
        check_unexpected(checkpoint, ours, key_map.checkpoint_keys(), what=f"LLaDA checkpoint {directory}")
        return model.eval()
