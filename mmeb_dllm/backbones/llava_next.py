"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``) as an embedding backbone, plus the base class every
autoregressive VLM family here shares (:class:`HFVisionLanguageBackbone`; Qwen2-VL lives in ``qwen2_vl``).

Both follow VLM2Vec's conventions (TIGER-AI-Lab/VLM2Vec, V1 ``eval.py``):

- the prompt is the raw MMEB string with the family's image token where MMEB has ``<|image_1|>``; no chat template
  (:meth:`render_prompt` is the identity);
- the whole prompt is tokenised in one call, as the HF processor does (special tokens such as ``<s>`` included);
- every image is first squashed to 1344 × 1344 (``--image_resolution high``, ``process_image`` in VLM2Vec V1), then
  given to the checkpoint's own image processor (the PIL variants: no torchvision);
- the hidden state is the last layer after the final norm; pooling and L2 normalisation happen in the shared
  embedder (last real token).

Padding: the shared embedder right-pads and passes explicit positions, so a padded batch gives the vectors of the
unpadded sequences. VLM2Vec left-pads LLaVA-NeXT batches without position ids, which shifts every padded sample's
positions by its pad count; its batch-of-one vectors are what this backbone reproduces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID, AttentionMode, Backbone
from mmeb_dllm.backbones.llada import read_checkpoint_config, resolve_dtype
from mmeb_dllm.errors import CheckpointError, DataError

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

VLM2VEC_IMAGE_SIZE = (1344, 1344)
"""(W, H) every image is resized to before the image processor (VLM2Vec ``--image_resolution high``)."""

LLAVA_NEXT_IMAGE_TOKEN = "<image>"

# transformers-4.x key layout of LLaVA-NeXT adapters (relative to the ForConditionalGeneration model) -> 5.x layout.
# First match wins, so the LM head comes before the language model.
LLAVA_NEXT_LEGACY_KEYS: dict[str, str] = {
    r"^language_model\.lm_head": "lm_head",
    r"^language_model\.model": "model.language_model",
    r"^vision_tower": "model.vision_tower",
    r"^multi_modal_projector": "model.multi_modal_projector",
    r"^image_newline": "model.image_newline",
}


def check_placeholders(ids: Sequence[Sequence[int]], images: Sequence[Image | None], image_token: str) -> None:
    """Each sample needs exactly one image placeholder iff it has an image; else :class:`DataError` names it."""
    if len(ids) != len(images):
        raise DataError(f"embed got {len(ids)} token sequences but {len(images)} image slots")
    for index, (sample, image) in enumerate(zip(ids, images, strict=True)):
        placeholders = list(sample).count(IMAGE_PLACEHOLDER_ID)
        if placeholders != (0 if image is None else 1):
            has = "an image" if image is not None else "no image"
            raise DataError(
                f"sample {index} has {placeholders} image placeholder(s) ({IMAGE_PLACEHOLDER_ID}) but {has}; "
                f"each sample needs exactly one {image_token} in its prompt iff it has an image"
            )


def load_hf_model(model_class: type[PreTrainedModel], directory: Path, dtype: torch.dtype) -> PreTrainedModel:
    """``model_class.from_pretrained`` (safetensors, stock transformers, no remote code) with every weight filled.

    A tensor the model needs but the checkpoint lacks raises :class:`CheckpointError` naming the keys; stored tensors
    the model does not use are only logged.
    """
    try:
        model, info = model_class.from_pretrained(str(directory), dtype=dtype, output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"{model_class.__name__} cannot load {directory} ({type(exc).__name__}: {exc}); the folder needs the "
            f"hub files config.json and *.safetensors of a {model_class.__name__} checkpoint"
        ) from None
    if info["missing_keys"] or info["mismatched_keys"]:
        missing = sorted(info["missing_keys"]) + [str(key) for key in info["mismatched_keys"]]
        raise CheckpointError(
            f"checkpoint {directory} lacks {len(missing)} tensor(s) {model_class.__name__} needs (or has them with "
            f"the wrong shape), e.g. {missing[:5]}; re-download the checkpoint"
        )
    if info["unexpected_keys"]:
        logger.warning("%s: %d stored tensor(s) unused, e.g. %s", directory, len(info["unexpected_keys"]),
                       sorted(info["unexpected_keys"])[:5])
    return model.eval()


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The checkpoint's own tokenizer with the stock classes (never remote code)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, ImportError, AttributeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"tokenizer files in {directory} cannot be loaded ({type(exc).__name__}: {exc}); the folder needs the "
            f"hub's tokenizer.json / tokenizer_config.json"
        ) from None


