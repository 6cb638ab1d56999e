"""Fine-tuned adapters as mteb models: discovery, content hash, and loading onto the base model.

Every folder in the adapters directory (``$MMEB_DLLM_ADAPTERS``, default ``<cache_dir()>/adapters``) that holds a
peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``) and an mmeb-dllm card
(``adapter_card.json``, written by ``mmeb-dllm finetune``) becomes an mteb model named ``mmeb-dllm/<folder>`` with
the alias ``<folder>``. Its loader builds the card's base model with the embedding recipe the adapter was trained
with, merges the adapter into the weights, and records the adapter's path and hash in the recipe. The mteb
revision of the model is the start of the adapter hash, so results of different adapters never share a folder.

Discovery reads only JSON (no torch): it runs whenever mteb is imported.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmeb_dllm.errors import CheckpointError, ConfigError
from mmeb_dllm.finetune.card import CARD_FILE, read_card
from mmeb_dllm.paths import cache_dir

if TYPE_CHECKING:
    from mteb.models.model_meta import ModelMeta
    from torch import nn

    from mmeb_dllm.zoo import ModelSpec

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ENV_VAR = "MMEB_DLLM_ADAPTERS"
# adapter_config.json fields that change what the weights compute (hashed together with the weights)
HASHED_CONFIG_FIELDS = ("r", "lora_alpha", "use_dora", "use_rslora", "target_modules", "rank_pattern",
                        "alpha_pattern", "fan_in_fan_out", "bias")

_registered_names: set[str] = set()


def adapters_dir() -> Path:
    """Where adapters are discovered: ``$MMEB_DLLM_ADAPTERS`` or ``<cache_dir()>/adapters``."""
    override = os.environ.get(ENV_VAR)
    return Path(override).expanduser() if override else cache_dir() / "adapters"


@dataclass(frozen=True)
class AdapterInfo:
    """A discovered adapter folder and its card."""

    name: str
    path: Path
    card: dict[str, Any]

    @property
    def base_model(self) -> str:
        return str(self.card["base_model"]["name"])

    @property
    def hash(self) -> str:
        return str(self.card["adapter_hash"])


def is_adapter_folder(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file() and (path / CARD_FILE).is_file()


def discover_adapters(root: str | Path | None = None) -> list[AdapterInfo]:
    """Adapter folders directly under ``root`` (default :func:`adapters_dir`), by name; broken ones are skipped
    with a warning naming the file."""
    folder = Path(root) if root is not None else adapters_dir()
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not is_adapter_folder(path):
            continue
        try:
            found.append(AdapterInfo(name=path.name, path=path.resolve(), card=read_card(path)))
        except CheckpointError as exc:
            logger.warning("skipping adapter %s: %s", path, exc)
    return found


def adapter_hash(folder: str | Path) -> str:
    """SHA-256 of the adapter's content: every tensor (name, dtype, shape, bytes; in name order) of
    ``adapter_model.safetensors`` plus the :data:`HASHED_CONFIG_FIELDS` of ``adapter_config.json``.

    Independent of file metadata and tensor order in the file; reads the safetensors layout directly (no torch).
    """
    folder = Path(folder)
    weights, config_path = folder / ADAPTER_WEIGHTS, folder / ADAPTER_CONFIG
    for path in (weights, config_path):
        if not path.is_file():
            raise CheckpointError(f"adapter folder {folder} lacks {path.name}; it is not a peft adapter folder")
    digest = hashlib.sha256()
    try:
        with weights.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
            data_start = 8 + header_size
            for name in sorted(key for key in header if key != "__metadata__"):
                info = header[name]
                begin, end = info["data_offsets"]
                digest.update(json.dumps([name, info["dtype"], info["shape"]]).encode())
                handle.seek(data_start + begin)
                digest.update(handle.read(end - begin))
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise CheckpointError(f"adapter files in {folder} cannot be read ({exc}); re-run the fine-tune") from None
    relevant = {key: config.get(key) for key in HASHED_CONFIG_FIELDS}
    if isinstance(relevant["target_modules"], list):
        relevant["target_modules"] = sorted(relevant["target_modules"])
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    return digest.hexdigest()


def apply_adapter(backbone: nn.Module, folder: str | Path, expected_hash: str | None = None) -> nn.Module:
    """``backbone`` with the peft adapter in ``folder`` merged into its weights (in place; returned, in eval mode).

    ``expected_hash`` (from the card or recipe) must match the files, else :class:`CheckpointError`.
    """
    from peft import PeftModel

    folder = Path(folder)
    actual = adapter_hash(folder)
    if expected_hash is not None and actual != expected_hash:
        raise CheckpointError(
            f"adapter {folder} changed since it was registered (hash {actual[:12]}, expected {expected_hash[:12]}); "
            f"restart to re-discover it, or restore the original files"
        )
    try:
        wrapped = PeftModel.from_pretrained(backbone, str(folder))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"adapter {folder} does not fit {type(backbone).__name__} ({type(exc).__name__}: {str(exc)[:300]}); "
            f"was it trained on another base model? Its card names the base model."
        ) from None
    return wrapped.merge_and_unload().eval()


def load_adapter_encoder(
    model_name: str, revision: str | None = None, *, base_model: str, adapter: str, **kwargs: Any
) -> Any:
    """mteb loader of an adapter model: the base model's encoder with the adapter (``kwargs``: device, recipe)."""
    from mmeb_dllm.embed.mteb_encoder import MMEBEncoder

    return MMEBEncoder(base_model, None, adapter=adapter, **kwargs)


