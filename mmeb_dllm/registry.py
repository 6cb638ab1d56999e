"""The only module that touches mteb's registries: models (+ short aliases), tasks and benchmarks.

mteb 2.26 has no plugin API, so registration inserts into the dictionaries mteb resolves names from
(``MODEL_REGISTRY``, the task registry and list, the benchmark module and its cached lookups).
"""

from __future__ import annotations

import datetime
import importlib
import logging
import os
import sys
import types
from typing import Any

from mteb.models.model_meta import ModelMeta, ScoringFunction

from mmeb_dllm.atomic import patch_mteb_result_writes
from mmeb_dllm.benchmark.table import TABLES, load_table
from mmeb_dllm.benchmark.tasks import build_tasks
from mmeb_dllm.errors import MmebDllmError
from mmeb_dllm.zoo import ModelSpec, load_zoo

logger = logging.getLogger(__name__)

_registered = False


class PluginModelMeta(ModelMeta):
    """A ModelMeta whose requirement check does not demand torchvision: our image path uses PIL processors."""

    def _check_requirements(self) -> None:
        return None


def load_encoder(model_name: str, revision: str | None = None, **kwargs: Any) -> Any:
    """mteb loader for every zoo model (kwargs: device and embedding-recipe options)."""
    from mmeb_dllm.embed.mteb_encoder import MMEBEncoder

    return MMEBEncoder(model_name, revision, **kwargs)


def model_meta(spec: ModelSpec) -> ModelMeta:
    recipe_defaults = {
        "pooling": spec.pooling,
        "attention": spec.attention,
        "instruction": "mmeb",
        "image_resolution": spec.image_resolution,
    }
    return PluginModelMeta(
        loader=load_encoder,
        loader_kwargs=recipe_defaults,
        name=spec.full_name,
        revision=spec.revision,
        release_date=datetime.date.fromisoformat(spec.release_date),
        languages=["eng-Latn"],
        n_parameters=spec.n_parameters,
        memory_usage_mb=None,
        max_tokens=spec.max_tokens,
        embed_dim=spec.embed_dim,
        license=spec.license,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch"],
        reference=spec.reference,
        similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=True,
        training_datasets=set(),
        modalities=["image", "text"],
        adapted_from=None if spec.is_tiny else spec.checkpoint,
    )


def _register_models() -> None:
    from mteb.models.model_implementations import MODEL_REGISTRY

    for spec in load_zoo().values():
        meta = model_meta(spec)
        MODEL_REGISTRY[meta.name] = meta
        for alias in spec.aliases:
            MODEL_REGISTRY[alias] = meta
    try:  # fine-tuned adapters in $MMEB_DLLM_ADAPTERS become models too; a broken folder must not break mteb
        from mmeb_dllm.adapters import register_adapters

        register_adapters(MODEL_REGISTRY)
    except Exception as exc:
        logger.warning("fine-tuned adapters were not registered: %s", exc)


def _register_tasks() -> None:
    tasks_module = importlib.import_module("mteb.get_tasks")
    benchmarks_module = importlib.import_module("mteb.benchmarks.benchmarks")
    get_benchmark_module = importlib.import_module("mteb.benchmarks.get_benchmark")
    new_classes = []
    for table_name in TABLES:
        leaves, aggregates, benchmark = build_tasks(load_table(table_name))
        new_classes.extend(leaves + aggregates)
        setattr(benchmarks_module, f"_MMEB_DLLM_{table_name.replace('-', '_')}", benchmark)
        if get_benchmark_module._build_registry.cache_info().currsize:
            get_benchmark_module._build_registry()[benchmark.name] = benchmark
    for cls in new_classes:
        tasks_module._TASKS_REGISTRY[cls.metadata.name] = cls
    names = {cls.metadata.name for cls in new_classes}
    tasks_module.TASK_LIST = tuple(c for c in tasks_module.TASK_LIST if c.metadata.name not in names) + tuple(
        new_classes
    )


def _install_excepthook() -> None:
    """Print our user-facing errors as one message (no traceback) when they end a command-line run."""
    previous = sys.excepthook
    if getattr(previous, "_mmeb_dllm", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: types.TracebackType | None) -> None:
        if issubclass(exc_type, MmebDllmError) and not os.environ.get("MMEB_DLLM_DEBUG"):
            print(f"mmeb-dllm error: {exc}\n(set MMEB_DLLM_DEBUG=1 for the traceback)", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    hook._mmeb_dllm = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def register() -> None:
    """Add mmeb_dllm's models, tasks and benchmarks to mteb (idempotent)."""
    global _registered
    if _registered:
        return
    _register_models()
    _register_tasks()
    _install_excepthook()
    patch_mteb_result_writes()
    _registered = True
