"""FSDP2 (``train.strategy: fsdp``): the weights sharded over the ranks, and the full (gathered) state
that checkpoints and the saved adapter need.

Checkpoints (``train.Trainer``) hold full tensors, gathered on every rank and written by rank 0.
"""

from __future__ import annotations

import logging

import torch

from lmsys_arena.llm.compile import decoder_layers

log = logging.getLogger(__name__)


def shard_fsdp(model) -> None:
    """FSDP2 (``fully_shard``): each decoder layer's weights, then the rest, sharded over the ranks;
    a layer's weights are all-gathered just for its forward/backward.

    Layers compiled by ``compile.compile_layers`` (in place: their hooks inside the graph) are compiled
    again around their ``forward`` alone, so FSDP's all-gather / reshard hooks run eagerly around the
    compiled code (as torchtitan compiles each block before ``fully_shard``). No CUDA graphs under
    FSDP: the gathered weights' memory is freed and reallocated on every pass."""
    from torch.distributed.fsdp import fully_shard

    if str(model.backbone.peft_config["default"].init_lora_weights).startswith("pissa"):
        raise ValueError("train.strategy=fsdp does not combine with PiSSA init yet; set model.lora.init=true")
    compiled = 0
    for layer in decoder_layers(model):
        if getattr(layer, "_compiled_call_impl", None) is not None:
            layer._compiled_call_impl = None
            layer.forward = torch.compile(layer.forward, dynamic=True)
            compiled += 1
        fully_shard(layer)
    fully_shard(model)
    if compiled:
        model.cudagraphs = False
        log.info("FSDP: %d decoder layers compiled around their forward (dynamic shapes, no CUDA graphs)", compiled)


def full_state(tensors: dict | None) -> dict | None:
    """name -> full CPU tensor; sharded DTensors (FSDP) are gathered, a collective on every rank."""
    if tensors is None:
        return None
    out = {}
    for n, t in tensors.items():
        t = t.detach()
        out[n] = (t.full_tensor() if hasattr(t, "full_tensor") else t).cpu()
    return out


def place_like(ref: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``full`` (a whole tensor) placed like ``ref`` (sharded like it when ``ref`` is a DTensor)."""
    if hasattr(ref, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(ref.device, ref.dtype), ref.device_mesh, ref.placements)
    return full.to(ref.device, ref.dtype)


def full_optimizer_state(model, opt) -> dict:
    """The optimizer state of a sharded model as full CPU tensors (a collective on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model, opt, params: dict, optimizer: dict) -> None:
    """Full (checkpointed) trainable weights and optimizer state into a sharded model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, params, options=opts)
    set_optimizer_state_dict(model, opt, optimizer, options=opts)
