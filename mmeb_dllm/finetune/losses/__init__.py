"""Contrastive losses, one per file."""

from mmeb_dllm.finetune.losses.infonce import info_nce

__all__ = ["info_nce"]
