"""LLaDA loaded through our converter (``LlamaModel(is_causal=False)``) against upstream outputs (golden fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmeb_dllm.backbones.llada import LladaLM

STAGES = ("all_hidden_states", "last_hidden_state", "logits")


@pytest.fixture(scope="module")
def model(llada_golden: Path) -> LladaLM:
    return LladaLM.from_pretrained(llada_golden)


@pytest.fixture(scope="module")
def expected(llada_golden: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(str(llada_golden / "expected.safetensors"))
    print({name: tuple(t.shape) for name, t in tensors.items()})
    return tensors


def _sequences(folder: Path) -> list[dict]:
    return json.loads((folder / "inputs.json").read_text(encoding="utf-8"))["sequences"]


@torch.no_grad()
def test_each_sequence_matches_upstream(model: LladaLM, expected: dict[str, torch.Tensor], llada_golden: Path) -> None:
    sequences = _sequences(llada_golden)
    assert sequences, "inputs.json lists no sequences"
    compared = 0
    for sequence in sequences:
        name = sequence["name"]
        out = model(torch.tensor([sequence["input_ids"]]), output_hidden_states=True)
        actual = {
            "all_hidden_states": torch.stack(out.hidden_states),
            "last_hidden_state": out.last_hidden_state,
            "logits": out.logits,
        }
        assert f"{name}.last_hidden_state" in expected, f"expected.safetensors lacks {name}.last_hidden_state"
        for stage in STAGES:
            key = f"{name}.{stage}"
            if key in expected:
                torch.testing.assert_close(
                    actual[stage], expected[key], rtol=0, atol=1e-4, msg=lambda m, k=key: f"{k}: {m}"
                )
                compared += 1
    assert compared >= len(sequences)


@torch.no_grad()
def test_hidden_states_have_one_entry_per_layer_plus_embeddings(model: LladaLM, llada_golden: Path) -> None:
    config = json.loads((llada_golden / "config.json").read_text(encoding="utf-8"))
    ids = torch.tensor([_sequences(llada_golden)[0]["input_ids"]])
    out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == config["n_layers"] + 1
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(out.hidden_states[0], model.embed_tokens(ids), rtol=0, atol=0)
