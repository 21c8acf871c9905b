"""The training losses on a micro-batch's logits (:mod:`lmsys_arena.llm.train` sums them per step):
cross-entropy against labels or soft targets, the distillation KL towards a teacher (``train.distill``) and
R-Drop's symmetric KL between two dropout passes (``train.rdrop``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy summed over rows: against ``labels`` (int), or against ``soft`` ``(m, 3)`` target
    distributions where given (rows without one carry their label's one-hot there), each row times ``weight``.
    Without ``soft`` and ``weight`` this is ``F.cross_entropy(logits, labels, reduction="sum")``, the loss of
    one-hot rows as it always was; on a one-hot ``soft`` row the loss and gradient are the same bits."""
    if soft is None and weight is None:
        return F.cross_entropy(logits, labels, reduction="sum", label_smoothing=label_smoothing)
    ce = F.cross_entropy(logits, labels if soft is None else soft, reduction="none", label_smoothing=label_smoothing)
    return (ce if weight is None else ce * weight).sum()


def distill_loss(
    logits: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``sum_rows weight * T^2 * KL(softmax(teacher / T) || softmax(logits / T))``; ``teacher``: the teacher's
    log-probabilities (or logits); a row with ``weight`` 0 (no teacher prediction) adds nothing. ``T^2`` keeps
    the gradient's scale independent of ``T`` (Hinton et al.)."""
    t = float(temperature)
    student = F.log_softmax(logits / t, dim=-1)
    target = F.log_softmax(teacher / t, dim=-1)
    kl = F.kl_div(student, target, log_target=True, reduction="none").sum(-1)
    return (kl * weight).sum() * (t * t)


def symmetric_kl(logits: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """``(KL(p || q) + KL(q || p)) / 2`` summed over rows, between the softmaxes of two passes' logits
    (R-Drop: two dropout masks on the same rows should agree)."""
    lp, lq = F.log_softmax(logits, -1), F.log_softmax(logits2, -1)
    return (F.kl_div(lp, lq, log_target=True, reduction="sum") + F.kl_div(lq, lp, log_target=True, reduction="sum")) / 2