def token_id(tokenizer: PreTrainedTokenizerBase, token: str, expected: int | None, directory: Path) -> int:
    """Id of a special token, checked against the id config.json declares for it."""
    found = tokenizer.convert_tokens_to_ids(token)
    if found is None or found == tokenizer.unk_token_id or (expected is not None and found != expected):
        raise CheckpointError(
            f"tokenizer of {directory} maps {token!r} to {found}, but config.json says {expected}; the tokenizer "
            f"files do not belong to this checkpoint"
        )
    return int(found)


class HFVisionLanguageBackbone(Backbone):
    """A stock transformers ``*ForConditionalGeneration`` VLM used the VLM2Vec way (see the module docstring).

    Attributes:
        model: the whole HF model (``model.model.language_model`` is the decoder the embedder runs).
        image_processor: the checkpoint's PIL image processor.
        image_token_id: vocabulary id of :attr:`image_token`.
        image_resize: ``(W, H)`` every image is resized to first, or ``None`` for the image's own size.
        adapter_target / adapter_key_mapping: where :func:`mmeb_dllm.zoo.merge_adapter` attaches a peft adapter (the
            whole HF model, as VLM2Vec trains it) and how keys of adapters saved with transformers 4.x are renamed.
    """

    default_attention: AttentionMode = "causal"
    mask_token_id = None
    adapter_target = "model"
    adapter_key_mapping: ClassVar[dict[str, str] | None] = None
    model_types: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any,
        image_token_id: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_token_id = image_token_id
        self.image_resize: tuple[int, int] | None = VLM2VEC_IMAGE_SIZE
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)

    # --- loading -----------------------------------------------------------------------------------------------------

    @classmethod
    def model_class(cls) -> type[PreTrainedModel]:
        raise NotImplementedError

    @classmethod
    def load_image_processor(cls, directory: Path) -> Any:
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path,
        *,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
    ) -> HFVisionLanguageBackbone:
        """Load a hub checkpoint folder: config.json, safetensors weights, tokenizer and image-processor files."""
        directory = Path(checkpoint_dir)
        model_type = read_checkpoint_config(directory).get("model_type")
        if model_type not in cls.model_types:
            raise CheckpointError(
                f"{directory / 'config.json'}: model_type {model_type!r} is not a {cls.__name__} checkpoint; "
                f"expected one of {cls.model_types}"
            )
        tokenizer = load_tokenizer(directory)
        image_processor = cls.load_image_processor(directory)
        model = load_hf_model(cls.model_class(), directory, resolve_dtype(dtype))
        return cls.build(model.to(device), tokenizer, image_processor, directory)

    @classmethod
    def build(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, image_processor: Any, directory: Path
    ) -> HFVisionLanguageBackbone:
        raise NotImplementedError

    # --- Backbone API ------------------------------------------------------------------------------------------------

    @property
    def language_model(self) -> torch.nn.Module:
        """The decoder (``LlamaModel``-like) the embedder runs on spliced embeddings."""
        return self.model.model.language_model

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def render_prompt(self, user_content: str) -> str:
        """VLM2Vec feeds the raw string: no chat template, no system prompt."""
        return user_content

    def tokenize(self, prompt: str) -> list[int]:
        """Ids of the whole prompt as the HF processor makes them, :data:`IMAGE_PLACEHOLDER_ID` for the image token."""
        ids = self.tokenizer(prompt).input_ids
        return [IMAGE_PLACEHOLDER_ID if token == self.image_token_id else int(token) for token in ids]

    def describe(self) -> dict[str, object]:
        """Input settings recorded with results: raw prompt, image resize, the image processor's settings."""
        return {
            **super().describe(),
            "prompt": "raw MMEB string, no chat template (VLM2Vec)",
            "image_resize": list(self.image_resize) if self.image_resize is not None else None,
            "image_processor": type(self.image_processor).__name__,
        }

    def prepare_image(self, image: Image) -> Image:
        """RGB, squashed to :attr:`image_resize` when set (PIL's default filter, as VLM2Vec)."""
        image = image.convert("RGB") if image.mode != "RGB" else image
        return image.resize(self.image_resize) if self.image_resize is not None else image

    def text_embeddings(self, ids: Sequence[int]) -> torch.Tensor:
        """``(L, D)`` token embeddings; placeholders get row 0 (they are replaced by image features)."""
        tensor = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        return self.model.get_input_embeddings()(tensor.clamp(min=0))

    @staticmethod
    def splice(text: torch.Tensor, ids: Sequence[int], image_tokens: torch.Tensor | None) -> torch.Tensor:
        """``text`` with the placeholder row replaced by ``image_tokens`` (``(T, D)``)."""
        if image_tokens is None:
            return text
        position = list(ids).index(IMAGE_PLACEHOLDER_ID)
        return torch.cat([text[:position], image_tokens.to(text.dtype), text[position + 1 :]])

    def run_language_model(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None,
        output_hidden_states: bool,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.language_model(
            inputs_embeds=inputs_embeds.to(self.dtype),
            attention_mask=attention_mask.to(inputs_embeds.device),
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            use_cache=False,
        )
        if output_hidden_states:
            assert out.hidden_states is not None
            return tuple(out.hidden_states)
        return out.last_hidden_state


class LlavaNextBackbone(HFVisionLanguageBackbone):
    """LLaVA-NeXT (e.g. ``llava-hf/llava-v1.6-mistral-7b-hf``, ``TIGER-Lab/VLM2Vec-LLaVa-Next``).

    Image path = the stock model's: anyres tiles (base view first) → CLIP layer ``vision_feature_layer`` →
    projector → unpadded grid with ``image_newline`` rows (``get_image_features``), spliced at ``<image>``.
    """

    image_token = LLAVA_NEXT_IMAGE_TOKEN
    adapter_key_mapping = LLAVA_NEXT_LEGACY_KEYS
    model_types = ("llava_next",)

    @classmethod
    def model_class(cls) -> type[PreTrainedModel]:
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration

    @classmethod
    def load_image_processor(cls, directory: Path) -> Any:
        from transformers import LlavaNextImageProcessorPil

        return _load_image_processor(LlavaNextImageProcessorPil, directory)

    @classmethod
    def build(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, image_processor: Any, directory: Path
    ) -> LlavaNextBackbone:
        image_id = token_id(tokenizer, LLAVA_NEXT_IMAGE_TOKEN, model.config.image_token_id, directory)
        return cls(model, tokenizer, image_processor, image_id)

    def describe(self) -> dict[str, object]:
        config = self.model.config
        return {
            **super().describe(),
            "image_mode": "anyres",
            "tile_size": int(config.vision_config.image_size),
            "grid_pinpoints": [list(p) for p in config.image_grid_pinpoints],
            "vision_feature_layer": config.vision_feature_layer,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
        }

    def num_image_tokens(self, image: Image) -> int:
        """Positions one image takes (base view + unpadded grid + newlines), as the HF processor counts them."""
        from transformers import LlavaNextProcessor

        width, height = self.image_resize or image.size
        vision = self.model.config.vision_config
        # the CLS token the "default" strategy drops is not counted: no additional tokens
        counter = LlavaNextProcessor(
            image_processor=self.image_processor, tokenizer=self.tokenizer, patch_size=vision.patch_size,
            vision_feature_select_strategy=self.model.config.vision_feature_select_strategy,
            num_additional_image_tokens=0,
        )
        return int(counter._get_number_of_features(height, width, vision.image_size, vision.image_size))

    def image_features(self, images: Sequence[Image]) -> list[torch.Tensor]:
        """``(T_i, D)`` image tokens per image (tiles of all images through the tower as one batch)."""
        batch = self.image_processor(images=[self.prepare_image(image) for image in images], return_tensors="pt")
        vision_dtype = next(self.model.model.vision_tower.parameters()).dtype
        out = self.model.model.get_image_features(
            batch["pixel_values"].to(self.device, vision_dtype), batch["image_sizes"].to(self.device)
        )
        return list(out.pooler_output)

    def embed(self, ids: list[list[int]], images: list[Image | None]) -> list[torch.Tensor]:
        """``(L_i, D)`` input embeddings per sample, image tokens spliced at the placeholder."""
        check_placeholders(ids, images, self.image_token)
        present = [image for image in images if image is not None]
        features = iter(self.image_features(present) if present else [])
        return [
            self.splice(self.text_embeddings(sample), sample, next(features) if image is not None else None)
            for sample, image in zip(ids, images, strict=True)
        ]

    def forward_embeds(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Decoder states of right-padded embeddings (positions ``0 .. L-1``, as an unpadded sequence gets)."""
        return self.run_language_model(inputs_embeds, attention_mask, position_ids, output_hidden_states)


def _load_image_processor(processor_class: type, directory: Path) -> Any:
    if not any((directory / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise CheckpointError(
            f"{directory} has no preprocessor_config.json: copy the image-processor config of the original hub "
            f"checkpoint into the folder"
        )
    try:
        return processor_class.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"image-processor config in {directory} cannot be read by {processor_class.__name__} "
            f"({type(exc).__name__}: {exc})"
        ) from None


def parameter_count(config: Mapping[str, Any], model_class: type[PreTrainedModel] | None = None) -> int:
    """Parameters of the model a ``config.json`` dict describes, built on the meta device (no memory, no weights)."""
    from transformers import AutoConfig, LlavaNextForConditionalGeneration

    fields = {key: value for key, value in config.items() if key not in {"architectures", "model_type"}}
    hf_config = AutoConfig.for_model(str(config["model_type"]), **fields)
    cls = model_class or LlavaNextForConditionalGeneration
    with torch.device("meta"):
        model = cls(hf_config)
    return sum(parameter.numel() for parameter in model.parameters())
