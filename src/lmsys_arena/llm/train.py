"""The LoRA training loop: plain PyTorch (+ DistributedDataParallel, or FSDP2 via :mod:`llm.fsdp`, under
torchrun), resumable. The batch plan is :mod:`llm.batching`, the optimizer, schedule and EMA
:mod:`llm.optim`, the targets :mod:`llm.training_targets` and the losses :mod:`llm.losses`.

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
* Targets (:func:`lmsys_arena.llm.training_targets.fit_targets`): a row's label, or its soft targets, times its loss
  weight, plus with ``train.distill`` a KL term towards a teacher run's log-probabilities.
* ``train.report_to``: every ``log_every`` steps the log line's loss, the learning rates and tokens/s also go
  to ``Trainer.curves`` (:class:`lmsys_arena.curves.Curves`, set by the family on rank 0).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.profiler import record_function

from lmsys_arena import dist
from lmsys_arena.curves import Curves
from lmsys_arena.llm.batching import autocast, collate, micro_batches, plan_epoch, swap_mask, to_device
from lmsys_arena.llm.config import TrainConfig
from lmsys_arena.llm.format import lengths as seq_lengths
from lmsys_arena.llm.fsdp import full_optimizer_state, full_state, load_full_state, shard_fsdp
from lmsys_arena.llm.losses import distill_loss, symmetric_kl, target_loss
from lmsys_arena.llm.optim import Ema, make_optimizer, make_scheduler
from lmsys_arena.llm.training_targets import Targets, sequence_targets

log = logging.getLogger(__name__)
CKPT = "ckpt.pt"


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


class MicroBatch(NamedTuple):
    """One micro-batch on the device: padded token ids and mask, side inputs (or None), int labels, and the
    float targets of :func:`lmsys_arena.llm.training_targets.sequence_targets` (each None when unused)."""

    ids: torch.Tensor
    mask: torch.Tensor
    side: torch.Tensor | None
    target: torch.Tensor
    soft: torch.Tensor | None
    weight: torch.Tensor | None
    teacher: torch.Tensor | None
    kl_weight: torch.Tensor | None


class Progress:
    """What the log lines report: rows and tokens since the loop started, and a running mean of the loss (an
    EMA of GPU tensors: reading it would make the host wait for the GPU, so only the log lines do)."""

    def __init__(self, step: int):
        self.t0 = time.time()
        self.rows = self.toks = 0
        self.loss = None
        self.last = (self.t0, 0, step)  # time, tokens, step at the last log line: the recent (steady-state) rate

    def add(self, rows: int, toks: int, loss: torch.Tensor) -> None:
        self.rows += rows
        self.toks += toks
        self.loss = loss if self.loss is None else 0.98 * self.loss + 0.02 * loss


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
        self.opt = make_optimizer(self.params, cfg, fused=device.type == "cuda" and not self.fsdp)
        self.scaler = torch.amp.GradScaler("cuda") if (dtype == torch.float16 and device.type == "cuda") else None
        self.ema = Ema(self.params, cfg.ema) if cfg.ema else None
        self.aux = None  # (A|B rows, B|A rows) of side inputs, set by fit
        self.targets: Targets | None = None  # soft targets, weights, teacher predictions, set by fit
        self.cudagraphs = bool(getattr(model, "cudagraphs", False))  # set by compile.compile_layers
        if self.cudagraphs:
            check_one_pass_per_step(cfg, self.world)
        self.curves = Curves()  # train.report_to: the fold's curves writer (the family sets it on rank 0)
        self.ddp = self._data_parallel(model) if self.world > 1 and not self.fsdp else model

    def _data_parallel(self, model):
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
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
        weights and teacher predictions (of the A|B order; :func:`lmsys_arena.llm.training_targets.fit_targets`),
        or None (the labels alone)."""
        self.aux = aux
        self.targets = targets
        from tqdm.auto import tqdm

        cfg = self.cfg
        if cfg.batch_size % self.world:
            raise ValueError(f"train.batch_size={cfg.batch_size} must be divisible by the {self.world} GPUs")
        lengths = seq_lengths(fwd)
        per_epoch = max(len(fwd) // cfg.batch_size, 1)
        total = max(int(math.ceil(cfg.epochs * per_epoch)), 1)
        sched = make_scheduler(self.opt, cfg, total)
        step = self._resume(sched)
        if step:
            log.info("resuming from %s at step %d/%d", self.fold_dir / CKPT, step, total)
        self.model.train()
        bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=self.rank != 0, mininterval=5)
        progress, plans = Progress(step), {}
        while step < total:
            epoch, k = divmod(step, per_epoch)
            if epoch not in plans:
                plans = {epoch: self._epoch_plan(epoch, lengths)}
            batch, flip = plans[epoch][0][k], plans[epoch][1]
            loss = self._step(batch, fwd, rev, labels, flip)  # a GPU tensor: no wait for the GPU here
            sched.step()
            step += 1
            progress.add(len(batch), int(lengths[batch].sum()) * (2 if cfg.swap == "both" else 1), loss)
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:  # the only host-GPU sync of the loop
                self._log_progress(step, total, sched, bar, progress)
            if step % cfg.checkpoint_every == 0 and step < total:
                self.save_checkpoint(step, sched)
            if stop_after is not None and step >= stop_after:
                break
        bar.close()
        if self.ema is not None:
            self.ema.copy_to(self.params)
        return step

    def _epoch_plan(self, epoch: int, lengths: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """The epoch's batches and swap mask, seeded by the epoch (a resumed run gets the same)."""
        cfg = self.cfg
        return (
            plan_epoch(lengths, cfg.batch_size, self.seed, epoch, cfg.group_by_length),
            swap_mask(len(lengths), self.seed, epoch, cfg.swap),
        )

    def _log_progress(self, step: int, total: int, sched, bar, progress: Progress) -> None:
        """The log line (and curves, and the bar's numbers) of ``step``: the running loss, the learning rate,
        rows/s and tokens/s since the start and tokens/s since the last line."""
        now, avg = time.time(), float(progress.loss)
        rows, toks, last = progress.rows, progress.toks, progress.last
        dt, recent = max(now - progress.t0, 1e-9), (toks - last[1]) / max(now - last[0], 1e-9)
        lrs = sched.get_last_lr()
        self.curves.log(
            {"train/loss": avg, "train/lr": lrs[0], "train/head_lr": lrs[-1], "train/tokens_per_s": recent}, step
        )
        bar.set_postfix(loss=f"{avg:.4f}", rows_s=f"{rows / dt:.1f}", tok_s=f"{toks / dt:.0f}", refresh=False)
        log.info(
            "step %d/%d loss %.4f lr %.2e  %.1f rows/s  %.0f tokens/s (this GPU x %d)  "
            "%.0f tokens/s all GPUs over the last %d steps",
            step,
            total,
            avg,
            lrs[0],
            rows / dt,
            toks / dt / self.world,
            self.world,
            recent,
            step - last[2],
        )
        progress.last = (now, toks, step)

    def _step(self, batch, fwd, rev, labels, flip) -> torch.Tensor:
        """One optimizer step on the global ``batch`` (this rank's share of it, in micro-batches); returns the
        step's mean loss (without the text-head and distillation terms) as a GPU tensor."""
        cfg = self.cfg
        mine = batch[self.rank :: self.world]
        n_global = len(batch) * (2 if cfg.swap == "both" else 1)
        micro = self._micro_batches(mine, fwd)
        total_loss = torch.zeros((), device=self.device)
        for j, idx in enumerate(micro):
            with record_function("step.batch"):
                mb = self._device_batch(idx, fwd, rev, labels, flip)
            sync = j == len(micro) - 1 or self.world == 1
            if self.fsdp:  # reduce-scatter the gradients on the last micro-batch only
                self.ddp.set_requires_gradient_sync(sync)
            ctx = self.ddp.no_sync() if (not sync and hasattr(self.ddp, "no_sync")) else contextlib.nullcontext()
            if self.cudagraphs:  # the previous pass's graph outputs may be overwritten from here on
                torch.compiler.cudagraph_mark_step_begin()
            with ctx:
                logits, loss, text_ce = self._forward(mb)
                kd = 0.0
                if mb.teacher is not None:  # train.distill: the KL term towards the teacher
                    kd = cfg.distill.weight * distill_loss(logits, mb.teacher, mb.kl_weight, cfg.distill.temperature)
                scaled = (loss + cfg.text_loss * text_ce + kd) * self.world / n_global  # the log shows `loss` alone
                with record_function("step.backward"):
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total_loss += loss.detach()
        with record_function("step.optimizer"):
            self._optimizer_step()
        # the loss stays on the GPU: reading it every step would make the host wait for the GPU at each
        # step boundary, leaving the GPU idle while the next batch is prepared and its first kernels launched
        return total_loss * (self.world / n_global)

    def _forward(self, mb: MicroBatch):
        """The micro-batch's forward pass(es) under autocast: ``(logits, loss, text-head loss)``, the loss with
        R-Drop's second pass and KL term where ``train.rdrop``; the text-head loss is 0.0 unless
        ``train.text_loss`` with an aux head (the text head alone must then also fit the targets)."""
        cfg = self.cfg
        with autocast(self.device, self.dtype), record_function("step.forward"):
            if cfg.text_loss and mb.side is not None:
                logits, text = self.ddp(mb.ids, mb.mask, right_padded=True, aux=mb.side, with_text=True)
                logits = logits.float()
                text_ce = target_loss(text.float(), mb.target, mb.soft, mb.weight, cfg.label_smoothing)
            else:
                logits, text_ce = self.ddp(mb.ids, mb.mask, right_padded=True, aux=mb.side).float(), 0.0
            loss = target_loss(logits, mb.target, mb.soft, mb.weight, cfg.label_smoothing)
            if cfg.rdrop:
                logits2 = self.ddp(mb.ids, mb.mask, right_padded=True, aux=mb.side).float()
                loss = (loss + target_loss(logits2, mb.target, mb.soft, mb.weight, cfg.label_smoothing)) / 2
                loss = loss + cfg.rdrop * symmetric_kl(logits, logits2)
        return logits, loss, text_ce

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
            self.ema.update(self.params)

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

    def _device_batch(self, idx, fwd, rev, labels, flip) -> MicroBatch:
        """The micro-batch ``idx`` (:meth:`_examples`) padded and on the device."""
        seqs, (y, soft, weight, teacher, kl_w), side = self._examples(idx, fwd, rev, labels, flip)
        ids, mask = collate(seqs, self.pad_id, device=self.device, multiple=self.cfg.pad_multiple)
        side = None if side is None else to_device(side, self.device)
        target = to_device(y, self.device)
        soft, weight, teacher, kl_w = (None if a is None else to_device(a, self.device)
                                       for a in (soft, weight, teacher, kl_w))  # fmt: skip
        return MicroBatch(ids, mask, side, target, soft, weight, teacher, kl_w)

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, step: int, sched) -> None:
        """``fold_dir/ckpt.pt`` at ``step``: full trainable weights, optimizer, scheduler, scaler, EMA and RNG
        (written by rank 0; every rank takes part in the gathering)."""
        params = full_state(self.params)  # under FSDP a collective: every rank gathers
        opt_state = self._optimizer_state()
        ema = full_state(self.ema.weights) if self.ema is not None else None
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
        """The step of ``fold_dir/ckpt.pt`` with its state loaded (0 without one)."""
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
            self.ema.load(state["ema"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
        return int(state["step"])

    def _optimizer_state(self) -> dict:
        return full_optimizer_state(self.model, self.opt) if self.fsdp else self.opt.state_dict()
