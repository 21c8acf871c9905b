"""Fast, symmetric scoring: length-sorted token-budget batches with dynamic padding, one process
per visible GPU (results merged back in row order), swap-TTA, a deadline guard.

A batch holds rows sorted by length (longest first, so an out-of-memory shows at once) while
``rows * longest <= max_tokens`` and ``rows <= max_rows``. Under torchrun (DDP) every rank scores an
interleaved shard and the shards are all-gathered. Outside DDP with several visible GPUs,
``score`` spawns one worker per GPU (``infer.workers``; Kaggle's 2xT4), each loading the model itself.

Deadline: before each batch ``lmsys_arena.deadline.deadline_passed()`` is checked; rows not scored
by then come back as NaN logits (with swap-TTA a row scored in one order only uses that order) so
the caller can fill them from a fallback model.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lmsys_arena.deadline import deadline_passed
from lmsys_arena.llm.config import InferConfig
from lmsys_arena.swap import combine_tta  # noqa: F401 (re-exported for the family)

log = logging.getLogger(__name__)


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
            ids[r, :len(s)], mask[r, :len(s)] = s, 1
        else:
            ids[r, T - len(s):], mask[r, T - len(s):] = s, 1
    return to_device(ids, device), to_device(mask, device)


def autocast(device: torch.device, dtype: torch.dtype):
    if device.type == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def aux_tensor(aux: np.ndarray | None, idx, device) -> torch.Tensor | None:
    """The side-input rows ``idx`` of ``aux`` (see model.AuxHead) as a float32 tensor, or None."""
    return None if aux is None else to_device(np.asarray(aux[idx], dtype=np.float32), device)


@torch.inference_mode()
def score_local(model, seqs: list[np.ndarray], pad_id: int, icfg: InferConfig, device: torch.device,
                dtype: torch.dtype, desc: str = "score", progress: bool = True,
                aux: np.ndarray | None = None) -> np.ndarray:
    """Logits (n, 3) in float32 for ``seqs`` on one device; NaN rows where the deadline stopped us.
    ``aux``: side-input rows aligned with ``seqs`` for a model with an aux head."""
    from tqdm.auto import tqdm

    out = np.full((len(seqs), 3), np.nan, dtype=np.float32)
    if not seqs:
        return out
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(seqs), desc=desc, unit="rows", disable=not progress, mininterval=5, smoothing=0.1)
    t0, tokens, pending = time.time(), 0, None

    def collect():  # waits for the batch before the one just queued: the GPU never idles on the host
        idx, logits = pending
        out[idx] = logits.cpu().numpy()
        bar.update(len(idx))
        bar.set_postfix(tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}", refresh=False)

    try:
        for idx in token_budget_batches(lengths, icfg.max_tokens, icfg.max_rows):
            if deadline_passed():
                log.warning("%s: deadline passed, %d of %d rows left as NaN", desc,
                            int(np.isnan(out[:, 0]).sum()) - (len(pending[0]) if pending else 0), len(seqs))
                break
            ids, mask = collate([seqs[i] for i in idx], pad_id, device=device)
            with autocast(device, dtype):
                logits = model(ids, mask, right_padded=True, aux=aux_tensor(aux, idx, device)).float()
            if pending is not None:
                collect()
            pending, tokens = (idx, logits), tokens + int(lengths[idx].sum())
        if pending is not None:
            collect()
    finally:
        bar.close()
        model.train(was_training)
    return out


# ---------------------------------------------------------------- sharding over ranks / GPUs

def shard_indices(lengths: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """Interleave the length-sorted order so every shard gets a similar mix of lengths."""
    order = np.argsort(-lengths, kind="stable")
    return [order[k::n_shards] for k in range(n_shards)]


def score_ddp(model, seqs, pad_id, icfg, device, dtype, desc="score", aux: np.ndarray | None = None) -> np.ndarray:
    """Every rank scores its shard; shards are all-gathered so every rank returns all rows."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    shards = shard_indices(lengths, world)
    mine = score_local(model, [seqs[i] for i in shards[rank]], pad_id, icfg, device, dtype, desc=desc,
                       progress=rank == 0, aux=None if aux is None else aux[shards[rank]])
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    out = np.full((len(seqs), 3), np.nan, dtype=np.float32)
    for k in range(world):
        out[shards[k]] = gathered[k]
    return out


def _worker(rank: int, load_fn, seqs_path: str, out_dir: str, icfg: InferConfig, desc: str) -> None:
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    data = torch.load(seqs_path, weights_only=False)
    model, pad_id, dtype = load_fn(device)
    logits = score_local(model, data["shards"][rank], pad_id, icfg, device, dtype, desc=f"{desc} gpu{rank}",
                         progress=rank == 0, aux=data["aux"][rank])
    np.save(Path(out_dir) / f"shard{rank}.npy", logits)


def score_multi_gpu(load_fn, seqs: list[np.ndarray], icfg: InferConfig, n_gpus: int, desc: str = "score",
                    aux: np.ndarray | None = None) -> np.ndarray:
    """One spawned process per GPU; ``load_fn(device) -> (model, pad_id, dtype)`` must be picklable."""
    import torch.multiprocessing as mp

    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    shards = shard_indices(lengths, n_gpus)
    with tempfile.TemporaryDirectory(prefix="lmsys_infer_") as tmp:
        seqs_path = os.path.join(tmp, "seqs.pt")
        torch.save({"shards": [[seqs[i] for i in s] for s in shards],
                    "aux": [None if aux is None else aux[s] for s in shards]}, seqs_path)
        log.info("%s: %d rows on %d GPUs (one process each)", desc, len(seqs), n_gpus)
        mp.spawn(_worker, args=(load_fn, seqs_path, tmp, icfg, desc), nprocs=n_gpus, join=True)
        out = np.full((len(seqs), 3), np.nan, dtype=np.float32)
        for k, s in enumerate(shards):
            out[s] = np.load(os.path.join(tmp, f"shard{k}.npy"))
    return out
