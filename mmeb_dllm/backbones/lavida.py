"""LaViDa (LLaDA or Dream language model) as an embedding backbone, rebuilt from stock transformers classes.

Image path, as upstream runs it: anyres views (base view first) → SigLIP without its last layer, features before
``post_layernorm`` → ``mlp2x_gelu`` projector → bilinear 2-D pooling of every view → merge (base tokens, then the
unpadded grid with an ``image_newline`` after every row) → spliced at the ``-200`` placeholder of the prompt ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from mmeb_dllm.backbones import anyres
from mmeb_dllm.backbones.base import IMAGE_PLACEHOLDER_ID, AttentionMode, Backbone
from mmeb_dllm.backbones.dream import DreamLM, dream_config_to_qwen2, dream_mask_token_id
from mmeb_dllm.backbones.llada import (
    LLADA_PREFIX,
    DiffusionLM,
    KeyMap,
    LladaLM,
    SafetensorsCheckpoint,
    check_unexpected,
    empty_modules,
    llada_config_to_llama,
    load_strict,
    read_checkpoint_config,
    read_json,
    resolve_dtype,
)
from mmeb_dllm.errors import CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PreTrainedTokenizerBase

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
LM_FAMILIES: dict[str, str] = {"llava_llada": "llada", "llava_dream": "dream"}
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
PROJECTOR_PREFIX = "model.mm_projector."
NEWLINE_KEY = "model.image_newline"
LM_HEAD_KEYS = {
    "llada": (f"{LLADA_PREFIX}ff_out.weight", f"{LLADA_PREFIX}ff_out.bias"),
    "dream": ("lm_head.weight",),
}
EMBEDDING_KEYS = {  # stored token embedding and the config field that sizes it
    "llada": (f"{LLADA_PREFIX}wte.weight", "embedding_size"),
    "dream": ("model.embed_tokens.weight", "vocab_size"),
}
MASK_TOKENS = {"llada": "<|mdm_mask|>", "dream": "<|mask|>"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

# google/siglip-so400m-patch14-384, used when the checkpoint has no local copy of the tower's config
SIGLIP_SO400M: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}
_SIGLIP_FIELDS = tuple(SIGLIP_SO400M)
_MLP_GELU = re.compile(r"mlp(\d+)x_gelu")


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint pieces
# ---------------------------------------------------------------------------------------------------------------------


def lm_family(cfg: Mapping[str, Any], config_path: Path) -> str:
    """``"llada"`` or ``"dream"`` from config.json's ``model_type``."""
    model_type = cfg.get("model_type")
    if model_type not in LM_FAMILIES:
        raise CheckpointError(
            f"{config_path}: model_type {model_type!r} is not a LaViDa checkpoint; "
            f"expected one of {sorted(LM_FAMILIES)}"
        )
    return LM_FAMILIES[model_type]


