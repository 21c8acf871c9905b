"""The optimizer side of training: AdamW with a separate head LR (:func:`make_optimizer`), the warmup +
cosine / linear / constant schedule (:func:`lr_lambda`, :func:`make_scheduler`) and the EMA of the trainable
weights (:class:`Ema`, ``train.ema``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lmsys_arena.llm.config import TrainConfig
from lmsys_arena.llm.fsdp import place_like

HEAD_PREFIXES = ("head.", "aux.")  # the text head and the side-input head: head_lr


def lr_lambda(total: int, warmup: int, schedule: str):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        if schedule == "constant":
            return 1.0
        t = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0))) if schedule == "cosine" else max(0.0, 1 - t)

    return f


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """``train.schedule`` over ``total`` optimizer steps, the first ``train.warmup`` of them a linear warmup."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, int(cfg.warmup * total), cfg.schedule))


def make_optimizer(params: dict[str, nn.Parameter], cfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW over the trainable weights ``params`` (by name): the heads' at ``train.head_lr``, the rest (the
    adapters) at ``train.lr``. ``fused``: one kernel for the whole update (CUDA, unsharded weights)."""
    head = [p for n, p in params.items() if n.startswith(HEAD_PREFIXES)]
    body = [p for n, p in params.items() if not n.startswith(HEAD_PREFIXES)]
    return torch.optim.AdamW(
        [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
        betas=(0.9, 0.999),
        fused=fused or None,
    )


class Ema:
    """``train.ema``: an fp32 exponential moving average of the trainable weights, updated after every optimizer
    step and copied into the weights when training ends."""

    def __init__(self, params: dict[str, nn.Parameter], decay: float):
        self.decay = decay
        self.weights = {n: p.detach().float().clone() for n, p in params.items()}

    def update(self, params: dict[str, nn.Parameter]) -> None:
        with torch.no_grad():
            for n, p in params.items():
                self.weights[n].mul_(self.decay).add_(p.detach().float(), alpha=1 - self.decay)

    def copy_to(self, params: dict[str, nn.Parameter]) -> None:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.weights[n].to(p.dtype))

    def load(self, weights: dict[str, torch.Tensor]) -> None:
        """Full weights of a checkpoint, placed (and sharded under FSDP) like the current ones."""
        self.weights = {n: place_like(self.weights[n], t) for n, t in weights.items()}
