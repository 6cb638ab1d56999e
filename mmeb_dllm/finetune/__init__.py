"""Contrastive LoRA fine-tuning of zoo models (VLM2Vec recipe): data, InfoNCE, GradCache, multi-process training.

Entry points: ``mmeb-dllm finetune`` (:mod:`mmeb_dllm.finetune.cli`) and :func:`mmeb_dllm.finetune.trainer.train`
with a :class:`mmeb_dllm.finetune.config.FinetuneConfig`. The adapter folder it writes becomes an mteb model when it
lies in the adapters directory (:mod:`mmeb_dllm.adapters`). Importing this package is cheap (no torch).
"""
