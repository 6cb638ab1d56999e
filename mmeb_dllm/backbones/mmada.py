"""MMaDA (Gen-Verse/MMaDA) as an embedding backbone: MAGVIT-v2 image codes + LLaDA with an enlarged vocabulary.

An image becomes discrete tokens, not features: resize the short side (bicubic) → centre crop → [-1, 1] pixels →
MAGVIT-v2 codes → ids ``code + len(text tokenizer)``. Upstream's understanding layout (``inference_mmu.py``) puts the
image block in front of the chat-templated text::

    <|mmu|> <|soi|> image ids … <|eoi|> bos <|start_header_id|>user<|end_header_id|>\\n\\n text <|eot_id|> …

Inside the shared embedder the image travels as :data:`IMAGE_PLACEHOLDER_ID` at the start of the prompt ids
(:meth:`MmadaBackbone.tokenize`); :meth:`MmadaBackbone.embed` replaces it with the ids of the image block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image as PILImage

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID, AttentionMode, Backbone
from mmeb_dllm.backbones.lavida import load_tokenizer
from mmeb_dllm.backbones.llada import LladaLM, read_checkpoint_config, resolve_dtype
from mmeb_dllm.backbones.magvit import MagvitTokenizer
from mmeb_dllm.errors import CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PreTrainedTokenizerBase

MODEL_TYPE = "mmada"
VQ_FOLDER = "vq_model"
VQ_REPO = "showlab/magvitv2"
VQ_REVISION = "main"

# The real LLaDA/MMaDA vocabulary: the embedding has 126464 text rows, the tokenizer 126349 tokens (115 rows of
# padding), and upstream hard-codes its special ids. Tiny checkpoints with ``llm_vocab_size`` V shift every special
# id by 126464 - V (the golden fixtures' and our tiny builder's convention), so one rule serves both.
LLADA_VOCAB_SIZE = 126464
LLADA_TOKENIZER_PADDING = 115
MMU_ID, SOI_ID, EOI_ID, MASK_ID, EOS_ID = 126089, 126084, 126085, 126336, 126081
DEFAULT_NUM_VQ_TOKENS = 1024  # configs/mmada_demo.yaml: 512 px, 32 x 32 codes


@dataclass(frozen=True)
class MmuTokens:
    """Ids of the multimodal-understanding image block."""

    mmu: int
    soi: int
    eoi: int
    image_offset: int  # image id = VQ code + image_offset (= len(text tokenizer))

    def image_block(self, codes: Sequence[int]) -> list[int]:
        """``[<|mmu|>, <|soi|>, code + offset …, <|eoi|>]``."""
        return [self.mmu, self.soi, *(int(code) + self.image_offset for code in codes), self.eoi]


def llm_vocab_size(cfg: Mapping[str, Any]) -> int:
    """Text rows of the embedding (``llm_vocab_size``; LLaDA's 126464 when absent)."""
    return int(cfg.get("llm_vocab_size") or LLADA_VOCAB_SIZE)


def shifted_id(real_id: int, cfg: Mapping[str, Any]) -> int:
    """A real LLaDA special id moved into this checkpoint's text vocabulary (unchanged for the real models)."""
    return real_id - (LLADA_VOCAB_SIZE - llm_vocab_size(cfg))


def mmu_tokens(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None) -> MmuTokens:
    """Special ids (upstream's reserved-token mapping) and the image-id offset ``len(tokenizer)`` (upstream's rule;
    without a tokenizer: ``llm_vocab_size - 115``, which is ``len(tokenizer)`` for LLaDA's padded vocabulary)."""
    offset = len(tokenizer) if tokenizer is not None else llm_vocab_size(cfg) - LLADA_TOKENIZER_PADDING
    return MmuTokens(
        mmu=shifted_id(MMU_ID, cfg), soi=shifted_id(SOI_ID, cfg), eoi=shifted_id(EOI_ID, cfg), image_offset=offset
    )


def image_grid(cfg: Mapping[str, Any], downsample_factor: int, *, source: str) -> tuple[int, int]:
    """``(num_vq_tokens, resolution)``: the config's token count must be a square grid; pixels = side × factor."""
    tokens = int(cfg.get("num_vq_tokens") or DEFAULT_NUM_VQ_TOKENS)
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ConfigError(f"{source}: num_vq_tokens {tokens} is not a square number of image tokens")
    return tokens, side * downsample_factor


# ---------------------------------------------------------------------------------------------------------------------
# Image preprocessing (upstream training/utils.py::image_transform, without torchvision)
# ---------------------------------------------------------------------------------------------------------------------


def resize_crop_geometry(size: tuple[int, int], resolution: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((resized_w, resized_h), (left, top))`` for an image of ``size`` (w, h).

    Short side → ``resolution``, long side → ``int(resolution · long / short)``; the centre crop's offsets use
    Python's ``round`` (half to even), like torchvision.
    """
    width, height = size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resolution * long / short)
    resized = (resolution, new_long) if width <= height else (new_long, resolution)
    left = round((resized[0] - resolution) / 2)
    top = round((resized[1] - resolution) / 2)
    return resized, (left, top)


def preprocess_image(image: Image, resolution: int) -> torch.Tensor:
    """``(3, R, R)`` float32 pixels in [-1, 1]: bicubic resize of the short side, centre crop, ``(x/255 - .5)/.5``."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized, (left, top) = resize_crop_geometry(rgb.size, resolution)
    if resized != rgb.size:
        rgb = rgb.resize(resized, PILImage.Resampling.BICUBIC)
    cropped = rgb.crop((left, top, left + resolution, top + resolution))
    pixels = torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    return pixels.sub(0.5).div(0.5)


# ---------------------------------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------------------------------


def find_vq_dir(checkpoint_dir: Path) -> Path:
    """``<checkpoint>/vq_model/`` when present (fixture layout), else the ``showlab/magvitv2`` repository."""
    local = checkpoint_dir / VQ_FOLDER
    if local.is_dir():
        return local
    from mmeb_dllm.zoo import resolve_repo

    return resolve_repo(VQ_REPO, VQ_REVISION, purpose=f"the MAGVIT-v2 image tokenizer of {checkpoint_dir}")


class MmadaBackbone(Backbone):
    """MMaDA: :class:`MagvitTokenizer` (float32) + LLaDA body (``LlamaModel(is_causal=False)``), vocab incl. image ids.

    Stages for stage-by-stage checks: :meth:`preprocess` → ``vq.latents`` → ``vq.codes_from_latents`` →
    :meth:`input_ids` → :meth:`forward_embeds`.
    """

    default_attention: AttentionMode = "bidirectional"

    def __init__(
        self,
        cfg: Mapping[str, Any],
        language_model: LladaLM,
        vq: MagvitTokenizer,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        source: str = "config.json",
    ) -> None:
        """Wrap built modules for an upstream MMaDA ``config.json`` dict; checks that config, VQ and vocab agree."""
        super().__init__()
        self.language_model = language_model
        self.vq = vq
        self.tokenizer = tokenizer
        codebook = int(cfg.get("codebook_size") or vq.config.codebook_size)
        if codebook != vq.config.codebook_size:
            raise ConfigError(
                f"{source}: codebook_size {codebook} but the MAGVIT-v2 quantiser has {vq.config.codebook_size} codes "
                f"(codebook_dim {vq.config.codebook_dim}); the VQ model does not belong to this checkpoint"
            )
        self.num_vq_tokens, self.resolution = image_grid(cfg, vq.config.downsample_factor, source=source)
        self.tokens = mmu_tokens(cfg, tokenizer)
        rows = int(language_model.config.vocab_size)
        if self.tokens.image_offset + codebook > rows:
            raise CheckpointError(
                f"{source}: image ids reach {self.tokens.image_offset + codebook - 1} but the embedding has {rows} "
                f"rows; the text tokenizer ({self.tokens.image_offset} tokens) does not belong to this checkpoint"
            )
        mask = cfg.get("mask_token_id")
        self.mask_token_id = int(mask) if mask is not None else shifted_id(MASK_ID, cfg)
        pad = next((v for v in (cfg.get("pad_token_id"), cfg.get("eos_token_id")) if isinstance(v, int)), None)
        self.pad_token_id = pad if pad is not None else shifted_id(EOS_ID, cfg)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path,
        *,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
    ) -> MmadaBackbone:
        """Load an upstream MMaDA folder: ``config.json`` + LLaDA-layout safetensors (``ff_out`` LM head skipped),
        the tokenizer when present, and MAGVIT-v2 from ``vq_model/`` or ``showlab/magvitv2``.

        The VQ model stays float32 whatever ``dtype`` is. Missing or surplus tensors raise :class:`CheckpointError`
        naming the file and keys.
        """
        directory = Path(checkpoint_dir)
        cfg = read_checkpoint_config(directory)
        if cfg.get("model_type") != MODEL_TYPE:
            raise CheckpointError(
                f"{directory / 'config.json'}: model_type {cfg.get('model_type')!r} is not an MMaDA checkpoint "
                f"(expected {MODEL_TYPE!r}, e.g. Gen-Verse/MMaDA-8B-Base)"
            )
        language_model = LladaLM.from_pretrained(directory, dtype=resolve_dtype(dtype), device=device, lm_head=False)
        vq = MagvitTokenizer.from_pretrained(find_vq_dir(directory), device=device)
        model = cls(cfg, language_model, vq, load_tokenizer(directory), source=str(directory / "config.json"))
        return model.eval()

    # --- Backbone API ------------------------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return int(self.language_model.config.hidden_size)

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise CheckpointError(
                "this MMaDA checkpoint has no tokenizer files (tokenizer.json / tokenizer_config.json); copy the "
                "tokenizer of Gen-Verse/MMaDA-8B-Base (LLaDA's) into its folder"
            )
        return self.tokenizer

    def render_prompt(self, user_content: str) -> str:
        """The chat template of the text alone (generation prompt added), preceded by :attr:`image_token` when the
        content had one: upstream puts the image block in front of the templated text, never inside it."""
        has_image = self.image_token in user_content
        text = user_content.replace(self.image_token, "").strip()
        messages = [{"role": "user", "content": text}]
        rendered = self._require_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{self.image_token}{rendered}" if has_image else rendered

    def tokenize(self, prompt: str) -> list[int]:
        """Ids of a rendered prompt (its own bos, no extra special tokens); an image becomes one leading
        :data:`IMAGE_PLACEHOLDER_ID`."""
        has_image = self.image_token in prompt
        ids = self._require_tokenizer()(prompt.replace(self.image_token, ""), add_special_tokens=False).input_ids
        return [IMAGE_PLACEHOLDER_ID, *ids] if has_image else list(ids)

    def describe(self) -> dict[str, object]:
        """Image settings recorded with results: resize-crop resolution, code grid, id layout."""
        return {
            **super().describe(),
            "image_mode": "resize_short_side_bicubic+center_crop",
            "resolution": self.resolution,
            "num_vq_tokens": self.num_vq_tokens,
            "codebook_size": self.vq.config.codebook_size,
            "image_token_offset": self.tokens.image_offset,
            "image_block": "<|mmu|> <|soi|> codes <|eoi|> before the chat template",
        }

    def num_image_tokens(self, image: Image) -> int:
        """Positions of the image block: ``<|mmu|> <|soi|>`` + codes + ``<|eoi|>`` (any image size)."""
        return self.num_vq_tokens + 3

    # --- stages ------------------------------------------------------------------------------------------------------

    def preprocess(self, image: Image) -> torch.Tensor:
        """``(1, 3, R, R)`` float32 pixels (CPU) at the checkpoint's resolution."""
        return preprocess_image(image, self.resolution).unsqueeze(0)

    def image_codes(self, image: Image) -> list[int]:
        """The ``num_vq_tokens`` VQ codes of one image (encoded alone, so they never depend on batch companions)."""
        codes = self.vq.codes(self.preprocess(image))[0]
        if codes.numel() != self.num_vq_tokens:
            raise ConfigError(
                f"MAGVIT-v2 gave {codes.numel()} codes at {self.resolution} px but config.json num_vq_tokens is "
                f"{self.num_vq_tokens}"
            )
        return codes.tolist()

    def input_ids(self, ids: Sequence[int], codes: Sequence[int] | None) -> list[int]:
        """``ids`` with the placeholder replaced by the image block of ``codes`` (``None``: text only)."""
        if codes is None:
            return list(ids)
        position = list(ids).index(IMAGE_PLACEHOLDER_ID)
        return [*ids[:position], *self.tokens.image_block(codes), *ids[position + 1 :]]

    def embed(self, ids: list[list[int]], images: list[Image | None]) -> list[torch.Tensor]:
        """Token embeddings ``(L_i, D)`` of each sample's full id sequence (image block spliced at the placeholder)."""
        if len(ids) != len(images):
            raise DataError(f"embed got {len(ids)} token sequences but {len(images)} image slots")
        out = []
        for index, (sample, image) in enumerate(zip(ids, images, strict=True)):
            placeholders = sample.count(IMAGE_PLACEHOLDER_ID)
            if placeholders != (0 if image is None else 1):
                has = "an image" if image is not None else "no image"
                raise DataError(
                    f"sample {index} has {placeholders} image placeholder(s) ({IMAGE_PLACEHOLDER_ID}) but {has}; "
                    f"each sample needs exactly one {self.image_token} in its prompt iff it has an image"
                )
            full = self.input_ids(sample, self.image_codes(image) if image is not None else None)
            out.append(self.language_model.embed_tokens(torch.tensor(full, dtype=torch.long, device=self.device)))
        return out

    def forward_embeds(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Final hidden state ``(B, L, D)`` (or all ``n_layers + 1`` states) of right-padded embeddings."""
        out = self.language_model.model(
            inputs_embeds=inputs_embeds.to(self.dtype),
            attention_mask=attention_mask.to(inputs_embeds.device),
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            use_cache=False,
        )
        if output_hidden_states:
            return tuple(out.hidden_states)
        return out.last_hidden_state
