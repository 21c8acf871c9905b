"""The LoRA training loop: plain PyTorch (+ DistributedDataParallel, or FSDP2 via :mod:`llm.fsdp`, under
torchrun), resumable. The batch plan is :mod:`llm.batching`.

* Global batch = ``batch_size`` rows per optimizer step, whatever the number of GPUs: each rank
  takes ``batch_size / world`` rows of it, in micro-batches of ``micro_batch`` rows with gradient
  accumulation (DDP syncs on the last one), so 1 and N GPUs follow the same trajectory.
* Length-grouped batches: a seeded shuffle, cut into chunks of 64 batches, each sorted by length,
  cut into batches whose order is shuffled again; dynamic padding per micro-batch.
* Swap augmentation: ``none``, ``random`` (each row A/B-swapped with p=0.5, seeded per epoch) or
  ``both`` (a row and its swapped copy in the same step: twice the sequences).
* AdamW with a separate head LR, warmup + cosine/linear/constant schedule, grad clipping,
  bf16/fp16 autocast (fp16 with a GradScaler), optional R-Drop and an EMA of the trainable weights.
* ``fold_dir/ckpt.pt`` (trainable weights, optimizer, scheduler, RNG, EMA) is written every
  ``checkpoint_every`` steps; a re-run resumes from it and reproduces the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from lmsys_arena import dist
from lmsys_arena.llm.batching import autocast, collate, micro_batches, plan_epoch, swap_mask, to_device
from lmsys_arena.llm.config import TrainConfig
from lmsys_arena.llm.format import lengths as seq_lengths
from lmsys_arena.llm.fsdp import full_optimizer_state, full_state, load_full_state, place_like, shard_fsdp
from lmsys_arena.swap import swap_labels

log = logging.getLogger(__name__)
CKPT = "ckpt.pt"


# ---------------------------------------------------------------- schedule


def lr_lambda(total: int, warmup: int, schedule: str):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        if schedule == "constant":
            return 1.0
        t = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0))) if schedule == "cosine" else max(0.0, 1 - t)

    return f


# ---------------------------------------------------------------- the loop


class Trainer:
    def __init__(
        self, model, cfg: TrainConfig, device: torch.device, dtype: torch.dtype, pad_id: int, fold_dir: Path, seed: int
    ):
        self.model, self.cfg, self.device, self.dtype, self.pad_id = model, cfg, device, dtype, pad_id
        self.fold_dir, self.seed = Path(fold_dir), seed
        self.rank, self.world, _ = dist.init()
        self.fsdp = self.world > 1 and cfg.strategy == "fsdp"
        if self.fsdp:  # before the optimizer sees the parameters: they become sharded DTensors
            shard_fsdp(model)
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        heads = ("head.", "aux.")  # the text head and the side-input head: head_lr
        head = [p for n, p in self.params.items() if n.startswith(heads)]
        body = [p for n, p in self.params.items() if not n.startswith(heads)]
        self.opt = torch.optim.AdamW(
            [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
            weight_decay=cfg.weight_decay,
            betas=(0.9, 0.999),
            fused=(device.type == "cuda" and not self.fsdp) or None,
        )  # one kernel
        self.scaler = torch.amp.GradScaler("cuda") if (dtype == torch.float16 and device.type == "cuda") else None
        self.ema = {n: p.detach().float().clone() for n, p in self.params.items()} if cfg.ema else None
        self.aux = None  # (A|B rows, B|A rows) of side inputs, set by fit
        self.cudagraphs = bool(getattr(model, "cudagraphs", False))  # set by model.compile_layers
        self.ddp = model
        if self.world > 1 and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp = DDP(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                gradient_as_bucket_view=True,  # grads live in the all-reduce buckets: no copies
                broadcast_buffers=False,
            )  # constant buffers (rotary, aux stats): no per-step broadcast

    def fit(
        self,
        fwd: list[np.ndarray],
        rev: list[np.ndarray],
        labels: np.ndarray,
        stop_after: int | None = None,
        aux: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        """Train on sequences ``fwd`` (A|B) / ``rev`` (B|A) with labels 0/1/2 (of the A|B order);
        ``aux``: the side-input rows of both orders (model.AuxHead), or None."""
        self.aux = aux
        from tqdm.auto import tqdm

        cfg = self.cfg
        if cfg.batch_size % self.world:
            raise ValueError(f"train.batch_size={cfg.batch_size} must be divisible by the {self.world} GPUs")
        lengths = seq_lengths(fwd)
        per_epoch = max(len(fwd) // cfg.batch_size, 1)
        total = max(int(math.ceil(cfg.epochs * per_epoch)), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(total, int(cfg.warmup * total), cfg.schedule))
        step = self._resume(sched)
        if step:
            log.info("resuming from %s at step %d/%d", self.fold_dir / CKPT, step, total)
        self.model.train()
        bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=self.rank != 0, mininterval=5)
        t0, rows, toks, loss_avg, plans = time.time(), 0, 0, None, {}
        last = (t0, 0, step)  # time, tokens, step at the last log line: the recent (steady-state) rate
        while step < total:
            epoch, k = divmod(step, per_epoch)
            if epoch not in plans:
                plans = {
                    epoch: (
                        plan_epoch(lengths, cfg.batch_size, self.seed, epoch, cfg.group_by_length),
                        swap_mask(len(fwd), self.seed, epoch, cfg.swap),
                    )
                }
            batch, flip = plans[epoch][0][k], plans[epoch][1]
            loss = self._step(batch, fwd, rev, labels, flip)  # a GPU tensor: no wait for the GPU here
            sched.step()
            step += 1
            rows += len(batch)
            toks += int(lengths[batch].sum()) * (2 if cfg.swap == "both" else 1)
            loss_avg = loss if loss_avg is None else 0.98 * loss_avg + 0.02 * loss
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:  # the only host-GPU sync of the loop
                now, avg = time.time(), float(loss_avg)
                dt, recent = max(now - t0, 1e-9), (toks - last[1]) / max(now - last[0], 1e-9)
                bar.set_postfix(loss=f"{avg:.4f}", rows_s=f"{rows / dt:.1f}", tok_s=f"{toks / dt:.0f}", refresh=False)
                log.info(
                    "step %d/%d loss %.4f lr %.2e  %.1f rows/s  %.0f tokens/s (this GPU x %d)  "
                    "%.0f tokens/s all GPUs over the last %d steps",
                    step,
                    total,
                    avg,
                    sched.get_last_lr()[0],
                    rows / dt,
                    toks / dt / self.world,
                    self.world,
                    recent,
                    step - last[2],
                )
                last = (now, toks, step)
            if step % cfg.checkpoint_every == 0 and step < total:
                self.save_checkpoint(step, sched)
            if stop_after is not None and step >= stop_after:
                break
        bar.close()
        if self.ema is not None:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(self.ema[n].to(p.dtype))
        return step

    def _step(self, batch, fwd, rev, labels, flip) -> torch.Tensor:
        cfg = self.cfg
        mine = batch[self.rank :: self.world]
        n_global = len(batch) * (2 if cfg.swap == "both" else 1)
        micro = self._micro_batches(mine, fwd)
        total_loss = torch.zeros((), device=self.device)
        for j, idx in enumerate(micro):
            with record_function("step.batch"):
                seqs, y, side = self._examples(idx, fwd, rev, labels, flip)
                ids, mask = collate(seqs, self.pad_id, device=self.device, multiple=cfg.pad_multiple)
                side = None if side is None else to_device(side, self.device)
                target = to_device(np.asarray(y, dtype=np.int64), self.device)
            sync = j == len(micro) - 1 or self.world == 1
            if self.fsdp:  # reduce-scatter the gradients on the last micro-batch only
                self.ddp.set_requires_gradient_sync(sync)
            ctx = self.ddp.no_sync() if (not sync and hasattr(self.ddp, "no_sync")) else contextlib.nullcontext()
            if self.cudagraphs:  # the previous pass's graph outputs may be overwritten from here on
                torch.compiler.cudagraph_mark_step_begin()
            with ctx:
                with autocast(self.device, self.dtype), record_function("step.forward"):
                    if cfg.text_loss and side is not None:
                        logits, text = self.ddp(ids, mask, right_padded=True, aux=side, with_text=True)
                        logits = logits.float()
                        text_ce = F.cross_entropy(
                            text.float(), target, reduction="sum", label_smoothing=cfg.label_smoothing
                        )
                    else:
                        logits, text_ce = self.ddp(ids, mask, right_padded=True, aux=side).float(), 0.0
                    loss = F.cross_entropy(logits, target, reduction="sum", label_smoothing=cfg.label_smoothing)
                    if cfg.rdrop:
                        logits2 = self.ddp(ids, mask, right_padded=True, aux=side).float()
                        loss = (
                            loss
                            + F.cross_entropy(logits2, target, reduction="sum", label_smoothing=cfg.label_smoothing)
                        ) / 2
                        lp, lq = F.log_softmax(logits, -1), F.log_softmax(logits2, -1)
                        kl = (
                            F.kl_div(lp, lq, log_target=True, reduction="sum")
                            + F.kl_div(lq, lp, log_target=True, reduction="sum")
                        ) / 2
                        loss = loss + cfg.rdrop * kl
                scaled = (loss + cfg.text_loss * text_ce) * self.world / n_global  # the log shows `loss` alone
                with record_function("step.backward"):
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total_loss += loss.detach()
        with record_function("step.optimizer"):
            self._optimizer_step()
        # the loss stays on the GPU: reading it every step would make the host wait for the GPU at each
        # step boundary, leaving the GPU idle while the next batch is prepared and its first kernels launched
        return total_loss * (self.world / n_global)

    def _optimizer_step(self) -> None:
        cfg = self.cfg
        if self.scaler:
            self.scaler.unscale_(self.opt)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            with torch.no_grad():
                for n, p in self.params.items():
                    self.ema[n].mul_(self.cfg.ema).add_(p.detach().float(), alpha=1 - self.cfg.ema)

    def _micro_batches(self, rows: np.ndarray, fwd) -> list[np.ndarray]:
        # FSDP: fixed row counts, as every rank must run the same number of passes (each all-gathers the weights)
        budget = 0 if self.fsdp else self.cfg.micro_tokens
        k = 2 if self.cfg.swap == "both" else 1  # sequences per row
        seq_len = np.fromiter((len(fwd[i]) * k for i in rows), dtype=np.int64, count=len(rows))
        return micro_batches(rows, seq_len, self.cfg.micro_batch, budget)

    def _examples(self, idx, fwd, rev, labels, flip):
        """Sequences, labels and side-input rows (or None) of one micro-batch."""
        seqs, ys, order = [], [], []  # order: 0 = A|B, 1 = B|A
        for i in idx:
            y = int(labels[i])
            ysw = int(swap_labels(y))
            if self.cfg.swap == "both":
                seqs += [fwd[i], rev[i]]
                ys += [y, ysw]
                order += [0, 1]
            elif flip[i]:
                seqs.append(rev[i])
                ys.append(ysw)
                order.append(1)
            else:
                seqs.append(fwd[i])
                ys.append(y)
                order.append(0)
        if self.aux is None:
            return seqs, ys, None
        rows = np.repeat(np.asarray(idx), 2) if self.cfg.swap == "both" else np.asarray(idx)
        side = np.where(np.asarray(order, dtype=bool)[:, None], self.aux[1][rows], self.aux[0][rows])
        side = side.astype(np.float32)
        return seqs, ys, side

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, step: int, sched) -> None:
        params = full_state(self.params)  # under FSDP a collective: every rank gathers
        opt_state = self._optimizer_state()
        ema = full_state(self.ema) if self.ema is not None else None
        if self.rank == 0:
            from lmsys_arena.io import atomic_path

            state = {
                "step": step,
                "params": params,
                "optimizer": opt_state,
                "scheduler": sched.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "ema": ema,
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            }
            with atomic_path(self.fold_dir / CKPT) as tmp:
                torch.save(state, tmp)
            log.info("checkpoint at step %d -> %s", step, self.fold_dir / CKPT)
        dist.barrier()

    def _resume(self, sched) -> int:
        path = self.fold_dir / CKPT
        if not path.exists():
            return 0
        state = torch.load(path, map_location="cpu", weights_only=False)
        if self.fsdp:
            load_full_state(self.model, self.opt, state["params"], state["optimizer"])
        else:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(state["params"][n].to(p.device, p.dtype))
            self.opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema = {n: place_like(self.ema[n], t) for n, t in state["ema"].items()}
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
        return int(state["step"])

    def _optimizer_state(self) -> dict:
        return full_optimizer_state(self.model, self.opt) if self.fsdp else self.opt.state_dict()