def adapter_model_meta(info: AdapterInfo, spec: ModelSpec) -> ModelMeta:
    """The base model's meta, renamed to ``mmeb-dllm/<folder>``, revision = adapter hash prefix, adapter loader."""
    from mmeb_dllm.embed.mteb_encoder import RECIPE_OPTIONS
    from mmeb_dllm.registry import model_meta
    from mmeb_dllm.zoo import ORG

    recipe = {key: value for key, value in info.card["embedding_recipe"].items() if key in RECIPE_OPTIONS}
    created = str(info.card.get("created", ""))[:10]
    try:
        release = datetime.date.fromisoformat(created)
    except ValueError:
        release = datetime.date.fromisoformat(spec.release_date)
    return model_meta(spec).model_copy(
        update={
            "name": f"{ORG}/{info.name}",
            "revision": info.hash[:12],
            "loader": load_adapter_encoder,
            "loader_kwargs": {"base_model": spec.full_name, "adapter": str(info.path), **recipe},
            "release_date": release,
            "adapted_from": spec.full_name,
            "reference": None,
        }
    )


def register_adapters(registry: dict[str, Any], root: str | Path | None = None) -> list[str]:
    """Put every discovered adapter into mteb's ``registry`` (full name and alias); return their full names.

    Adapters registered earlier whose folders are gone are removed. Never raises: a bad adapter is skipped with
    a warning (this runs when mteb is imported).
    """
    from mmeb_dllm.zoo import ORG, get_spec, load_zoo

    taken = {name for spec in load_zoo().values() for name in (spec.full_name, spec.name, *spec.aliases)}
    for stale in _registered_names:
        registry.pop(stale, None)
    _registered_names.clear()
    added = []
    for info in discover_adapters(root):
        full = f"{ORG}/{info.name}"
        if info.name in taken or full in taken:
            logger.warning("adapter folder %s is named like a zoo model; rename it to register it", info.path)
            continue
        try:
            meta = adapter_model_meta(info, get_spec(info.base_model))
        except (ConfigError, CheckpointError, ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping adapter %s: %s", info.path, exc)
            continue
        registry[full] = meta
        registry[info.name] = meta
        _registered_names.update({full, info.name})
        added.append(full)
    return added
