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
* Targets (:func:`fit_targets`): a row's label, or its soft targets (``data.SOFT_COLS``: cross-entropy against
  a distribution, :func:`target_loss`), times its loss weight (``data.WEIGHT_COL``), plus with
  ``train.distill`` ``weight * T^2 * KL(teacher_T || student_T)`` towards a teacher run's log-probabilities
  (:func:`distill_loss`). A swapped row's soft targets and teacher predictions are swapped like its label
  (:func:`sequence_targets`). A micro-batch of one-hot rows of weight 1 without a teacher takes the plain
  ``F.cross_entropy`` of before.
* ``train.report_to``: every ``log_every`` steps the log line's loss, the learning rates and tokens/s also go
  to ``Trainer.curves`` (:class:`lmsys_arena.curves.Curves`, set by the family on rank 0).
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
from lmsys_arena.curves import Curves
from lmsys_arena.llm.batching import autocast, collate, micro_batches, plan_epoch, swap_mask, to_device
from lmsys_arena.llm.config import TrainConfig
from lmsys_arena.llm.format import lengths as seq_lengths
from lmsys_arena.llm.fsdp import full_optimizer_state, full_state, load_full_state, place_like, shard_fsdp
from lmsys_arena.swap import UNSWAP, swap_labels

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


# ---------------------------------------------------------------- targets and losses


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


# ---------------------------------------------------------------- the loop


def check_one_pass_per_step(cfg: TrainConfig, world: int) -> None:
    """CUDA-graph training (``model.compile: cudagraphs``) replays one forward pass per optimizer step: with
    gradient accumulation (several passes a step) the next pass overwrites graph outputs that the backward
    still reads, and training stops at its first step. Refuse that before anything runs."""
    from lmsys_arena.schema import ConfigError

    rows = math.ceil(cfg.batch_size / world)  # one rank's rows of a step
    if cfg.micro_batch < rows or (cfg.micro_tokens and cfg.micro_tokens < rows * cfg.pad_multiple):
        raise ConfigError(
            f"model.compile: cudagraphs runs one forward pass per optimizer step, but train.micro_batch "
            f"{cfg.micro_batch} / train.micro_tokens {cfg.micro_tokens} cut the {rows} rows of a step"
            f"{f' on each of {world} GPUs' if world > 1 else ''} into several: set train.micro_batch >= {rows} "
            f"(and micro_tokens 0 or >= {rows * cfg.pad_multiple}), or model.compile: true"
        )


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
        self.targets: Targets | None = None  # soft targets, weights, teacher predictions, set by fit
        self.cudagraphs = bool(getattr(model, "cudagraphs", False))  # set by compile.compile_layers
        if self.cudagraphs:
            check_one_pass_per_step(cfg, self.world)
        self.curves = Curves()  # train.report_to: the fold's curves writer (the family sets it on rank 0)
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
        targets: Targets | None = None,
    ):
        """Train on sequences ``fwd`` (A|B) / ``rev`` (B|A) with labels 0/1/2 (of the A|B order);
        ``aux``: the side-input rows of both orders (heads.AuxHead), or None; ``targets``: soft targets, row
        weights and teacher predictions (of the A|B order; :func:`fit_targets`), or None (the labels alone)."""
        self.aux = aux
        self.targets = targets
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
                lrs = sched.get_last_lr()
                self.curves.log(
                    {"train/loss": avg, "train/lr": lrs[0], "train/head_lr": lrs[-1], "train/tokens_per_s": recent},
                    step,
                )
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
                seqs, (y, soft, weight, teacher, kl_w), side = self._examples(idx, fwd, rev, labels, flip)
                ids, mask = collate(seqs, self.pad_id, device=self.device, multiple=cfg.pad_multiple)
                side = None if side is None else to_device(side, self.device)
                target = to_device(y, self.device)
                soft, weight, teacher, kl_w = (None if a is None else to_device(a, self.device)
                                               for a in (soft, weight, teacher, kl_w))  # fmt: skip
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
                        text_ce = target_loss(text.float(), target, soft, weight, cfg.label_smoothing)
                    else:
                        logits, text_ce = self.ddp(ids, mask, right_padded=True, aux=side).float(), 0.0
                    loss = target_loss(logits, target, soft, weight, cfg.label_smoothing)
                    if cfg.rdrop:
                        logits2 = self.ddp(ids, mask, right_padded=True, aux=side).float()
                        loss = (loss + target_loss(logits2, target, soft, weight, cfg.label_smoothing)) / 2
                        lp, lq = F.log_softmax(logits, -1), F.log_softmax(logits2, -1)
                        kl = (
                            F.kl_div(lp, lq, log_target=True, reduction="sum")
                            + F.kl_div(lq, lp, log_target=True, reduction="sum")
                        ) / 2
                        loss = loss + cfg.rdrop * kl
                kd = 0.0
                if teacher is not None:  # train.distill: the KL term towards the teacher
                    kd = cfg.distill.weight * distill_loss(logits, teacher, kl_w, cfg.distill.temperature)
                scaled = (loss + cfg.text_loss * text_ce + kd) * self.world / n_global  # the log shows `loss` alone
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
        """Sequences, their targets (:func:`sequence_targets`) and side-input rows (or None) of one micro-batch."""
        idx = np.asarray(idx)
        if self.cfg.swap == "both":  # a row and its swap, one after the other
            rows, order = np.repeat(idx, 2), np.tile([False, True], len(idx))
        else:
            rows, order = idx, np.asarray(flip, dtype=bool)[idx]
        seqs = [rev[i] if o else fwd[i] for i, o in zip(rows, order)]
        targets = sequence_targets(rows, order, labels, self.targets)
        if self.aux is None:
            return seqs, targets, None
        side = np.where(order[:, None], self.aux[1][rows], self.aux[0][rows])
        side = side.astype(np.float32)
        return seqs, targets, side

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
