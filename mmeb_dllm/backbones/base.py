"""The contract between the shared embedder and one model family.

A backbone prepares its family's inputs (chat template, tokenisation, image features spliced into the token
embeddings) and runs its network. It knows nothing of mteb, tasks, pooling, batching or normalisation: those live in
:mod:`mmeb_dllm.embed`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PreTrainedTokenizerBase

IMAGE_PLACEHOLDER_ID = -200
"""Token id that marks where an image's features are spliced (LLaVA's ``IMAGE_TOKEN_INDEX``)."""

AttentionMode = Literal["causal", "bidirectional"]


@dataclass
class EmbeddedSample:
    """One sample ready for the language model.

    Attributes:
        embeds: ``(L, D)`` input embeddings, image features spliced in.
        position_ids: ``(..., L)`` position ids when the family needs its own (e.g. Qwen2-VL's 3-D M-RoPE ``(3, L)``);
            ``None`` means ``0 .. L-1``. The embedder right-pads them with zeros along the last axis.
    """

    embeds: torch.Tensor
    position_ids: torch.Tensor | None = None

ATTENTION_MODES: tuple[str, ...] = ("causal", "bidirectional")


class Backbone(nn.Module, ABC):
    """One model family: builds input embeddings from prompts and images and returns hidden states.

    Attributes:
        image_token: the text placeholder a rendered prompt uses where an image goes (e.g. ``"<image>"``).
        tokenizer: the family's tokenizer (``None`` only for weight-only checkpoints such as golden fixtures).
        mask_token_id: id of the diffusion mask token (``<|mdm_mask|>``), or ``None`` for autoregressive models.
        pad_token_id: id used to pad token sequences.
        default_attention: the attention the family was trained with.
    """

    image_token: str = "<image>"
    tokenizer: PreTrainedTokenizerBase | None
    mask_token_id: int | None
    pad_token_id: int
    default_attention: AttentionMode = "bidirectional"

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """Width of the hidden states returned by :meth:`forward_embeds`."""

    @abstractmethod
    def render_prompt(self, user_content: str) -> str:
        """Wrap one user turn in the family's chat template (system prompt, generation prompt).

        ``user_content`` already holds :attr:`image_token` where the image goes.
        """

    @abstractmethod
    def tokenize(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt, with :data:`IMAGE_PLACEHOLDER_ID` at each image position."""

    @abstractmethod
    def embed(self, ids: list[list[int]], images: list[Image | None]) -> list[torch.Tensor | EmbeddedSample]:
        """Input embeddings ``(L_i, D)`` per sample (or :class:`EmbeddedSample` with position ids), the image's
        features spliced at its placeholder.

        ``images[i]`` belongs to ``ids[i]``; a sample with a placeholder must have an image and vice versa.
        """

    @abstractmethod
    def forward_embeds(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the language model on right-padded ``(B, L, D)`` embeddings with a ``(B, L)`` 0/1 padding mask.

        ``position_ids`` (``(B, ..., L)``) is given only when :meth:`embed` returned samples with position ids.

        Returns the final hidden state ``(B, L, D)`` after the final norm, or, with ``output_hidden_states``,
        the tuple of all ``n_layers + 1`` hidden states (the last one equal to the final hidden state).
        Padded positions never influence real positions.
        """

    def set_attention(self, mode: AttentionMode) -> None:
        """Switch the language model between ``causal`` and ``bidirectional`` attention.

        The default flips ``is_causal`` on the config of ``self.language_model`` (stock transformers decoders read it
        when building their mask); a family without such a module overrides this.
        """
        from mmeb_dllm.errors import ConfigError

        if mode not in ATTENTION_MODES:
            raise ConfigError(f"attention {mode!r} is not supported; use one of {ATTENTION_MODES}")
        self.language_model.config.is_causal = mode == "causal"

    def describe(self) -> dict[str, object]:
        """Input settings worth recording with a result (image resolution / token budget, templates, ...)."""
        return {"class": type(self).__name__, "image_token": self.image_token, "hidden_size": self.hidden_size}

    def num_image_tokens(self, image: Image) -> int:
        """How many embedding positions an image takes (used to estimate sequence lengths for batching)."""
        return 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
