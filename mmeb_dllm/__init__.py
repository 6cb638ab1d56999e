"""mmeb_dllm: multimodal diffusion and autoregressive VLMs as embedding models on MMEB, inside mteb.

Importing this package is cheap (no torch, transformers or mteb). :func:`register` adds the plugin's models, tasks
and benchmarks to mteb's registries; the ``mmeb_dllm.pth`` hook calls it right after ``import mteb``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "register"]


def register() -> None:
    """Register models, tasks and benchmarks with mteb (idempotent)."""
    from mmeb_dllm.registry import register as _register

    _register()
