"""A tiny random MMaDA checkpoint built offline, in the upstream layout, for tests and the offline demo.

:func:`build_tiny_mmada_checkpoint` writes what an MMaDA folder plus its VQ tokenizer hold: ``config.json``
(``MMadaConfig`` fields: every LLaDA field + the ``model.mmada`` block), ``model.safetensors`` (LLaDA key names, the
``ff_out`` head included), ``vq_model/config.json`` + ``vq_model/diffusion_pytorch_model.safetensors`` (MAGVIT-v2
``encoder.*`` weights and the two ``quantize.*`` buffers; the tiny encoder's arguments under ``encoder`` /
``quantize``) and a byte-level tokenizer laid out like LLaDA's: 256 ordinary tokens, then the special and reserved
tokens at the real ids shifted by ``126464 - llm_vocab_size``, and ``len(tokenizer) = llm_vocab_size - 115``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mmeb_dllm.backbones.magvit import MagvitConfig, MagvitTokenizer, lfq_codebook, lfq_power_values
from mmeb_dllm.backbones.mmada import LLADA_TOKENIZER_PADDING, LLADA_VOCAB_SIZE, VQ_FOLDER
from mmeb_dllm.backbones.tiny import LLADA_CHAT_TEMPLATE, _byte_symbols, _random_tensor
from mmeb_dllm.errors import ConfigError

VARIANTS = ("mmada",)
VQ_WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
TINY_LLM_VOCAB = 640  # 256 byte tokens, then LLaDA's special block shifted down by 126464 - 640
TINY_CODEBOOK_DIM = 7  # 128 codes
TINY_VQ_ENCODER: dict[str, Any] = {
    "ch": 32,
    "ch_mult": [1, 2, 2],  # x4 downsampling
    "num_res_blocks": [1, 1, 1],
    "attn_resolutions": [5],
    "dropout": 0.0,
    "in_ch": 3,
    "out_ch": 3,
    "resolution": 256,
    "z_channels": TINY_CODEBOOK_DIM,
    "double_z": False,
}
TINY_NUM_VQ_TOKENS = 64  # 8 x 8 codes -> 32 px images

# LLaDA's special block, real id -> token (ids 126080 .. 126348); the few whose names we do not know get stand-ins
_FIRST_SPECIAL, _LAST_SPECIAL = 126080, 126348
_KNOWN_SPECIALS = {
    126080: "<|startoftext|>",
    126081: "<|endoftext|>",
    126082: "[CLS]",
    126083: "[gMASK]",
    **{126084 + k: f"<|reserved_token_{k}|>" for k in range(252)},
    126336: "<|mdm_mask|>",
    126340: "<role>",
    126341: "</role>",
    126346: "<|start_header_id|>",
    126347: "<|end_header_id|>",
    126348: "<|eot_id|>",
}


def special_tokens() -> list[str]:
    """Tokens of LLaDA's special block in id order (appended after the 256 byte tokens)."""
    return [_KNOWN_SPECIALS.get(real, f"<|llada_special_{real}|>") for real in range(_FIRST_SPECIAL, _LAST_SPECIAL + 1)]


def tiny_id(real_id: int) -> int:
    """A real LLaDA special id in the tiny vocabulary."""
    return real_id - (LLADA_VOCAB_SIZE - TINY_LLM_VOCAB)


def tiny_mmada_config() -> dict[str, Any]:
    """The upstream ``config.json`` of the tiny MMaDA (LM hidden 64, 2 layers, 4 heads; 128 codes)."""
    codebook = 2**TINY_CODEBOOK_DIM
    eos = tiny_id(126081)
    cfg: dict[str, Any] = {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["MMadaModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "codebook_size": codebook,
        "d_model": 64,
        "embedding_dropout": 0.0,
        "embedding_size": TINY_LLM_VOCAB + codebook,
        "eos_token_id": eos,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_device": "meta",
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "llm_vocab_size": TINY_LLM_VOCAB,
        "mask_token_id": tiny_id(126336),
        "max_sequence_length": 4096,
        "mlp_hidden_size": 128,
        "mlp_ratio": 2,
        "model_type": "mmada",
        "multi_query_attention": None,
        "n_heads": 4,
        "n_kv_heads": 4,
        "n_layers": 2,
        "new_vocab_size": TINY_LLM_VOCAB + codebook,
        "num_new_special_tokens": 0,
        "num_vq_tokens": TINY_NUM_VQ_TOKENS,
        "pad_token_id": eos,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": 500000.0,
        "scale_logits": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": False,
        "vocab_size": TINY_LLM_VOCAB + codebook,
        "w_clip_vit": False,
        "weight_tying": False,
    }
    return dict(sorted(cfg.items()))


def tiny_vq_config() -> dict[str, Any]:
    """``vq_model/config.json``: upstream's two diffusers fields + the tiny encoder/quantiser arguments."""
    return {
        "_class_name": "MAGVITv2",
        "_diffusers_version": "0.32.2",
        "encoder": TINY_VQ_ENCODER,
        "quantize": {"codebook_dim": TINY_CODEBOOK_DIM, "num_codebook_entry": -1},
    }


def build_tiny_mmada_tokenizer() -> Any:
    """Byte-level tokenizer (one token per byte) + LLaDA's special block and Llama-3 chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={symbol: i for i, symbol in enumerate(_byte_symbols())}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(special_tokens())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_template=LLADA_CHAT_TEMPLATE,
        model_max_length=4096,
    )
    if len(tokenizer) != TINY_LLM_VOCAB - LLADA_TOKENIZER_PADDING:  # the layout every id rule relies on
        raise RuntimeError(f"tiny MMaDA tokenizer has {len(tokenizer)} tokens")
    return tokenizer


def build_tiny_mmada_checkpoint(variant: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny random MMaDA checkpoint (+ ``vq_model/``) into ``out_dir``; return it.

    Same ``seed`` → byte-identical ``config.json``, ``model.safetensors`` and VQ weights.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown tiny MMaDA variant {variant!r}; use one of {VARIANTS}")
    from mmeb_dllm.backbones.llada import LladaLM

    out = Path(out_dir)
    (out / VQ_FOLDER).mkdir(parents=True, exist_ok=True)
    cfg, vq_cfg = tiny_mmada_config(), tiny_vq_config()
    _write_json(out / "config.json", cfg)
    _write_json(out / VQ_FOLDER / "config.json", vq_cfg)
    generator = torch.Generator().manual_seed(seed)

    lm = LladaLM.build(cfg, lm_head=True, device="meta")
    lm_state = lm.state_dict()
    lm_shapes = {source: tuple(lm_state[key].shape) for key, source in lm.key_map().sources.items() if source}
    tensors = {key: _random_tensor(key, lm_shapes[key], generator).contiguous() for key in sorted(lm_shapes)}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})

    with torch.device("meta"):
        vq = MagvitTokenizer(MagvitConfig.from_dict(vq_cfg))
    vq_shapes = {key: tuple(value.shape) for key, value in vq.state_dict().items()}
    vq_tensors = {key: _random_tensor(key, vq_shapes[key], generator).contiguous() for key in sorted(vq_shapes)}
    vq_tensors["quantize.embedding"] = lfq_codebook(TINY_CODEBOOK_DIM)
    vq_tensors["quantize.power_vals"] = lfq_power_values(TINY_CODEBOOK_DIM)
    save_file(vq_tensors, str(out / VQ_FOLDER / VQ_WEIGHTS_FILE), metadata={"format": "pt"})

    build_tiny_mmada_tokenizer().save_pretrained(str(out))
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
