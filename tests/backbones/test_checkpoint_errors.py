"""Bad checkpoint folders and unsupported configs fail with errors that name the file/option at fault."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmeb_dllm.backbones.dream import DreamLM, dream_config_to_qwen2
from mmeb_dllm.backbones.lavida import LavidaBackbone
from mmeb_dllm.backbones.llada import LladaLM, convert_llada_state_dict, llada_config_to_llama
from mmeb_dllm.errors import CheckpointError, ConfigError


@pytest.fixture
def llada_copy(tiny_dirs: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_dirs["lavida-llada"], tmp_path / "ckpt"))


def rewrite_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_missing_config(llada_copy: Path) -> None:
    (llada_copy / "config.json").unlink()
    for load in (LavidaBackbone.from_pretrained, LladaLM.from_pretrained):
        with pytest.raises(CheckpointError, match=r"config\.json"):
            load(llada_copy)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does-not-exist"):
        LavidaBackbone.from_pretrained(tmp_path / "does-not-exist")


def test_malformed_config(llada_copy: Path) -> None:
    (llada_copy / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json.*not valid JSON"):
        LavidaBackbone.from_pretrained(llada_copy)


def test_missing_weights(llada_copy: Path) -> None:
    (llada_copy / "model.safetensors").unlink()
    for load in (LavidaBackbone.from_pretrained, LladaLM.from_pretrained):
        with pytest.raises(CheckpointError, match=r"model\.safetensors"):
            load(llada_copy)


def test_unexpected_key(llada_copy: Path) -> None:
    rewrite_weights(llada_copy, lambda t: t.__setitem__("model.transformer.blocks.9.q_proj.weight", torch.zeros(2)))
    for load in (LavidaBackbone.from_pretrained, LladaLM.from_pretrained):
        with pytest.raises(CheckpointError, match=r"unexpected.*model\.safetensors.*blocks\.9\.q_proj"):
            load(llada_copy)


def test_unexpected_key_outside_the_language_model(llada_copy: Path) -> None:
    rewrite_weights(llada_copy, lambda t: t.__setitem__("model.extra_head.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*'model\.extra_head\.weight'"):
        LavidaBackbone.from_pretrained(llada_copy)
    LladaLM.from_pretrained(llada_copy)  # the bare LM ignores keys outside model.transformer.


def test_missing_key(llada_copy: Path) -> None:
    rewrite_weights(llada_copy, lambda t: t.pop("model.mm_projector.2.bias"))
    with pytest.raises(CheckpointError, match=r"missing.*model\.safetensors.*mm_projector\.2\.bias"):
        LavidaBackbone.from_pretrained(llada_copy)


def test_wrong_shape(llada_copy: Path) -> None:
    rewrite_weights(llada_copy, lambda t: t.__setitem__("model.image_newline", torch.zeros(3, dtype=torch.bfloat16)))
    with pytest.raises(CheckpointError, match=r"image_newline.*shape"):
        LavidaBackbone.from_pretrained(llada_copy)


def test_unknown_model_type(llada_copy: Path) -> None:
    config = json.loads((llada_copy / "config.json").read_text(encoding="utf-8"))
    (llada_copy / "config.json").write_text(json.dumps({**config, "model_type": "llava_llama"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json.*llava_llama"):
        LavidaBackbone.from_pretrained(llada_copy)


def test_sharded_weights(llada_copy: Path) -> None:
    reference = LavidaBackbone.from_pretrained(llada_copy).state_dict()
    tensors = load_file(str(llada_copy / "model.safetensors"))
    (llada_copy / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({key: tensors[key] for key in keys}, str(llada_copy / shard))
        weight_map.update(dict.fromkeys(keys, shard))
    index = llada_copy / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    loaded = LavidaBackbone.from_pretrained(llada_copy).state_dict()
    for key, tensor in reference.items():
        torch.testing.assert_close(loaded[key], tensor, rtol=0, atol=0)
    LladaLM.from_pretrained(llada_copy)
    (llada_copy / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors"):
        LavidaBackbone.from_pretrained(llada_copy)


def test_dream_lm_rejects_lavida_llada_weights(tiny_dirs: dict[str, Path]) -> None:
    with pytest.raises((CheckpointError, ConfigError)):
        DreamLM.from_pretrained(tiny_dirs["lavida-llada"])


LLADA_CONFIG = {
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 4,
    "mlp_hidden_size": 128,
    "vocab_size": 100,
    "embedding_size": 128,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "max_sequence_length": 4096,
    "block_type": "llama",
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "rope": True,
    "alibi": False,
    "weight_tying": False,
    "include_bias": False,
    "pad_token_id": 7,
    "eos_token_id": 7,
}


def test_llada_config_mapping() -> None:
    config = llada_config_to_llama(LLADA_CONFIG)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert (config.intermediate_size, config.vocab_size, config.max_position_embeddings) == (128, 128, 4096)
    assert config.rope_parameters["rope_theta"] == 500000.0 and config.rms_norm_eps == 1e-5
    assert config.is_causal is False and config.tie_word_embeddings is False and config.pad_token_id == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alibi", True),
        ("block_type", "sequential"),
        ("layer_norm_type", "default"),
        ("weight_tying", True),
        ("rope", False),
        ("activation_type", "gelu"),
        ("attention_layer_norm", True),
        ("d_model", None),
    ],
)
def test_llada_config_errors_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        llada_config_to_llama({**LLADA_CONFIG, field: value})


def test_convert_state_dict_ignores_foreign_keys() -> None:
    sd = {
        "model.transformer.wte.weight": torch.zeros(1),
        "model.transformer.blocks.0.attn_out.weight": torch.zeros(1),
        "model.transformer.blocks.0.ff_out.weight": torch.zeros(1),
        "model.transformer.ff_out.weight": torch.ones(1),
        "model.mm_projector.0.weight": torch.zeros(1),
    }
    llama, head = convert_llada_state_dict(sd)
    assert sorted(llama) == ["embed_tokens.weight", "layers.0.mlp.down_proj.weight", "layers.0.self_attn.o_proj.weight"]
    assert head is not None and head.item() == 1.0


def test_dream_config_errors() -> None:
    good = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 50,
    }
    assert dream_config_to_qwen2(good).is_causal is False
    with pytest.raises(ConfigError, match="hidden_size"):
        dream_config_to_qwen2({**good, "hidden_size": None})
    with pytest.raises(ConfigError, match="use_sliding_window"):
        dream_config_to_qwen2({**good, "use_sliding_window": True})


def test_qkv_bias_maps_to_upstream_keys() -> None:
    model = LladaLM.build({**LLADA_CONFIG, "include_qkv_bias": True}, device="meta")
    sources = model.key_map().sources
    assert sources["model.layers.0.self_attn.q_proj.bias"] == "model.transformer.blocks.0.q_proj.bias"
    assert sources["model.layers.1.self_attn.v_proj.bias"] == "model.transformer.blocks.1.v_proj.bias"
    assert sources["model.layers.0.self_attn.o_proj.bias"] is None  # upstream has none: zero-filled
    assert sources["lm_head.weight"] == "model.transformer.ff_out.weight"


def test_remote_code_tokenizer_class_is_not_run(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tiny_dirs["lavida-dream"], tmp_path / "dream"))
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(
        tokenizer_class="DreamTokenizer", auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}
    )
    config_path.write_text(json.dumps(config), encoding="utf-8")
    backbone = LavidaBackbone.from_pretrained(folder)
    assert backbone.tokenize(backbone.render_prompt("<image>\nhi")).count(-200) == 1


def test_resized_embedding_table_is_authoritative(llada_copy: Path) -> None:
    """Upstream resizes the embedding to len(tokenizer) before saving: fewer rows than config.json's padded size."""
    key = "model.transformer.wte.weight"
    rewrite_weights(llada_copy, lambda t: t.__setitem__(key, t[key][:300].clone()))
    backbone = LavidaBackbone.from_pretrained(llada_copy)
    assert backbone.language_model.config.vocab_size == 300
