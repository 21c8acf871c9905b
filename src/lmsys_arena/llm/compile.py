"""Regional ``torch.compile`` of a model's decoder layers (``model.compile``): :func:`compile_mode` says what
the setting means on this device for training or scoring, :func:`compile_layers` compiles the layers in place."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("lmsys_arena.llm.model")  # its log lines read as before the split


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated decoder blocks (the largest ``nn.ModuleList`` of the model)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no decoder layer list found to compile")
    return list(max(lists, key=len))


def compile_mode(compile: bool | str, device: torch.device, training: bool) -> str | None:
    """What ``model.compile`` means here: None (eager), "plain" (regional compile, dynamic shapes) or
    "cudagraphs". CUDA graphs are a GPU training mode: CPU runs stay eager, and scoring (batch shapes
    vary) compiles plainly on a GPU whatever the training used."""
    if not compile:
        return None
    if compile == "cudagraphs":
        if device.type != "cuda":
            return None
        return "cudagraphs" if training else "plain"
    return "plain"


def compile_layers(model: nn.Module, cudagraphs: bool = False) -> int:
    """Regional compilation: ``torch.compile`` each decoder layer in place (one compiled graph per
    layer kind, reused by all layers, dynamic batch/sequence sizes). Fuses Gemma's fp32 RMSNorms,
    residual adds, rotary embedding and GELU*up into a few kernels; matmuls and attention stay on
    cuBLAS / flash. Compiles on the first batches (tens of seconds), then runs at full speed.
    ``cudagraphs``: mode reduce-overhead, static shapes, each layer call replays a CUDA graph recorded
    once per input shape (one launch instead of hundreds: steps of small models stop being host-bound);
    every distinct shape compiles anew, so pad to one length (train.pad_multiple = format.max_len)."""
    import torch._dynamo

    layers = decoder_layers(model)
    cfg = torch._dynamo.config  # layer kinds x train/eval x a few shape specialisations; never fall back to eager
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))
    mode = "reduce-overhead" if cudagraphs and torch.cuda.is_available() else None
    for layer in layers:  # CUDA-graph trees crash in backward with dynamic shapes (pytorch#105169): static there
        layer.compile(dynamic=mode is None, mode=mode)
    model.cudagraphs = mode is not None  # read by train.Trainer: marks each forward pass as a new step
    log.info(
        "torch.compile: %d decoder layers (%s), dynamic shapes%s",
        len(layers),
        type(layers[0]).__name__,
        ", CUDA graphs" if mode else "",
    )
    return len(layers)
