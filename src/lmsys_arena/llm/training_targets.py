"""What a training row is fitted to (:class:`Targets`): a row's label, or its soft targets
(``data.SOFT_COLS``: cross-entropy against a distribution, :func:`lmsys_arena.llm.losses.target_loss`), times
its loss weight (``data.WEIGHT_COL``), plus with ``train.distill`` ``weight * T^2 * KL(teacher_T || student_T)``
towards a teacher run's log-probabilities (:func:`lmsys_arena.llm.losses.distill_loss`). A swapped row's soft
targets and teacher predictions are swapped like its label (:func:`sequence_targets`). A micro-batch of one-hot
rows of weight 1 without a teacher takes the plain ``F.cross_entropy`` of before."""

from __future__ import annotations

import logging

import numpy as np

from lmsys_arena.llm.config import TrainConfig
from lmsys_arena.swap import UNSWAP, swap_labels

log = logging.getLogger("lmsys_arena.llm.train")  # its log lines read as before the split


class Targets:
    """What a row is fitted to, over the rows of a fold's training frame: ``soft`` ``(n, 3)`` targets (NaN rows:
    the label), ``weight`` ``(n,)`` loss weights, ``teacher`` ``(n, 3)`` teacher log-probabilities (NaN rows:
    no KL); each None when unused."""

    def __init__(self, soft=None, weight=None, teacher=None):
        self.soft = None if soft is None else np.asarray(soft, dtype=np.float64)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        self.teacher = None if teacher is None else np.asarray(teacher, dtype=np.float64)


def sequence_targets(rows: np.ndarray, swapped: np.ndarray, labels: np.ndarray, targets: Targets | None):
    """Per-sequence targets of a micro-batch: ``rows`` (frame rows, one per sequence) shown A|B or B|A
    (``swapped``). Returns ``(labels, soft, weight, teacher, kl_weight)``: int64 labels, swapped where the
    sequence is B|A, and float32 arrays or None: ``soft`` None when no row has soft targets, ``weight`` None
    when all are 1, ``teacher`` / ``kl_weight`` None when no row has a teacher prediction. A swapped row's soft
    targets and teacher predictions have A and B exchanged, like its label."""
    rows, swapped = np.asarray(rows, dtype=np.int64), np.asarray(swapped, dtype=bool)
    y = np.asarray(labels)[rows].astype(np.int64)
    y = np.where(swapped, swap_labels(y), y)
    soft = weight = teacher = kl_weight = None
    if targets is None:
        return y, soft, weight, teacher, kl_weight

    def oriented(a: np.ndarray) -> np.ndarray:
        return np.where(swapped[:, None], a[:, UNSWAP], a)

    if targets.soft is not None:
        s = targets.soft[rows]
        has = np.isfinite(s).all(axis=1)
        if has.any():
            s = oriented(s)
            s[~has] = np.eye(3)[y[~has]]  # the label's one-hot (already in the sequence's order)
            soft = s.astype(np.float32)
    if targets.weight is not None:
        w = targets.weight[rows]
        weight = None if (w == 1.0).all() else w.astype(np.float32)
    if targets.teacher is not None:
        t = targets.teacher[rows]
        has = np.isfinite(t).all(axis=1)
        if has.any():
            teacher = np.where(has[:, None], oriented(np.nan_to_num(t)), 0.0).astype(np.float32)
            kw = has.astype(np.float64) * (1.0 if targets.weight is None else targets.weight[rows])
            kl_weight = kw.astype(np.float32)
    return y, soft, weight, teacher, kl_weight


def fit_targets(cfg: TrainConfig, train, what: str = "train") -> Targets | None:
    """The :class:`Targets` of a fold's training frame: its soft-target and weight columns, and with
    ``cfg.distill.teacher`` that run's log-probabilities (:func:`lmsys_arena.teacher.distill_targets`)."""
    from lmsys_arena.data import row_weights, soft_targets

    soft, weight = soft_targets(train), row_weights(train)
    teacher = None
    if cfg.distill.teacher and cfg.distill.weight > 0:
        from lmsys_arena.teacher import distill_targets

        teacher = distill_targets(cfg.distill.teacher, train, what)
    if soft is not None:
        log.info("%s: %d rows with soft targets", what, int(np.isfinite(soft).all(axis=1).sum()))
    if weight is not None:
        log.info("%s: row weights %s", what, {float(v): int(n) for v, n in zip(*np.unique(weight, return_counts=True))})
    if soft is None and weight is None and teacher is None:
        return None
    return Targets(soft, weight, teacher)
