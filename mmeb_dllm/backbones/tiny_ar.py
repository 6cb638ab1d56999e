"""Tiny random LLaVA-NeXT and Qwen2-VL checkpoints (and a VLM2Vec-style LoRA adapter), built offline.

Each builder writes what the real hub folder holds, through the real classes' ``save_pretrained``: ``config.json``
and ``model.safetensors`` (hub key names), a small byte-level tokenizer with the family's special tokens, and the
image-processor configs (``preprocessor_config.json``; LLaVA-NeXT also ``processor_config.json``). The folders load
through the real loaders (:mod:`~mmeb_dllm.backbones.llava_next`, :mod:`~mmeb_dllm.backbones.qwen2_vl`).

``vlm2vec-qwen2-vl`` mirrors the ``TIGER-Lab/VLM2Vec-Qwen2VL-*`` repos: the base checkpoint's files plus a peft
DoRA adapter (VLM2Vec's target modules, ``init_lora_weights="gaussian"``, ``use_dora=True``) whose keys use the
transformers-4.x layout those adapters were saved with (``base_model.model.model.layers.*``).

Same variant and seed → byte-identical weights. Registered in :data:`mmeb_dllm.backbones.tiny.OTHER_BUILDERS`.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmeb_dllm.errors import ConfigError

VARIANTS = ("llava-next", "qwen2-vl", "vlm2vec-qwen2-vl")
TINY_VOCAB = 272  # 256 byte tokens + special tokens, padded like the real embedding tables

LLAVA_SPECIALS = ("<unk>", "<s>", "</s>", "<image>", "<pad>")
LLAVA_PINPOINTS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]  # the real grid shapes, 336 px -> 32 px
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# VLM2Vec V1 (src/arguments.py): the default LoRA targets; DoRA and gaussian init are hard-coded in src/model.py.
VLM2VEC_LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "k_proj", "q_proj", "out_proj", "v_proj")


def _special(specials: tuple[str, ...], token: str) -> int:
    return 256 + specials.index(token)


def build_tokenizer(specials: tuple[str, ...], *, bos: str | None, **tokens: str) -> Any:
    """A byte-level tokenizer (one token per byte) with ``specials`` after the bytes; ``bos`` is prepended when set."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from mmeb_dllm.backbones.tiny import _byte_symbols

    backend = Tokenizer(models.BPE(vocab={symbol: i for i, symbol in enumerate(_byte_symbols())}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(specials))
    if bos is not None:
        bos_id = _special(specials, bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
        tokens["bos_token"] = bos
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=32768, **tokens)


def llava_next_config() -> Any:
    """Tiny LLaVA-NeXT with the real architecture: CLIP tower (CLS, layer -2, ``default``), Mistral decoder."""
    from transformers import LlavaNextConfig

    special = {token: _special(LLAVA_SPECIALS, token) for token in LLAVA_SPECIALS}
    return LlavaNextConfig(
        text_config={
            "model_type": "mistral",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": TINY_VOCAB,
            "max_position_embeddings": 32768,
            "rope_theta": 1000000.0,
            "sliding_window": None,
            "rms_norm_eps": 1e-05,
            "bos_token_id": special["<s>"],
            "eos_token_id": special["</s>"],
            "pad_token_id": special["<pad>"],
        },
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 16,
        },
        image_token_index=special["<image>"],
        image_grid_pinpoints=LLAVA_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
        pad_token_id=special["<pad>"],
    )


