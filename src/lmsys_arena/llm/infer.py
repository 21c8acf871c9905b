"""Fast, symmetric scoring: length-sorted token-budget batches with dynamic padding, one process
per visible GPU (results merged back in row order), a deadline guard; swap-TTA is
:func:`lmsys_arena.swap.combine_tta` on the two orders' logits.

A batch holds rows sorted by length (longest first, so an out-of-memory shows at once) while
``rows * longest <= max_tokens`` and ``rows <= max_rows`` (:func:`llm.batching.token_budget_batches`).
Under torchrun (DDP) every rank scores an interleaved shard and the shards are all-gathered
(:func:`score_ddp`). Outside DDP with several visible GPUs, :func:`score_multi_gpu` spawns one worker
per GPU (``infer.workers``; Kaggle's 2xT4), each loading the model itself.

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

from lmsys_arena import dist
from lmsys_arena.deadline import deadline_passed
from lmsys_arena.llm.batching import autocast, aux_tensor, collate, token_budget_batches
from lmsys_arena.llm.config import InferConfig
from lmsys_arena.llm.format import lengths as seq_lengths

log = logging.getLogger(__name__)


@torch.inference_mode()
def score_local(
    model,
    seqs: list[np.ndarray],
    pad_id: int,
    icfg: InferConfig,
    device: torch.device,
    dtype: torch.dtype,
    desc: str = "score",
    progress: bool = True,
    aux: np.ndarray | None = None,
) -> np.ndarray:
    """Logits (n, 3) in float32 for ``seqs`` on one device; NaN rows where the deadline stopped us.
    ``aux``: side-input rows aligned with ``seqs`` for a model with an aux head."""
    from tqdm.auto import tqdm

    out = np.full((len(seqs), 3), np.nan, dtype=np.float32)
    if not seqs:
        return out
    lengths = seq_lengths(seqs)
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
                log.warning(
                    "%s: deadline passed, %d of %d rows left as NaN",
                    desc,
                    int(np.isnan(out[:, 0]).sum()) - (len(pending[0]) if pending else 0),
                    len(seqs),
                )
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
    from torch.distributed import all_gather_object

    rank, world, _ = dist.init()
    lengths = seq_lengths(seqs)
    shards = shard_indices(lengths, world)
    mine = score_local(
        model,
        [seqs[i] for i in shards[rank]],
        pad_id,
        icfg,
        device,
        dtype,
        desc=desc,
        progress=rank == 0,
        aux=None if aux is None else aux[shards[rank]],
    )
    gathered = [None] * world
    all_gather_object(gathered, mine)
    out = np.full((len(seqs), 3), np.nan, dtype=np.float32)
    for k in range(world):
        out[shards[k]] = gathered[k]
    return out


def _worker(rank: int, load_fn, seqs_path: str, out_dir: str, icfg: InferConfig, desc: str) -> None:
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    data = torch.load(seqs_path, weights_only=False)
    model, pad_id, dtype = load_fn(device)
    logits = score_local(
        model,
        data["shards"][rank],
        pad_id,
        icfg,
        device,
        dtype,
        desc=f"{desc} gpu{rank}",
        progress=rank == 0,
        aux=data["aux"][rank],
    )
    np.save(Path(out_dir) / f"shard{rank}.npy", logits)


def score_multi_gpu(
    load_fn, seqs: list[np.ndarray], icfg: InferConfig, n_gpus: int, desc: str = "score", aux: np.ndarray | None = None
) -> np.ndarray:
    """One spawned process per GPU; ``load_fn(device) -> (model, pad_id, dtype)`` must be picklable."""
    import torch.multiprocessing as mp

    lengths = seq_lengths(seqs)
    shards = shard_indices(lengths, n_gpus)
    with tempfile.TemporaryDirectory(prefix="lmsys_infer_") as tmp:
        seqs_path = os.path.join(tmp, "seqs.pt")
        torch.save(
            {
                "shards": [[seqs[i] for i in s] for s in shards],
                "aux": [None if aux is None else aux[s] for s in shards],
            },
            seqs_path,
        )
        log.info("%s: %d rows on %d GPUs (one process each)", desc, len(seqs), n_gpus)
        mp.spawn(_worker, args=(load_fn, seqs_path, tmp, icfg, desc), nprocs=n_gpus, join=True)
        out = np.full((len(seqs), 3), np.nan, dtype=np.float32)
        for k, s in enumerate(shards):
            out[s] = np.load(os.path.join(tmp, f"shard{k}.npy"))
    return out
