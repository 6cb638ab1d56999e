"""Model families as embedding backbones (see :mod:`mmeb_dllm.backbones.base` for the contract).

* :mod:`~mmeb_dllm.backbones.lavida` — LaViDa (LLaDA or Dream language model), with
  :mod:`~mmeb_dllm.backbones.anyres` (image tiling, pooling, unpadding);
* :mod:`~mmeb_dllm.backbones.llada` / :mod:`~mmeb_dllm.backbones.dream` — the language models on stock transformers
  classes, plus the shared checkpoint loading helpers (in ``llada``);
* :mod:`~mmeb_dllm.backbones.tiny` — tiny random checkpoints in the upstream layout, built offline.

Importing this package is cheap: the submodules (torch, transformers) load only when used.
"""