def qwen2_vl_config() -> Any:
    """Tiny Qwen2-VL with the real architecture (M-RoPE sections, 2×2 merger, tied embeddings like the 2B)."""
    from transformers import Qwen2VLConfig

    special = {token: _special(QWEN_SPECIALS, token) for token in QWEN_SPECIALS}
    return Qwen2VLConfig(
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": TINY_VOCAB,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": special["<|endoftext|>"],
            "eos_token_id": special["<|im_end|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=special["<|image_pad|>"],
        video_token_id=special["<|video_pad|>"],
        vision_start_token_id=special["<|vision_start|>"],
        vision_end_token_id=special["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def _randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Non-degenerate values: norms ≈ 1 ± 0.2, biases 0.1·N(0,1), embeddings 0.02·N(0,1), others N(0, 1/fan_in)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            shape = tuple(parameter.shape)
            if name.endswith(".bias"):
                value = 0.1 * torch.randn(shape, generator=generator)
            elif len(shape) == 1:
                value = 1.0 + 0.2 * (2.0 * torch.rand(shape, generator=generator) - 1.0)
            elif "embed" in name:
                value = 0.02 * torch.randn(shape, generator=generator)
            else:
                value = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
            parameter.copy_(value)


def _save_model(model_class: type, config: Any, out: Path, seed: int) -> Any:
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = model_class(config)
    model.tie_weights()  # skipped under no_init_weights; the 2B's lm_head is its token embedding
    _randomize(model, torch.Generator().manual_seed(seed))
    model.save_pretrained(str(out))
    return model


def build_llava_next(out: Path, seed: int) -> None:
    from transformers import LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil

    config = llava_next_config()
    _save_model(LlavaNextForConditionalGeneration, config, out, seed)
    tokenizer = build_tokenizer(
        LLAVA_SPECIALS, bos="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.save_pretrained(str(out))
    side = config.vision_config.image_size
    LlavaNextImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=LLAVA_PINPOINTS
    ).save_pretrained(str(out))
    _write_json(
        out / "processor_config.json",
        {
            "image_token": "<image>",
            "num_additional_image_tokens": 1,
            "patch_size": config.vision_config.patch_size,
            "processor_class": "LlavaNextProcessor",
            "vision_feature_select_strategy": "default",
        },
    )


def build_qwen2_vl(out: Path, seed: int) -> Any:
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    model = _save_model(Qwen2VLForConditionalGeneration, qwen2_vl_config(), out, seed)
    tokenizer = build_tokenizer(
        QWEN_SPECIALS, bos=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    tokenizer.save_pretrained(str(out))
    # Qwen2-VL-*-Instruct's min_pixels; max_pixels small so that any image becomes at most 8×8 patches
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(str(out))
    return model


def legacy_adapter_key(key: str) -> str:
    """A transformers-5 Qwen2-VL adapter key in the transformers-4.x layout VLM2Vec's adapters use."""
    return key.replace("base_model.model.model.language_model.", "base_model.model.model.").replace(
        "base_model.model.model.visual.", "base_model.model.visual."
    )


def build_vlm2vec_qwen2_vl(out: Path, seed: int) -> None:
    """The tiny Qwen2-VL base (same seed) plus a VLM2Vec-style DoRA adapter at the folder's root."""
    from peft import LoraConfig, get_peft_model

    model = build_qwen2_vl(out, seed)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=list(VLM2VEC_LORA_TARGETS),
        init_lora_weights="gaussian",
        use_dora=True,
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # a "trained" adapter: A as the gaussian init, B off zero, magnitudes off the weight norms
        for name, parameter in sorted(peft_model.named_parameters()):
            if "lora_A" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / config.r)
            elif "lora_B" in name:
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
            elif "lora_magnitude_vector" in name:
                parameter.mul_(1.0 + 0.1 * torch.randn(parameter.shape, generator=generator))
    with tempfile.TemporaryDirectory() as scratch:
        peft_model.save_pretrained(scratch)
        stored = load_file(str(Path(scratch) / "adapter_model.safetensors"))
        adapter_config = json.loads((Path(scratch) / "adapter_config.json").read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = "tiny:qwen2-vl"
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    _write_json(out / "adapter_config.json", adapter_config)
    tensors = {legacy_adapter_key(key): value.contiguous() for key, value in sorted(stored.items())}
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})


BUILDERS: dict[str, Callable[[Path, int], Any]] = {
    "llava-next": build_llava_next,
    "qwen2-vl": build_qwen2_vl,
    "vlm2vec-qwen2-vl": build_vlm2vec_qwen2_vl,
}


def build_tiny_checkpoint(variant: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint of ``variant`` (one of :data:`VARIANTS`) into ``out_dir``; return the folder."""
    if variant not in BUILDERS:
        raise ConfigError(f"unknown tiny variant {variant!r}; use one of {VARIANTS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    BUILDERS[variant](out, seed)
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

