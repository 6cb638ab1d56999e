"""The model zoo: declared models (``models.toml``), backbone families, and checkpoint resolution.

Adding a model family = one backbone file + one entry in :data:`FAMILIES`; adding a checkpoint of a known family =
one ``[[model]]`` entry in ``models.toml``. Families are imported lazily ("module:Class"), so reading the zoo costs
no torch import.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from mmeb_dllm.errors import CheckpointError, ConfigError

FAMILIES: dict[str, str] = {
    "lavida": "mmeb_dllm.backbones.lavida:LavidaBackbone",
    "mmada": "mmeb_dllm.backbones.mmada:MmadaBackbone",
    "llava_next": "mmeb_dllm.backbones.llava_next:LlavaNextBackbone",
    "qwen2_vl": "mmeb_dllm.backbones.qwen2_vl:Qwen2VLBackbone",
    "phi3v": "mmeb_dllm.backbones.phi3v:Phi3VBackbone",
}
TINY_PREFIX = "tiny:"
ORG = "mmeb-dllm"


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: where its weights live and its default embedding recipe."""

    name: str
    aliases: tuple[str, ...]
    family: str
    checkpoint: str
    revision: str
    release_date: str
    n_parameters: int
    embed_dim: int
    max_tokens: int
    license: str
    reference: str
    pooling: str = "last"
    attention: str = "default"
    image_resolution: str = "native"
    needs: str = ""
    notes: str = ""
    # a peft adapter merged into the backbone at load (hub id or "tiny:<variant>", resolved like `checkpoint`)
    adapter: str = ""
    adapter_revision: str = "main"
    # non-empty: the model is registered but cannot be loaded here; the text says why and what to do instead
    unavailable: str = ""

    @property
    def full_name(self) -> str:
        return f"{ORG}/{self.name}"

    @property
    def is_tiny(self) -> bool:
        return self.checkpoint.startswith(TINY_PREFIX)


@cache
def load_zoo() -> dict[str, ModelSpec]:
    """All declared models by short name."""
    source = Path(__file__).with_name("models.toml")
    entries = tomllib.loads(source.read_text(encoding="utf-8"))["model"]
    known = {f.name for f in fields(ModelSpec)}
    specs: dict[str, ModelSpec] = {}
    for entry in entries:
        unknown = set(entry) - known
        if unknown:
            raise ConfigError(f"{source}: model {entry.get('name')!r} has unknown fields {sorted(unknown)}")
        spec = ModelSpec(**{**entry, "aliases": tuple(entry.get("aliases", ()))})
        if spec.family not in FAMILIES:
            raise ConfigError(f"{source}: model {spec.name!r} has unknown family {spec.family!r}")
        specs[spec.name] = spec
    return specs


def get_spec(name: str) -> ModelSpec:
    """Look a model up by short name, alias or ``mmeb-dllm/<name>``."""
    short = name.removeprefix(f"{ORG}/")
    zoo = load_zoo()
    for spec in zoo.values():
        if short == spec.name or short in spec.aliases:
            return spec
    raise ConfigError(f"unknown mmeb-dllm model {name!r}; known: {sorted(zoo)}")


def backbone_class(family: str) -> type:
    module_name, _, class_name = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    path: Path
    revision: str
    source: str


def resolve_checkpoint(spec: ModelSpec) -> ResolvedCheckpoint:
    """Find the weights of ``spec`` without loading them.

    Order: tiny models are built offline; ``$MMEB_MODEL_DIR/<org>/<repo>`` (a local mirror, never the network);
    the hub cache / the hub at the pinned revision (``HF_HUB_OFFLINE=1`` keeps it to the cache).
    A model marked ``unavailable`` raises :class:`ConfigError` with its reason; a declared adapter must be found too.
    """
    if spec.unavailable:
        raise ConfigError(f"{spec.full_name} is registered but cannot be loaded here: {spec.unavailable}")
    if spec.adapter:
        resolve_adapter(spec)  # a missing adapter fails now, before any weights load
    if spec.is_tiny:
        from mmeb_dllm.backbones.tiny import tiny_checkpoint_dir

        path = tiny_checkpoint_dir(spec.checkpoint.removeprefix(TINY_PREFIX))
        return ResolvedCheckpoint(path=path, revision=spec.revision, source="built-in tiny checkpoint")
    mirror_root = os.environ.get("MMEB_MODEL_DIR")
    if mirror_root:
        local = Path(mirror_root).expanduser() / spec.checkpoint
        if local.is_dir():
            check_checkpoint_files(local, spec)
            return ResolvedCheckpoint(path=local, revision=f"local:{local}", source="local mirror")
    path = _hub_snapshot(spec, mirror_root)
    check_checkpoint_files(path, spec)
    return ResolvedCheckpoint(path=path, revision=path.name, source="hub")


