"""A minimal Backbone for testing the shared embedder in isolation: bytes as tokens, an image as 4 colour tokens,
a 2-layer bidirectional Llama. Independent of the real families so embedder bugs and backbone bugs stay apart."""

from __future__ import annotations

import numpy as np
import torch
from PIL.Image import Image
from transformers import LlamaConfig, LlamaModel

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID, Backbone

MASK_ID, PAD_ID, BOS_ID = 256, 257, 258


class ToyBackbone(Backbone):
    image_token = "<img>"
    tokenizer = None
    mask_token_id = MASK_ID
    pad_token_id = PAD_ID

    def __init__(
        self,
        *,
        ignore_image: bool = False,
        drop_text: bool = False,
        left_align: bool = False,
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        """The keyword flags break the model on purpose (for the doctor's tests): ``ignore_image`` zeroes image
        features, ``drop_text`` renders prompts without their text, ``left_align`` moves real tokens to the end of
        the padded batch (so pooling reads padding), ``dropout`` stays active at inference."""
        super().__init__()
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, is_causal=False,
        )
        self.lm = LlamaModel(config)
        self.image_proj = torch.nn.Linear(3, 4 * 32)
        self.ignore_image = ignore_image
        self.drop_text = drop_text
        self.left_align = left_align
        self.dropout = dropout

    @property
    def hidden_size(self) -> int:
        return 32

    def render_prompt(self, user_content: str) -> str:
        if self.drop_text:
            user_content = self.image_token * user_content.count(self.image_token)
        return f"[user]{user_content}[end]"

    def tokenize(self, prompt: str) -> list[int]:
        ids = [BOS_ID]
        for k, chunk in enumerate(prompt.split(self.image_token)):
            if k:
                ids.append(IMAGE_PLACEHOLDER_ID)
            ids.extend(chunk.encode())
        return ids

    def embed(self, ids: list[list[int]], images: list[Image | None]) -> list[torch.Tensor]:
        out = []
        for seq, image in zip(ids, images, strict=True):
            parts = []
            for token in seq:
                if token == IMAGE_PLACEHOLDER_ID:
                    colour = torch.tensor(np.asarray(image, dtype=np.float32).mean((0, 1)) / 255.0)
                    feats = self.image_proj(colour.to(self.dtype)).view(4, 32)
                    parts.append(feats * 0 if self.ignore_image else feats)
                else:
                    parts.append(self.lm.embed_tokens(torch.tensor([token], device=self.device)))
            out.append(torch.cat(parts))
        return out

    def forward_embeds(self, inputs_embeds, attention_mask, *, output_hidden_states=False):
        out = self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.last_hidden_state
        if self.left_align:
            shifts = attention_mask.shape[1] - attention_mask.sum(1)
            hidden = torch.stack([torch.roll(h, int(k), dims=0) for h, k in zip(hidden, shifts, strict=True)])
        if self.dropout:
            hidden = torch.nn.functional.dropout(hidden, self.dropout, training=True)
        return out.hidden_states if output_hidden_states else hidden

    def set_attention(self, mode: str) -> None:
        self.lm.config.is_causal = mode == "causal"

    def num_image_tokens(self, image: Image) -> int:
        return 4


def toy_encoder(**backbone_options: object):
    """An mteb encoder over :class:`ToyBackbone` (meta of the tiny LaViDa, so results have a valid model name)."""
    import mteb
    from mteb.models.abs_encoder import AbsEncoder

    from mmeb_dllm.embed.embedder import Embedder
    from mmeb_dllm.embed.mteb_encoder import batch_items
    from mmeb_dllm.embed.recipe import EmbeddingRecipe

    class ToyEncoder(AbsEncoder):
        def __init__(self) -> None:
            self.recipe = EmbeddingRecipe(model="test/toy", checkpoint="toy", revision="0")
            self._embedder = Embedder(ToyBackbone(**backbone_options), self.recipe)
            self.mteb_model_meta = mteb.get_model_meta("lavida-embed-tiny")

        def encode(self, inputs, **kwargs):
            return np.concatenate([self._embedder.embed(batch_items(b), show_progress=False) for b in inputs])

    return ToyEncoder()
