"""Reuse of a frozen vision tower's features: each distinct image view goes through the tower once per run.

With the tower frozen (no trainable parameter, eval mode), its output for a view is a constant, so caching is
exact. Views are computed one at a time, so a view's features never depend on which other views shared its batch:
a resumed run gets bit-identical features. Only backbones with a ``vision_features(pixel_values) -> (N, P, C)``
stage (LaViDa) are wrapped; others run unchanged.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

DEFAULT_MAX_BYTES = 1 << 30


class VisionFeatureCache:
    """Stands in for ``backbone.vision_features``; least recently used views leave once ``max_bytes`` is full."""

    def __init__(self, compute: Callable[[torch.Tensor], torch.Tensor], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.compute = compute
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._bytes = 0
        self._store: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        views = pixel_values.detach().to("cpu", torch.float32).contiguous()
        keys = [hashlib.blake2b(view.numpy().tobytes(), digest_size=16).hexdigest() for view in views]
        out = []
        for key, view in zip(keys, pixel_values, strict=True):
            features = self._store.get(key)
            if features is None:
                self.misses += 1
                with torch.no_grad():
                    features = self.compute(view.unsqueeze(0))[0].detach()
                self._add(key, features)
            else:
                self.hits += 1
                self._store.move_to_end(key)
            out.append(features)
        return torch.stack(out)

    def _add(self, key: str, features: torch.Tensor) -> None:
        size = features.numel() * features.element_size()
        if size > self.max_bytes:
            return
        self._store[key] = features
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._store.popitem(last=False)
            self._bytes -= evicted.numel() * evicted.element_size()


def install_vision_cache(backbone: nn.Module, max_bytes: int = DEFAULT_MAX_BYTES) -> VisionFeatureCache | None:
    """Wrap ``backbone.vision_features`` when the backbone has that stage and its ``vision_tower`` is frozen.

    Returns the cache, or ``None`` when nothing was wrapped.
    """
    tower = getattr(backbone, "vision_tower", None)
    stage = getattr(backbone, "vision_features", None)
    if tower is None or stage is None or isinstance(stage, VisionFeatureCache):
        return None
    if any(p.requires_grad for p in tower.parameters()) or tower.training:
        return None
    cache = VisionFeatureCache(stage, max_bytes)
    backbone.vision_features = cache  # an instance attribute shadows the method
    return cache


def remove_vision_cache(backbone: nn.Module) -> None:
    if isinstance(backbone.__dict__.get("vision_features"), VisionFeatureCache):
        del backbone.vision_features
