"""Gemma LoRA preference classifiers: format (battle -> tokens), model (backbone, LoRA, head),
train (resumable DDP loop), infer (token-budget batches, multi-GPU, swap-TTA), family (runner API).

Importing this package is cheap: torch/transformers/peft load only in the modules that need them.
"""
