"""Gemma LoRA preference classifiers (``family: llm``):

* config: the options (no torch); format: battle -> tokens; backbones: where the decoder comes from
  and how it loads (and how to add one);
* model: heads, LoRA, compilation, a trained fold's files; batching: token-budget batches, padding,
  the training batch plan;
* train: the resumable DDP loop (fsdp: FSDP2 sharding); infer: scoring on one or several GPUs;
* family: the runner's fit_fold / predict (swap-TTA inside); kaggle: the kernel hooks.

Importing this package is cheap: torch/transformers/peft load only in the modules that need them.
"""

import os as _os

# Training and inference batches change shape every step: expandable segments stop the CUDA caching
# allocator from fragmenting (and from freeing/re-allocating with device syncs) near the memory limit.
_os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
