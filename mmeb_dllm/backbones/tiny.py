"""Tiny random LaViDa checkpoints built offline, in the upstream layout, for tests and the offline demo.

:func:`build_tiny_checkpoint` writes what a real LaViDa checkpoint folder holds: ``config.json`` (upstream field
names), ``model.safetensors`` (upstream key names, ``image_newline`` in bfloat16 like upstream), the vision tower's
``siglip_vision_tower/config.json`` and a small byte-level tokenizer with the family's special tokens and a chat
template of the family's shape. They are loaded through the real loader, so they exercise the same code path.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mmeb_dllm.errors import ConfigError
from mmeb_dllm.paths import cache_dir

VARIANTS = ("lavida-llada", "lavida-dream")
CACHE_VERSION = "v2"  # v2: patch 6 (v1: patch 2, ~1000 positions per image)
VISION_FOLDER = "siglip_vision_tower"
TINY_PINPOINTS = [[54, 108], [108, 54], [108, 108], [162, 54], [54, 162]]
TINY_VOCAB = 320  # 256 byte tokens + special tokens, padded like the real embedding tables

LLADA_SPECIALS = (
    "<|startoftext|>",
    "<|endoftext|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|mdm_mask|>",
)
DREAM_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>")

# Llama-3 shape (LLaDA-8B-Instruct): bos once, each turn's content stripped, then the assistant header.
LLADA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) "
    "+ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# Qwen2.5 shape (Dream-v0-Instruct): a default system turn when none is given, <|im_start|>role ... <|im_end|>.
DREAM_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TINY_SIGLIP: dict[str, Any] = {
    "architectures": ["SigLipVisionModel"],
    "attention_dropout": 0.0,
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 32,
    "image_mean": [0.5, 0.5, 0.5],
    "image_size": 54,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-06,
    "model_type": "siglip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 3,  # upstream deletes the last one at load: 2 are stored
    "patch_size": 6,  # 9 x 9 patches per 54 px view: ~150 positions per image, fast enough to fine-tune on CPU
}

_MULTIMODAL_FIELDS: dict[str, Any] = {
    "image_aspect_ratio": "anyres",
    "image_grid_pinpoints": TINY_PINPOINTS,
    "mm_hidden_size": TINY_SIGLIP["hidden_size"],
    "mm_newline_position": "grid",
    "mm_patch_merge_type": "spatial_unpad",
    "mm_projector_type": "mlp2x_gelu",
    "mm_spatial_pool_mode": "bilinear",
    "mm_spatial_pool_stride": 2,
    "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
    "mm_use_im_patch_token": False,
    "mm_use_im_start_end": False,
    "mm_vision_select_feature": "patch",
    "mm_vision_select_layer": -2,
    "mm_vision_tower": VISION_FOLDER,
    "tokenizer_padding_side": "right",
    "torch_dtype": "float32",
    "use_cache": False,
    "use_mm_proj": True,
}


def _special_id(specials: tuple[str, ...], token: str) -> int:
    return 256 + specials.index(token)


def tiny_config(variant: str) -> dict[str, Any]:
    """The upstream ``config.json`` of a tiny variant (LM hidden 64, 2 layers, 4 heads)."""
    if variant == "lavida-llada":
        eos = _special_id(LLADA_SPECIALS, "<|endoftext|>")
        lm: dict[str, Any] = {
            "architectures": ["LlavaLladaForMaskedDiffusion"],
            "model_type": "llava_llada",
            "activation_type": "silu",
            "alibi": False,
            "attention_layer_norm": False,
            "bias_for_layer_norm": False,
            "block_type": "llama",
            "d_model": 64,
            "embedding_size": TINY_VOCAB,
            "eos_token_id": eos,
            "include_bias": False,
            "include_qkv_bias": False,
            "input_emb_norm": False,
            "layer_norm_type": "rms",
            "layer_norm_with_affine": True,
            "mask_token_id": _special_id(LLADA_SPECIALS, "<|mdm_mask|>"),
            "max_sequence_length": 4096,
            "mlp_hidden_size": 128,
            "mlp_ratio": 2,
            "multi_query_attention": None,
            "n_heads": 4,
            "n_kv_heads": 4,
            "n_layers": 2,
            "pad_token_id": eos,
            "rms_norm_eps": 1e-05,
            "rope": True,
            "rope_full_precision": True,
            "rope_theta": 500000.0,
            "scale_logits": False,
            "tokenizer_model_max_length": 4096,
            "vocab_size": TINY_VOCAB,
            "weight_tying": False,
        }
    elif variant == "lavida-dream":
        eos = _special_id(DREAM_SPECIALS, "<|endoftext|>")
        lm = {
            "architectures": ["LlavaDreamForMaskedDiffusion"],
            "model_type": "llava_dream",
            "attention_dropout": 0.0,
            "bos_token_id": eos,
            "eos_token_id": eos,
            "hidden_act": "silu",
            "hidden_size": 64,
            "intermediate_size": 128,
            "mask_token_id": _special_id(DREAM_SPECIALS, "<|mask|>"),
            "max_position_embeddings": 2048,
            "max_window_layers": 2,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "num_key_value_heads": 2,
            "pad_token_id": eos,
            "rms_norm_eps": 1e-06,
            "rope_scaling": None,
            "rope_theta": 1000000.0,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "tokenizer_model_max_length": 2048,
            "use_sliding_window": False,
            "vocab_size": TINY_VOCAB,
        }
    else:
        raise ConfigError(f"unknown tiny variant {variant!r}; use one of {VARIANTS}")
    return dict(sorted({**_MULTIMODAL_FIELDS, **lm}.items()))


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0..255 (index = byte value)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]


def build_tiny_tokenizer(variant: str) -> Any:
    """A byte-level tokenizer (one token per byte, no merges) + the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={symbol: i for i, symbol in enumerate(_byte_symbols())}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if variant == "lavida-llada":
        backend.add_special_tokens(list(LLADA_SPECIALS))
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            chat_template=LLADA_CHAT_TEMPLATE,
            model_max_length=4096,
        )
    backend.add_special_tokens(list(DREAM_SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        mask_token="<|mask|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=DREAM_CHAT_TEMPLATE,
        model_max_length=2048,
    )


def _random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Non-degenerate values: norms ≈ 1 ± 0.2, biases ~ 0.1·N(0,1), embeddings std 0.02, linears N(0, 1/fan_in)."""
    if key.endswith("image_newline"):
        return torch.randn(shape, generator=generator).to(torch.bfloat16)  # upstream keeps it in bf16
    if key.endswith(".bias"):
        return 0.1 * torch.randn(shape, generator=generator)
    if len(shape) == 1:
        return 1.0 + 0.2 * (2.0 * torch.rand(shape, generator=generator) - 1.0)
    if any(part in key for part in ("wte", "embed_tokens", "position_embedding", "patch_embedding")):
        return 0.02 * torch.randn(shape, generator=generator)
    return torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))


def _upstream_shapes(out_dir: Path, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Checkpoint key → shape of every tensor upstream stores, from the real modules built on the meta device."""
    from mmeb_dllm.backbones.lavida import LM_HEAD_KEYS, LavidaBackbone, vision_settings

    with torch.device("meta"):
        backbone = LavidaBackbone(cfg, vision_settings(out_dir, cfg))
    state = backbone.state_dict()
    shapes = {
        source: tuple(state[key].shape) for key, source in backbone.key_map().sources.items() if source is not None
    }
    vocab = backbone.language_model.config.vocab_size
    shapes[LM_HEAD_KEYS[backbone.family][0]] = (vocab, backbone.hidden_size)  # stored upstream, unused here
    return shapes


def build_tiny_checkpoint(variant: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random checkpoint of ``variant`` in the upstream LaViDa layout into ``out_dir``; return it.

    Same ``variant`` and ``seed`` → byte-identical ``config.json`` and ``model.safetensors``.
    """
    cfg = tiny_config(variant)
    out = Path(out_dir)
    (out / VISION_FOLDER).mkdir(parents=True, exist_ok=True)
    _write_json(out / VISION_FOLDER / "config.json", TINY_SIGLIP)
    _write_json(out / "config.json", cfg)
    generator = torch.Generator().manual_seed(seed)
    shapes = _upstream_shapes(out, cfg)
    tensors = {key: _random_tensor(key, shapes[key], generator).contiguous() for key in sorted(shapes)}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    build_tiny_tokenizer(variant).save_pretrained(str(out))
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def tiny_checkpoint_dir(variant: str, cache_root: str | Path | None = None) -> Path:
    """The cached tiny checkpoint of ``variant`` (seed 0), built once into ``<cache>/tiny/<variant>-v1``.

    ``cache_root`` defaults to ``$MMEB_DLLM_CACHE`` or ``~/.cache/mmeb_dllm``. The folder is built in a temporary
    sibling and renamed into place, so concurrent builders never see a half-written checkpoint.
    """
    builder = _builder(variant)
    final = Path(cache_root or cache_dir()) / "tiny" / f"{variant}-{CACHE_VERSION}"
    if _complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # left incomplete by hand or a crash: builders only ever rename complete folders in
        shutil.rmtree(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        builder(variant, staging)
        os.rename(staging, final)
    except OSError:
        if not _complete(final):  # lost no race: a real failure
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


# Tiny variants of other families: variant -> "module:function(variant, out_dir, seed=0) -> Path". Each builder
# writes a deterministic checkpoint in its family's upstream layout into out_dir.
OTHER_BUILDERS: dict[str, str] = {
    "mmada": "mmeb_dllm.backbones.tiny_mmada:build_tiny_mmada_checkpoint",
    "llava-next": "mmeb_dllm.backbones.tiny_ar:build_tiny_checkpoint",
    "qwen2-vl": "mmeb_dllm.backbones.tiny_ar:build_tiny_checkpoint",
    "vlm2vec-qwen2-vl": "mmeb_dllm.backbones.tiny_ar:build_tiny_checkpoint",
}


def _builder(variant: str) -> Callable[..., Path]:
    if variant in VARIANTS:
        return build_tiny_checkpoint
    if variant in OTHER_BUILDERS:
        module_name, _, function = OTHER_BUILDERS[variant].partition(":")
        return getattr(importlib.import_module(module_name), function)
    raise ConfigError(f"unknown tiny variant {variant!r}; use one of {(*VARIANTS, *OTHER_BUILDERS)}")


def _complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()