def resolve_repo(repo_id: str, revision: str, *, purpose: str, allow_patterns: list[str] | None = None) -> Path:
    """Folder of a helper repository a backbone needs (e.g. a separate VQ tokenizer), found like checkpoints:
    ``$MMEB_MODEL_DIR/<repo_id>``, then the hub cache / the hub at ``revision``. ``purpose`` goes into the error;
    ``allow_patterns`` limits a hub download to matching files."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    mirror_root = os.environ.get("MMEB_MODEL_DIR")
    if mirror_root and (Path(mirror_root).expanduser() / repo_id).is_dir():
        return Path(mirror_root).expanduser() / repo_id
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, local_files_only=_offline(), allow_patterns=allow_patterns
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{repo_id}@{revision} ({purpose}) not found: tried $MMEB_MODEL_DIR/{repo_id} "
            f"({mirror_root or 'MMEB_MODEL_DIR unset'}), the hub cache{'' if _offline() else ' and the hub'} "
            f"({type(exc).__name__}). Get it with `huggingface-cli download {repo_id} --revision {revision} "
            f"--local-dir $MMEB_MODEL_DIR/{repo_id}` and set MMEB_MODEL_DIR, or run with network access."
        ) from None


def _how_to_get(spec: ModelSpec) -> str:
    return (
        f"Get the weights with `huggingface-cli download {spec.checkpoint} --revision {spec.revision} "
        f"--local-dir $MMEB_MODEL_DIR/{spec.checkpoint}` and set MMEB_MODEL_DIR, or run with network access "
        f"(they are then fetched into the hub cache). It needs: {spec.needs or 'see docs/models.md'}."
    )


def _hub_snapshot(spec: ModelSpec, mirror_root: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec.checkpoint, revision=spec.revision, local_files_only=_offline()))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        tried = f"$MMEB_MODEL_DIR/{spec.checkpoint} ({mirror_root or 'MMEB_MODEL_DIR unset'}), the hub cache"
        raise CheckpointError(
            f"weights of {spec.full_name} ({spec.checkpoint}@{spec.revision}) not found: tried {tried}"
            f"{'' if _offline() else ' and the hub'} ({type(exc).__name__}). {_how_to_get(spec)}"
        ) from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def check_checkpoint_files(path: Path, spec: ModelSpec) -> None:
    """A checkpoint folder needs a config.json and safetensors weights; name what is missing."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if missing:
        raise CheckpointError(
            f"checkpoint folder {path} of {spec.full_name} lacks {', '.join(missing)}. {_how_to_get(spec)}"
        )


def load_backbone(spec: ModelSpec, checkpoint: ResolvedCheckpoint, *, dtype: str, device: str) -> Any:
    import torch

    cls = backbone_class(spec.family)
    backbone = cls.from_pretrained(checkpoint.path, dtype=getattr(torch, dtype), device=device)
    if spec.adapter:
        merge_adapter(backbone, resolve_adapter(spec))
    return backbone


ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"]


def resolve_adapter(spec: ModelSpec) -> Path:
    """Folder of ``spec.adapter``: ``tiny:<variant>`` is built offline, a hub id is found like :func:`resolve_repo`
    (only the adapter files are fetched). It must hold ``adapter_config.json`` and ``adapter_model.*``."""
    if spec.adapter.startswith(TINY_PREFIX):
        from mmeb_dllm.backbones.tiny import tiny_checkpoint_dir

        path = tiny_checkpoint_dir(spec.adapter.removeprefix(TINY_PREFIX))
    else:
        purpose = f"peft adapter of {spec.full_name}"
        path = resolve_repo(spec.adapter, spec.adapter_revision, purpose=purpose, allow_patterns=ADAPTER_FILES)
    if not (path / ADAPTER_FILES[0]).is_file() or not any(path.glob("adapter_model.*")):
        raise CheckpointError(
            f"adapter folder {path} of {spec.full_name} lacks adapter_config.json or adapter_model.safetensors/.bin; "
            f"re-download {spec.adapter}"
        )
    return path


def merge_adapter(backbone: Any, folder: Path) -> None:
    """Merge the peft adapter in ``folder`` into ``backbone`` for inference (in place).

    The adapter wraps the module named by the backbone's ``adapter_target`` (default ``language_model``); the
    backbone's ``adapter_key_mapping`` (regex -> replacement) renames keys of adapters saved by older transformers.
    Every adapter tensor must find its module and every adapted module its tensors, else :class:`CheckpointError`.
    """
    from peft import PeftConfig, PeftModel

    target = getattr(backbone, "adapter_target", "language_model")
    try:
        config = PeftConfig.from_pretrained(str(folder))
        config.inference_mode = True
        wrapped = PeftModel(getattr(backbone, target), config)
        result = wrapped.load_adapter(
            str(folder), "default", key_mapping=getattr(backbone, "adapter_key_mapping", None) or None
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"adapter {folder} does not fit {type(backbone).__name__} ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = sorted(result.missing_keys), sorted(result.unexpected_keys)
        raise CheckpointError(
            f"adapter {folder} does not match {type(backbone).__name__}.{target}: {len(missing)} adapted tensor(s) "
            f"without weights (e.g. {missing[:3]}), {len(unexpected)} stored tensor(s) without a module "
            f"(e.g. {unexpected[:3]}); was it trained on another base model?"
        )
    setattr(backbone, target, wrapped.merge_and_unload().eval())