def vision_settings(checkpoint_dir: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The vision tower's architecture as upstream sees it (full layer count, before deleting the last layer).

    Read from ``<checkpoint>/<mm_vision_tower>/config.json`` when that folder exists (a ``siglip`` config's
    ``vision_config`` is used), else the SigLIP so400m defaults. Includes ``image_mean``/``image_std``.
    """
    settings: dict[str, Any] = {**SIGLIP_SO400M, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    tower = cfg.get("mm_vision_tower")
    if isinstance(tower, str) and tower and (checkpoint_dir / tower).is_dir():
        local = read_json(checkpoint_dir / tower / "config.json", what="vision tower config")
        local = local.get("vision_config", local)
        settings.update({key: value for key, value in local.items() if key in settings and value is not None})
    if settings["num_hidden_layers"] < 2:
        raise ConfigError(f"vision tower of {checkpoint_dir} has {settings['num_hidden_layers']} layers; need >= 2")
    return settings


def siglip_config(settings: Mapping[str, Any]) -> SiglipVisionConfig:
    """``SiglipVisionConfig`` of the tower LaViDa runs: the last encoder layer deleted, no pooling head."""
    fields = {key: settings[key] for key in _SIGLIP_FIELDS}
    fields["num_hidden_layers"] -= 1
    return SiglipVisionConfig(**fields, vision_use_head=False)


def build_projector(cfg: Mapping[str, Any], vision_width: int, lm_width: int) -> nn.Sequential:
    """``mm_projector`` as upstream builds it (``linear`` or ``mlp{N}x_gelu``, exact erf GELU)."""
    kind = cfg.get("mm_projector_type", "linear")
    mm_hidden = cfg.get("mm_hidden_size", vision_width)
    if mm_hidden != vision_width:
        raise ConfigError(f"config.json mm_hidden_size {mm_hidden} differs from the vision tower width {vision_width}")
    if kind == "linear":
        return nn.Sequential(nn.Linear(vision_width, lm_width))
    match = _MLP_GELU.fullmatch(str(kind))
    if not match:
        raise ConfigError(f"config.json mm_projector_type {kind!r} is not supported; use 'linear' or 'mlp2x_gelu'")
    layers: list[nn.Module] = [nn.Linear(vision_width, lm_width)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(lm_width, lm_width)]
    return nn.Sequential(*layers)


def check_image_settings(cfg: Mapping[str, Any]) -> None:
    """Refuse image settings whose upstream code path is not reproduced here."""
    supported = {"image_aspect_ratio": "anyres", "mm_patch_merge_type": "spatial_unpad"}
    for field, wanted in supported.items():
        if cfg.get(field, wanted) != wanted:
            raise ConfigError(f"config.json {field} = {cfg[field]!r} is not supported (only {wanted!r})")
    if cfg.get("mm_spatial_pool_mode", "bilinear") not in anyres.POOL_MODES:
        raise ConfigError(
            f"config.json mm_spatial_pool_mode = {cfg['mm_spatial_pool_mode']!r} is not supported; "
            f"use one of {anyres.POOL_MODES}"
        )


def load_tokenizer(checkpoint_dir: Path) -> PreTrainedTokenizerBase | None:
    """The checkpoint's own tokenizer, or ``None`` when it ships none (weight-only fixtures).

    A tokenizer whose class is remote code (``auto_map``, e.g. Dream's) is read from ``tokenizer.json`` with the
    stock fast tokenizer instead: remote code is never run.
    """
    if not any((checkpoint_dir / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer, PreTrainedConfig, PreTrainedTokenizerFast

    config_path = checkpoint_dir / "tokenizer_config.json"
    remote = config_path.is_file() and "auto_map" in read_json(config_path, what="tokenizer config")
    try:
        if remote:
            return PreTrainedTokenizerFast.from_pretrained(str(checkpoint_dir))
        # a blank model config: config.json is upstream's LaViDa config, which transformers does not know
        return AutoTokenizer.from_pretrained(str(checkpoint_dir), config=PreTrainedConfig())
    except (OSError, ValueError, ImportError, AttributeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"tokenizer files in {checkpoint_dir} cannot be loaded ({type(exc).__name__}: {exc}); they need a "
            f"tokenizer.json (fast tokenizer) or a tokenizer class that ships with transformers"
        ) from None


def with_stored_vocab(cfg: Mapping[str, Any], checkpoint: SafetensorsCheckpoint) -> dict[str, Any]:
    """``cfg`` with the vocabulary size of the stored token embedding.

    Upstream's loader calls ``resize_token_embeddings(len(tokenizer))``, so a saved embedding table may have fewer
    rows than config.json's (padded) size; the weights are authoritative for this one dimension.
    """
    family = lm_family(cfg, checkpoint.directory / "config.json")
    key, field = EMBEDDING_KEYS[family]
    shape = checkpoint.shape(key)
    if shape is None or len(shape) != 2:
        return dict(cfg)
    return {**cfg, field: shape[0]}


def join_image_chunks(chunks: Sequence[Sequence[int]], bos_token_id: int | None) -> list[int]:
    """Token ids of prompt chunks (split at ``<image>``) joined with :data:`IMAGE_PLACEHOLDER_ID`, like upstream.

    Upstream's ``tokenizer_image_token`` quirk is kept: when the first chunk starts with bos, the first token of every
    later chunk is dropped (it assumes each chunk starts with bos), e.g. the ``\\n`` right after ``<image>``.
    """
    offset = 1 if chunks and chunks[0] and bos_token_id is not None and chunks[0][0] == bos_token_id else 0
    ids: list[int] = list(chunks[0][:offset]) if chunks else []
    for index, chunk in enumerate(chunks):
        if index > 0:
            ids.append(IMAGE_PLACEHOLDER_ID)
        ids.extend(chunk[offset:])
    return ids


# ---------------------------------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------------------------------


class LavidaBackbone(Backbone):
    """LaViDa: SigLIP tower + projector + anyres glue + LLaDA (``LlamaModel``) or Dream (``Qwen2Model``) body.

    Build with :meth:`from_pretrained`. The stages are exposed for stage-by-stage checks: :meth:`preprocess`,
    :meth:`vision_features`, :meth:`project_and_pool`, :meth:`merge_image_features`, :meth:`image_embeddings`.
    """

    default_attention: AttentionMode = "bidirectional"

    def __init__(
        self,
        cfg: Mapping[str, Any],
        vision: Mapping[str, Any],
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        """Modules for an upstream ``config.json`` dict and the tower settings of :func:`vision_settings`.

        Parameters are left as constructed (random or uninitialised); :meth:`from_pretrained` loads them.
        """
        super().__init__()
        check_image_settings(cfg)
        self.family = lm_family(cfg, Path("config.json"))
        self.tokenizer = tokenizer
        self.language_model = self._build_language_model(cfg)
        self.vision_tower = SiglipVisionModel(siglip_config(vision))
        tower_config = self.vision_tower.config
        self.mm_projector = build_projector(cfg, tower_config.hidden_size, self.hidden_size)
        self.image_newline = nn.Parameter(torch.empty(self.hidden_size))
        self.image_mean = tuple(float(v) for v in vision["image_mean"])
        self.image_std = tuple(float(v) for v in vision["image_std"])
        self.tile_size = int(tower_config.image_size)
        self.patches_per_side = tower_config.image_size // tower_config.patch_size
        self.pinpoints = anyres.parse_pinpoints(cfg.get("image_grid_pinpoints"))
        self.pool_mode = str(cfg.get("mm_spatial_pool_mode", "bilinear"))
        self.mask_token_id = self._mask_token_id(cfg, tokenizer)
        self.pad_token_id = self._pad_token_id(cfg, tokenizer)

    def _build_language_model(self, cfg: Mapping[str, Any]) -> DiffusionLM:
        if self.family == "llada":
            return LladaLM(llada_config_to_llama(cfg), lm_head=False, include_bias=bool(cfg.get("include_bias")))
        return DreamLM(dream_config_to_qwen2(cfg), lm_head=False)

    def _mask_token_id(self, cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None) -> int | None:
        if self.family == "dream":
            return dream_mask_token_id(cfg, tokenizer)
        if cfg.get("mask_token_id") is not None:
            return int(cfg["mask_token_id"])
        if tokenizer is not None and MASK_TOKENS["llada"] in tokenizer.get_vocab():
            return int(tokenizer.convert_tokens_to_ids(MASK_TOKENS["llada"]))
        return None

    @staticmethod
    def _pad_token_id(cfg: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None) -> int:
        for candidate in (
            cfg.get("pad_token_id"),
            tokenizer.pad_token_id if tokenizer is not None else None,
            cfg.get("eos_token_id"),
        ):
            if isinstance(candidate, int):
                return candidate
        return 0

    # --- loading -----------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path,
        *,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
    ) -> LavidaBackbone:
        """Load an upstream LaViDa checkpoint folder (``config.json``, safetensors weights, optional tokenizer).

        ``model_type`` picks the language model (``llava_llada`` → LLaDA, ``llava_dream`` → Dream). Every
        parameter must be filled and every stored tensor used (the LM head and the tower's deleted last layer
        excepted), else :class:`CheckpointError` names the keys and the file.
        """
        directory = Path(checkpoint_dir)
        cfg = read_checkpoint_config(directory)
        lm_family(cfg, directory / "config.json")
        vision = vision_settings(directory, cfg)
        checkpoint = SafetensorsCheckpoint(directory)
        cfg = with_stored_vocab(cfg, checkpoint)
        tokenizer = load_tokenizer(directory)
        with empty_modules(resolve_dtype(dtype), device):
            model = cls(cfg, vision, tokenizer)
        model.load_checkpoint(checkpoint, what=f"LaViDa checkpoint {directory}")
        return model.eval()

    def key_map(self) -> KeyMap:
        """Upstream checkpoint key of every tensor of :meth:`state_dict`."""
        if isinstance(self.language_model, LladaLM):
            lm_map = self.language_model.key_map(LLADA_PREFIX)
        else:
            lm_map = self.language_model.key_map()
        vision = {key: VISION_PREFIX + key for key in self.vision_tower.state_dict()}
        projector = {key: PROJECTOR_PREFIX + key for key in self.mm_projector.state_dict()}
        optional = frozenset(value for value in vision.values() if ".post_layernorm." in value)  # never used
        return (
            lm_map.prefixed("language_model.")
            | KeyMap(vision, optional).prefixed("vision_tower.")
            | KeyMap(projector).prefixed("mm_projector.")
            | KeyMap({"image_newline": NEWLINE_KEY})
        )

    def ignorable_keys(self, keys: Sequence[str]) -> set[str]:
        """Stored tensors upstream does not use either: the LM head, the tower's deleted last layer, its head."""
        deleted_layer = f"{VISION_PREFIX}encoder.layers.{self.vision_tower.config.num_hidden_layers}."
        return {
            key
            for key in keys
            if key in LM_HEAD_KEYS[self.family]
            or key.startswith(deleted_layer)
            or key.startswith(f"{VISION_PREFIX}head.")
        }

    def load_checkpoint(self, checkpoint: SafetensorsCheckpoint, *, what: str) -> None:
        """Fill every parameter from ``checkpoint`` (strict; see :meth:`from_pretrained`)."""
        key_map = self.key_map()
        load_strict(self, key_map, checkpoint, what=what)
        stored = set(checkpoint.names())
        check_unexpected(checkpoint, stored, key_map.checkpoint_keys() | self.ignorable_keys(sorted(stored)), what=what)

    # --- Backbone API ------------------------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return int(self.language_model.config.hidden_size)

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise CheckpointError(
                "this LaViDa checkpoint has no tokenizer files (tokenizer.json / tokenizer_config.json); copy the "
                "tokenizer of the original checkpoint into its folder"
            )
        return self.tokenizer

    def render_prompt(self, user_content: str) -> str:
        """The tokenizer's chat template with LaViDa's system prompt and the generation prompt."""
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_content}]
        return self._require_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def tokenize(self, prompt: str) -> list[int]:
        """Ids of a rendered prompt, ``-200`` at each ``<image>`` (upstream ``tokenizer_image_token``, quirk kept)."""
        tokenizer = self._require_tokenizer()
        chunks = [tokenizer(chunk, add_special_tokens=False).input_ids for chunk in prompt.split(self.image_token)]
        return join_image_chunks(chunks, tokenizer.bos_token_id)

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "image_mode": "anyres",
            "tile_size": self.tile_size,
            "grid_pinpoints": [list(p) for p in self.pinpoints],
            "pool_mode": self.pool_mode,
            "system_prompt_sha256": hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:16],
        }

    def num_image_tokens(self, image: Image) -> int:
        """Embedding positions one image takes (base view + unpadded grid with newlines), without running it."""
        side = anyres.pooled_side(self.patches_per_side, self.pool_mode)
        return anyres.count_image_tokens(image.size, self.pinpoints, self.tile_size, side)

    # --- image stages ------------------------------------------------------------------------------------------------

    def preprocess(self, image: Image) -> torch.Tensor:
        """``(1 + tiles, 3, S, S)`` float32 pixel values (CPU), base view first; ``S`` = the tower's image size."""
        return anyres.preprocess_anyres(image, self.pinpoints, self.tile_size, self.image_mean, self.image_std)

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(N, patches, C)``: output of the last kept SigLIP layer, before ``post_layernorm``."""
        pixels = pixel_values.to(device=self.device, dtype=self.vision_tower.dtype)
        return self.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]

    def project_and_pool(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, pooled², D)``: projector, then 2-D pooling (stride 2) of every view."""
        projected = self.mm_projector(features.to(device=self.device, dtype=self.mm_projector[0].weight.dtype))
        return anyres.pool_2d(projected, self.pool_mode)

    def merge_image_features(self, pooled: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """``(T, D)`` image tokens from one image's pooled views; ``image_size`` is ``(W, H)``."""
        grid = anyres.grid_shape(image_size, self.pinpoints, self.tile_size)
        return anyres.merge_anyres(pooled, image_size, grid, self.image_newline)

    def image_embeddings(self, image: Image) -> torch.Tensor:
        """``(T, D)`` tokens of one image (all stages)."""
        return self.images_embeddings([image])[0]

    def images_embeddings(self, images: Sequence[Image]) -> list[torch.Tensor]:
        """Image tokens of several images, their views run through the tower as one batch."""
        if not images:
            return []
        pixels = [self.preprocess(image) for image in images]
        pooled = self.project_and_pool(self.vision_features(torch.cat(pixels)))
        parts = pooled.split([p.shape[0] for p in pixels])
        return [self.merge_image_features(part, image.size) for part, image in zip(parts, images, strict=True)]

    # --- text + splice -----------------------------------------------------------------------------------------------

    def splice(self, ids: Sequence[int], image_tokens: torch.Tensor | None) -> torch.Tensor:
        """``(L, D)`` embeddings of ``ids`` with ``image_tokens`` in place of the (single) placeholder."""
        ids_tensor = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        text = self.language_model.embed_tokens(ids_tensor.clamp(min=0))
        if image_tokens is None:
            return text
        position = list(ids).index(IMAGE_PLACEHOLDER_ID)
        return torch.cat([text[:position], image_tokens.to(text.dtype), text[position + 1 :]])

    def embed(self, ids: list[list[int]], images: list[Image | None]) -> list[torch.Tensor]:
        """Input embeddings ``(L_i, D)`` per sample, image tokens spliced at the placeholder."""
        if len(ids) != len(images):
            raise DataError(f"embed got {len(ids)} token sequences but {len(images)} image slots")
        for index, (sample, image) in enumerate(zip(ids, images, strict=True)):
            placeholders = sample.count(IMAGE_PLACEHOLDER_ID)
            if placeholders != (0 if image is None else 1):
                has = "an image" if image is not None else "no image"
                raise DataError(
                    f"sample {index} has {placeholders} image placeholder(s) ({IMAGE_PLACEHOLDER_ID}) but {has}; "
                    f"each sample needs exactly one {self.image_token} in its prompt iff it has an image"
                )
        tokens = iter(self.images_embeddings([image for image in images if image is not None]))
        return [
            self.splice(sample, next(tokens) if image is not None else None)
            for sample, image in zip(ids, images, strict=True)
        ]

    def forward_embeds(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        output_hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Final hidden state ``(B, L, D)`` (or all ``n_layers + 1`` states) of right-padded embeddings."""
        out = self.language_model(
            inputs_embeds=inputs_embeds.to(self.dtype),
            attention_mask=attention_mask.to(inputs_embeds.device),
            output_hidden_states=output_hidden_states,
        )
        if output_hidden_states:
            assert out.hidden_states is not None
            return out.hidden_states
        return out.last_hidden_state
