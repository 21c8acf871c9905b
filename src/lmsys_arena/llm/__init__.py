"""Gemma LoRA preference classifiers: format (battle -> tokens), model (backbone, LoRA, head),
train (resumable DDP loop), infer (token-budget batches, multi-GPU, swap-TTA), family (runner API).

Importing this package is cheap: torch/transformers/peft load only in the modules that need them.
"""

import os as _os

# Training and inference batches change shape every step: expandable segments stop the CUDA caching
# allocator from fragmenting (and from freeing/re-allocating with device syncs) near the memory limit.
_os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
