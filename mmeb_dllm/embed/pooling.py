"""Pooling of right-padded hidden states into one vector per sequence."""

from __future__ import annotations

import torch

from mmeb_dllm.errors import ConfigError


def pool(hidden: torch.Tensor, lengths: torch.Tensor, method: str, num_mask_tokens: int = 0) -> torch.Tensor:
    """Pool ``hidden`` ``(B, L, D)`` whose sequence ``b`` occupies positions ``0 .. lengths[b]-1``.

    - ``last``: the state at the last real position;
    - ``mean``: the mean over all real positions;
    - ``mask``: the mean over the last ``num_mask_tokens`` real positions (the appended mask tokens).
    Returns ``(B, D)`` in the dtype of ``hidden``.
    """
    batch, seq_len, _ = hidden.shape
    positions = torch.arange(seq_len, device=hidden.device).unsqueeze(0)
    ends = lengths.to(hidden.device).unsqueeze(1)
    if method == "last":
        return hidden[torch.arange(batch, device=hidden.device), lengths.to(hidden.device) - 1]
    if method == "mean":
        keep = positions < ends
    elif method == "mask":
        if num_mask_tokens < 1:
            raise ConfigError("mask pooling needs num_mask_tokens >= 1")
        keep = (positions < ends) & (positions >= ends - num_mask_tokens)
    else:
        raise ConfigError(f"unknown pooling {method!r}; choose last, mean or mask")
    weights = keep.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
