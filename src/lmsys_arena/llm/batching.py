"""Batches of token sequences, shared by training (:mod:`llm.train`) and scoring (:mod:`llm.infer`).

* :func:`token_budget_batches`: rows sorted by length (longest first, so an out-of-memory shows at
  once) grouped while ``rows * longest <= max_tokens`` and ``rows <= max_rows``;
* :func:`collate`: dynamic padding to the longest row, moved to the device without blocking;
* the training batch plan: :func:`plan_epoch` (global, length-grouped batches per epoch),
  :func:`micro_batches` (one rank's rows of a step cut into forward passes) and :func:`swap_mask`
  (which rows are A/B-swapped in an epoch).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def token_budget_batches(lengths: np.ndarray, max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Indices grouped into batches, longest rows first, each within the padded-token budget."""
    order = np.argsort(-lengths, kind="stable")
    batches, cur, longest = [], [], 0
    for i in order:
        L = int(lengths[i])
        if cur and (len(cur) + 1 > max_rows or (len(cur) + 1) * max(longest, L) > max_tokens):
            batches.append(np.asarray(cur))
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, L)
    if cur:
        batches.append(np.asarray(cur))
    return batches


def to_device(a: np.ndarray, device) -> torch.Tensor:
    """Host array -> tensor on ``device``. To a GPU through pinned memory without blocking: a plain
    copy from pageable memory makes the host wait until the GPU has finished all queued work, so
    the host could not prepare the next batch while the GPU computes."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device is None or torch.device(device).type != "cuda":
        return t.to(device) if device is not None else t
    return t.pin_memory().to(device, non_blocking=True)


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (1 or less: ``n`` itself)."""
    k = max(multiple, 1)
    return -(-n // k) * k


def collate(seqs: list[np.ndarray], pad_id: int, side: str = "right", device=None, multiple: int = 1):
    """Dynamic padding to the longest row (rounded up to ``multiple``): (input_ids, attention_mask) tensors."""
    n, T = len(seqs), round_up(max(len(s) for s in seqs), multiple)
    ids = np.full((n, T), pad_id, dtype=np.int64)
    mask = np.zeros((n, T), dtype=np.int64)
    for r, s in enumerate(seqs):
        if side == "right":
            ids[r, : len(s)], mask[r, : len(s)] = s, 1
        else:
            ids[r, T - len(s) :], mask[r, T - len(s) :] = s, 1
    return to_device(ids, device), to_device(mask, device)


def autocast(device: torch.device, dtype: torch.dtype):
    if device.type == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def aux_tensor(aux: np.ndarray | None, idx, device) -> torch.Tensor | None:
    """The side-input rows ``idx`` of ``aux`` (see heads.AuxHead) as a float32 tensor, or None."""
    return None if aux is None else to_device(np.asarray(aux[idx], dtype=np.float32), device)


# ---------------------------------------------------------------- the training batch plan


def plan_epoch(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[np.ndarray]:
    """Global batches of row indices for one epoch (the last incomplete batch is dropped). Length-grouped:
    a seeded shuffle, cut into chunks of 64 batches, each sorted by length, cut into batches whose
    order is shuffled again."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    n_full = len(perm) // batch_size
    if n_full == 0:
        return [perm]
    perm = perm[: n_full * batch_size]
    if not group_by_length:
        return list(perm.reshape(n_full, batch_size))
    chunk = batch_size * 64
    batches = []
    for s in range(0, len(perm), chunk):
        part = perm[s : s + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += list(part.reshape(-1, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def micro_batches(rows: np.ndarray, lengths: np.ndarray, micro_batch: int, micro_tokens: int) -> list[np.ndarray]:
    """One rank's rows of a step (``lengths``: their padded cost per row), cut into forward passes:
    ``micro_batch`` rows each, or with ``micro_tokens`` longest-first groups of at most
    ``micro_batch`` rows within that padded-token budget (short rows share one pass, long rows get
    small ones: little padding, steady GPU load). The loss is a sum over rows divided by the global
    batch, so the cut does not change the gradient."""
    if not micro_tokens:
        return [m for m in np.array_split(rows, max(1, math.ceil(len(rows) / micro_batch))) if len(m)]
    order = np.argsort(-lengths, kind="stable")
    n = len(token_budget_batches(lengths, micro_tokens, micro_batch))
    while True:  # as few passes as greedy packing needs, of near-equal row counts (no 1-row tail pass,
        parts = [p for p in np.array_split(order, n) if len(p)]  # which would also recompile a compiled model)
        if all(len(p) == 1 or (len(p) <= micro_batch and len(p) * lengths[p].max() <= micro_tokens) for p in parts):
            return [rows[p] for p in parts]
        n += 1


def swap_mask(n: int, seed: int, epoch: int, mode: str) -> np.ndarray:
    """Rows shown B|A in ``epoch``: each with p=0.5 (seeded per epoch) under ``train.swap: random``, else none."""
    if mode != "random":
        return np.zeros(n, dtype=bool)
    return np.random.default_rng([seed, epoch, 1]).random(n) < 0.5
