"""The baselines ``llm_speed.py`` measures the project against in the same run: a naive Hugging Face inference
loop, and a plain HF ``Trainer`` + peft LoRA on the same rows (halving its rows a pass until it fits)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from speed_shapes import LORA, attention_flops, free, stock_config, sync


@torch.inference_mode()
def bench_naive(cfg, seqs, device, dtype, max_len: int, batch: int) -> dict:
    from transformers import AutoModelForSequenceClassification

    cfg = type(cfg)(**{**cfg.to_dict(), "num_labels": 3})
    cfg._attn_implementation = "eager"  # what HF picks for Gemma-2 with soft-capping on
    torch.manual_seed(0)
    with device:
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype).eval()
    ids = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    mask = (ids != 0).astype(np.int64)
    run = (
        lambda a, b, model=model: (
            model(
                input_ids=torch.from_numpy(ids[a:b]).to(device),  # noqa: E731
                attention_mask=torch.from_numpy(mask[a:b]).to(device),
            ).logits
        )
    )
    run(0, batch)  # warm-up
    sync(device)
    t0 = time.time()
    for a in range(0, len(seqs), batch):
        run(a, a + batch)
    sync(device)
    dt = time.time() - t0
    del model
    return {"seconds": dt, "rows_s": len(seqs) / dt}


def trainer_micro_batch(a, max_len: int) -> int:
    """Rows per forward pass of the HF Trainer baseline: ``--trainer-micro-batch``, else the project's
    ``--micro-batch`` capped by ``--micro-tokens`` / max length (a fixed-row pass must fit the token budget at
    the longest rows), lowered to a divisor of ``--train-batch`` (gradient accumulation covers the step)."""
    rows = a.trainer_micro_batch or min(
        a.micro_batch, max(1, a.micro_tokens // max_len) if a.micro_tokens else a.micro_batch
    )
    rows = max(1, min(rows, a.train_batch))
    while a.train_batch % rows:
        rows -= 1
    return rows


def bench_hf_trainer(cfg, seqs, labels, device, dtype, a, max_len: int, tmp: Path, micro: int = 0) -> dict:
    """A plain Hugging Face ``Trainer`` + peft LoRA on the same rows, LoRA, rows per step and steps as
    :func:`bench_train`: ``--warm-steps`` untimed steps, then ``--train-steps`` timed ones (from the end of the
    last warm-up step to the end of the last timed step, the GPU synchronised at both ends). Real tokens are
    counted from each collated micro-batch's attention mask, in the order the loop consumes them."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from lmsys_arena.llm.backbones import tiny_tokenizer

    micro = micro or trainer_micro_batch(a, max_len)
    accum = a.train_batch // micro
    warm, steps = a.warm_steps, a.train_steps
    torch.manual_seed(0)
    with device:
        model = AutoModelForSequenceClassification.from_config(stock_config(cfg, num_labels=3), dtype=dtype)
    model.config._attn_implementation = "sdpa"
    lora = LORA[a.shape]
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["target_modules"],
            task_type="SEQ_CLS",  # the classification head ("score") trains in full
        ),
    )
    # any tokenizer pads ids; the byte tokenizer's pad id is 0, the config's pad_token_id
    pad = DataCollatorWithPadding(tiny_tokenizer(), pad_to_multiple_of=a.pad_multiple if a.pad_multiple > 1 else None)
    passes: list[tuple[np.ndarray, int]] = []  # (row lengths, padded tokens) of each collated micro-batch, in order

    def collate(features):
        batch = pad(features)
        passes.append((batch["attention_mask"].sum(1).numpy(), int(batch["input_ids"].numel())))
        return batch

    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if warm == 0:
                sync(device)
                marks[0] = time.time()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step in (warm, warm + steps) and state.global_step not in marks:
                sync(device)
                marks[state.global_step] = time.time()

    # length-grouped batches: group_by_length=True, train_sampling_strategy="group_by_length" in later transformers
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    grouped = (
        {"train_sampling_strategy": "group_by_length"}
        if "train_sampling_strategy" in known
        else {"group_by_length": True}
    )
    args = TrainingArguments(
        output_dir=str(tmp / "hf_trainer"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accum,
        max_steps=warm + steps,
        **grouped,
        bf16=device.type == "cuda",
        use_cpu=device.type != "cuda",
        learning_rate=2e-4,
        weight_decay=0.0,
        max_grad_norm=1.0,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        seed=0,
    )
    data = [{"input_ids": s.tolist(), "labels": int(y)} for s, y in zip(seqs, labels)]
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Clock()])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    trainer.train()
    sync(device)
    total = time.time() - t0
    dt = marks[warm + steps] - marks[warm]
    timed = passes[warm * accum : (warm + steps) * accum]
    lengths = np.concatenate([r for r, _ in timed]).astype(np.int64)
    tokens, padded = int(lengths.sum()), sum(p for _, p in timed)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    optim = str(args.optim.value if hasattr(args.optim, "value") else args.optim)
    del trainer, model
    free(device)
    return {
        "seconds": dt,
        "steps": steps,
        "tokens": tokens,
        "padded_tokens": padded,
        "tokens_s": tokens / dt,
        "attention_flops_s": attention_flops(cfg, lengths, passes=3) / dt,
        "max_mem_gib": mem,
        "warmup_s": total - dt,
        "micro_batch": micro,
        "grad_accum": accum,
        "optim": optim,
        "sampler": next(iter(grouped)),
        "step_ms": 1e3 * dt / max(steps, 1),
    }


def bench_hf_trainer_fitting(cfg, seqs, labels, device, dtype, a, max_len: int) -> dict:
    """:func:`bench_hf_trainer` at the most rows a pass that fit: on CUDA out-of-memory the pass is halved (to a
    divisor of ``--train-batch``, gradient accumulation keeps the rows per step), as a Trainer user would do; stock
    HF modules keep more activations than the project's loop, so its token budget may not fit them."""

    micro, oom = trainer_micro_batch(a, max_len), []
    while True:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                hf = bench_hf_trainer(cfg, seqs, labels, device, dtype, a, max_len, Path(tmp), micro=micro)
            return {**hf, "oom_rows_per_pass": oom}
        except torch.OutOfMemoryError:
            if micro == 1:
                raise
            oom.append(micro)
        free(device)  # outside the except clause: its traceback no longer holds the failed model's tensors
        micro = next(d for d in range(micro // 2, 0, -1) if a.train_batch % d == 0)  # a divisor: whole steps
        print(f"HF Trainer baseline: out of memory at {oom[-1]} rows a pass, retrying at {micro}", flush=True)
