"""LLM inference and LoRA-training speed at Gemma-2-2B shape (random weights, built in code).

    torchrun --nproc-per-node 2 benchmarks/llm_speed.py --shape gemma3-270m --skip naive,infer --compile
                                   # LoRA training with DDP (tokens/s of all GPUs together; MFU per GPU)

    python benchmarks/llm_speed.py --out runs/llm_speed.json            # one GPU (H100: the reported numbers)
    python benchmarks/llm_speed.py --small --rows 64 --train-steps 3     # CPU dry run at a tiny shape
    python benchmarks/llm_speed.py --variants "before:--peft-cast --no-expandable" "new:--compile --micro-tokens 32768"
                                   # one process per variant, the other flags shared; a SUMMARY table at the end
    python benchmarks/llm_speed.py --skip naive,trainer --variants "compiled:--compile" "liger:--kernels liger" \
        "both:--compile --kernels liger"       # model.kernels: liger (liger-kernel's fused RMSNorm, GeGLU, rotary)
    python benchmarks/llm_speed.py --skip naive,train --t4 [--quant 8bit]   # + the Kaggle T4 inference path
    python benchmarks/llm_speed.py --skip naive,infer,train --parity --kernels liger   # fused vs unfused results

Rows have lognormal token lengths (mean ~720, clipped to [32, 2048]); shapes, lengths and FLOP counts are in
``speed_shapes.py``, the naive and HF Trainer baselines in ``speed_baselines.py``. Measured in the same run:

* naive:   HF AutoModelForSequenceClassification, default Gemma-2 config (soft-capping on -> eager
           attention), every batch padded to 2048, arrival order, batch 8;
* project: lmsys_arena.llm inference path (PreferenceModel, sdpa, soft-capping off, length-sorted
           token-budget batches with dynamic padding);
* LoRA training: lmsys_arena.llm.model.for_training + lmsys_arena.llm.train.Trainer (r=16 on q,k,v,o,gate,
           bf16, length-grouped batches, ``--micro-tokens`` budget); ``--compile`` = model.compile,
           ``--kernels liger`` = model.kernels (llm.fused.apply_kernels on the built backbone);
* trainer: a plain Hugging Face ``Trainer`` + peft LoRA (the same LoRA, rows, rows per step and timed steps)
           on AutoModelForSequenceClassification(num_labels=3) of the same config (soft-capping off, sdpa):
           length-grouped sampler, DataCollatorWithPadding, bf16 (fp32 on a CPU); stock modules even with
           ``--kernels liger``. ``train_speedup_vs_trainer`` = project tokens/s / trainer tokens/s;
* ``--t4``: the project inference path as a Kaggle T4 kernel runs it (key ``infer_t4_path``): fp16 weights and
           autocast (fp32 for fp16-unsafe model types, llm.kaggle.FP16_UNSAFE, as the kernel does), sdpa with
           FlashAttention and cuDNN attention off (sm75 has neither: mem-efficient / math kernels), ``--quant``
           bitsandbytes weights through llm.backbones.load_backbone (infer.quant).

MFU counts matrix-multiply FLOPs of the non-embedding weights N only (attention score FLOPs are
reported separately, not counted): inference 2*N per real (non-pad) token; LoRA training with a
frozen base 4*N per real token (forward 2N + input-gradient backward 2N; no weight gradients for
frozen weights; LoRA's own FLOPs and activation-checkpoint recompute are not counted).
Peak: H100 SXM dense fp16/bf16 989.4 TFLOP/s (``--peak`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, also when loaded by file path
from speed_baselines import bench_hf_trainer_fitting, bench_naive  # noqa: E402
from speed_shapes import (  # noqa: E402
    LORA,
    SHAPES,
    attention_flops,
    free,
    lognormal_lengths,
    make_seqs,
    modeling_module,
    non_embedding_params,
    nonembed_count,
    stock_config,
    stock_modeling,
    sync,
)


def summary_line(res: dict, tag: str) -> str:
    pi, tr, nv = res.get("project_infer", {}), res.get("lora_train", {}), res.get("naive_infer", {})
    f = lambda d, k, fmt: format(d[k], fmt) if k in d else "-"  # noqa: E731
    return (
        f"SUMMARY {tag or '-':<24} infer {f(pi, 'rows_s', '.1f')} rows/s mfu {f(pi, 'mfu', '.3f')} "
        f"x{f(res, 'infer_speedup', '.2f')} naive {f(nv, 'rows_s', '.1f')} | "
        f"train {f(tr, 'tokens_s', '.0f')} tok/s mfu {f(tr, 'mfu', '.3f')} "
        f"(+attn {f(tr, 'mfu_incl_attention', '.3f')}) "
        f"mem {f(tr, 'max_mem_gib', '.1f')} GiB pad {tr.get('padded_tokens', 0) / max(tr.get('tokens', 1), 1):.2f}"
        f" warm {f(pi, 'warmup_s', '.0f')}/{f(tr, 'warmup_s', '.0f')} s"
        + (
            f" | t4 {f(t4, 'rows_s', '.1f')} rows/s mfu {f(t4, 'mfu', '.3f')} ({t4.get('dtype', '-')})"
            if (t4 := res.get("infer_t4_path"))
            else ""
        )
        + (
            f" | parity logits {f(pa, 'logits_rel_diff', '.1e')} grads {f(pa, 'grads_rel_diff', '.1e')}"
            if (pa := res.get("kernels_parity"))
            else ""
        )
        + (
            f" | trainer {f(hf, 'tokens_s', '.0f')} tok/s mfu {f(hf, 'mfu', '.3f')}"
            f" x{f(res, 'train_speedup_vs_trainer', '.2f')}"
            if (hf := res.get("hf_trainer"))
            else ""
        )
    )


def build_project_model(cfg, device, dtype, lora: bool, a, quant: str | None = None):
    """The project's own model paths (model.for_training / compile_layers) on a random-init backbone, with
    ``--kernels`` applied as llm.backbones.load_backbone applies model.kernels. ``quant`` (inference only):
    the random backbone is saved and loaded again through load_backbone with model.quant (bitsandbytes)."""
    import tempfile

    from transformers import AutoModel

    from lmsys_arena.llm.backbones import DTYPES, load_backbone
    from lmsys_arena.llm.compile import compile_layers
    from lmsys_arena.llm.config import LoraOptions, ModelConfig
    from lmsys_arena.llm.fused import apply_kernels
    from lmsys_arena.llm.heads import make_head
    from lmsys_arena.llm.model import PreferenceModel, for_training, lora_input_cast

    cfg = stock_config(cfg)
    torch.manual_seed(0)
    with device:
        backbone = AutoModel.from_config(cfg, dtype=dtype)
    backbone.config._attn_implementation = "sdpa"
    if quant:
        name = next(k for k, v in DTYPES.items() if v == dtype)
        with tempfile.TemporaryDirectory(prefix="llm_speed_") as tmp:
            backbone.save_pretrained(tmp)
            del backbone
            free(device)
            mcfg = ModelConfig(dtype=name, quant=quant, attn="sdpa", kernels=a.kernels)
            backbone = load_backbone(Path(tmp), mcfg, device)  # model.kernels applied in there
    else:
        apply_kernels(backbone, a.kernels, device)
    if not lora:
        model = PreferenceModel(backbone, make_head(cfg.hidden_size).to(device))
        if a.compile:
            compile_layers(model)
        return model
    mcfg = ModelConfig(
        compile="cudagraphs" if a.cudagraphs else a.compile, lora=LoraOptions(**LORA[a.shape]), kernels=a.kernels
    )
    model = for_training(backbone, mcfg, device)
    if a.peft_cast:  # the old behaviour: peft's fp32 input cast before every LoRA matmul
        lora_input_cast(model.backbone, True)
    return model


def gpu_busy(fn, device) -> dict:
    """Wall time of ``fn`` and the summed GPU kernel time inside it (one stream: kernels do not overlap),
    to tell a launch-bound (host-bound) step from a GPU-bound one."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.time()
        fn()
        sync(device)
        wall = time.time() - t0
    events = prof.events()  # not the GPU-side copies of record_function ranges (they span many kernels)
    kern = sum(e.device_time for e in events if is_kernel(e)) / 1e6
    return {"wall_s": wall, "gpu_kernel_s": kern, "busy": kern / wall, "idle_ms_by_host_range": idle_by_range(events)}


def is_kernel(e) -> bool:
    return e.device_type.name == "CUDA" and not e.name.startswith(("step.", "ProfilerStep"))


def idle_by_range(events) -> dict:
    """GPU idle time (gaps between kernels, ms) by what the host was doing then: the Trainer's
    ``step.*`` record_function ranges (batch / forward / backward / optimizer), ``other`` outside them;
    plus how much of it came in gaps under 20 us (launch-rate bound) vs longer ones (host stalls)."""
    kernels = sorted((e.time_range.start, e.time_range.end) for e in events if is_kernel(e))
    ranges = [
        (e.time_range.start, e.time_range.end, e.name)
        for e in events
        if e.device_type.name == "CPU" and e.name.startswith("step.")
    ]
    out, small, end = {}, 0.0, None
    for s, e in kernels:
        if end is not None and s > end:
            gap = (s - end) / 1e3
            small += gap if gap < 0.02 else 0.0
            mid = (s + end) / 2
            names = [n for a, b, n in ranges if a <= mid <= b]
            key = names[-1] if names else "other"
            out[key] = out.get(key, 0.0) + gap
        end = e if end is None else max(end, e)
    out = {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
    out["in_gaps_under_20us"] = round(small, 2)
    return out


def profile_table(fn, device, rows: int = 18) -> str:
    """Top CUDA kernels of one call of ``fn`` (after warm-up), by total device time."""
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return ""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)


def bench_project_infer(cfg, seqs, device, dtype, a, quant: str | None = None) -> dict:
    from lmsys_arena.llm.config import InferConfig
    from lmsys_arena.llm.infer import score_local

    model = build_project_model(cfg, device, dtype, lora=False, a=a, quant=quant).eval()
    icfg = InferConfig(max_tokens=a.max_tokens, max_rows=a.max_rows)
    t0 = time.time()
    for k in (8, 24, 64):  # warm-up (and, with --compile, compile) on a few batch shapes
        score_local(model, seqs[:: max(1, len(seqs) // k)][:k], 0, icfg, device, dtype, progress=False)
    sync(device)
    warm = time.time() - t0
    t0 = time.time()
    score_local(model, seqs, 0, icfg, device, dtype, progress=False)
    sync(device)
    dt = time.time() - t0
    if a.profile:
        print(profile_table(lambda m=model: score_local(m, seqs[:256], 0, icfg, device, dtype, progress=False), device))
    n = nonembed_count(cfg) if quant else non_embedding_params(model.backbone)  # packed 4-bit weights: count the shape
    del model
    free(device)
    return {
        "seconds": dt,
        "rows_s": len(seqs) / dt,
        "params_nonembed": n,
        "warmup_s": warm,
        "attention_flops_s": attention_flops(cfg, np.fromiter(map(len, seqs), np.int64), passes=1) / dt,
    }


def t4_dtype(cfg, a, device) -> str:
    """The precision a Kaggle T4 kernel scores this model type in (llm.kaggle.kernel_precision's rule: fp16, fp32
    for fp16-unsafe types such as Gemma 3); ``--t4-dtype`` overrides; fp32 on a CPU (as the project runs there)."""
    from lmsys_arena.llm.kaggle import FP16_UNSAFE

    if device.type != "cuda":
        return "fp32"
    return a.t4_dtype or ("fp32" if str(cfg.model_type).startswith(FP16_UNSAFE) else "fp16")


@contextlib.contextmanager
def t4_attention():
    """sdpa as on a T4 (sm75): no FlashAttention (FA2 needs sm80) and no cuDNN attention; the memory-efficient
    and math kernels stay allowed. The flags are restored afterwards."""
    cuda = torch.backends.cuda
    before = (cuda.flash_sdp_enabled(), cuda.cudnn_sdp_enabled())
    cuda.enable_flash_sdp(False)
    cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        cuda.enable_flash_sdp(before[0])
        cuda.enable_cudnn_sdp(before[1])


def bench_t4_infer(cfg, seqs, device, a) -> dict:
    """The project inference path as a Kaggle T4 kernel runs it: :func:`t4_dtype` weights and autocast, T4
    attention kernels (:func:`t4_attention`), ``--quant`` weights (infer.quant), the run's compile and kernels."""
    from lmsys_arena.llm.backbones import DTYPES

    name = t4_dtype(cfg, a, device)
    with t4_attention():
        out = bench_project_infer(cfg, seqs, device, DTYPES[name], a, quant=a.quant)
    return {**out, "dtype": name, "quant": a.quant, "flash_sdp": False, "cudnn_sdp": False}


def bench_train(cfg, seqs, device, dtype, a, tmp: Path) -> dict:
    from lmsys_arena.llm.batching import plan_epoch, round_up
    from lmsys_arena.llm.config import TrainConfig
    from lmsys_arena.llm.train import Trainer

    model = build_project_model(cfg, device, dtype, lora=True, a=a)
    model.train()
    labels = np.random.default_rng(0).integers(0, 3, len(seqs))
    tcfg = TrainConfig(
        epochs=1,
        batch_size=a.train_batch,
        micro_batch=a.micro_batch,
        micro_tokens=a.micro_tokens,
        swap="none",
        checkpoint_every=10**9,
        log_every=10**9,
        pad_multiple=a.pad_multiple,
        strategy=a.strategy,
    )
    warm = a.warm_steps
    tr = Trainer(model, tcfg, device, dtype, 0, tmp, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.time()
    tr.fit(seqs, seqs, labels, stop_after=warm)
    sync(device)
    warm_s = time.time() - t0
    # the next steps of the same plan on the warmed-up model; count their real tokens
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64)
    plan = plan_epoch(lengths, a.train_batch, 0, 0, True)
    timed = plan[warm : warm + a.train_steps]
    tokens = int(sum(lengths[b].sum() for b in timed))
    padded = int(
        sum(
            sum(len(m) * round_up(int(lengths[m].max()), a.pad_multiple) for m in tr._micro_batches(b, seqs))
            for b in timed
        )
    )
    no_flip = np.zeros(len(seqs), dtype=bool)
    t0 = time.time()
    for b in timed:
        tr._step(b, seqs, seqs, labels, no_flip)
    sync(device)
    dt = time.time() - t0
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    busy = (
        gpu_busy(lambda t=tr: [t._step(b, seqs, seqs, labels, no_flip) for b in timed[:5]], device)
        if device.type == "cuda"
        else {}
    )
    if a.profile:
        print(profile_table(lambda t=tr: t._step(plan[-1], seqs, seqs, labels, no_flip), device))
    del model, tr
    attn = attention_flops(cfg, np.concatenate([lengths[b] for b in timed]), passes=3)
    return {
        "seconds": dt,
        "steps": len(timed),
        "tokens": tokens,
        "padded_tokens": padded,
        "tokens_s": tokens / dt,
        "attention_flops_s": attn / dt,
        "max_mem_gib": mem,
        "warmup_s": warm_s,
        "world": int(os.environ.get("WORLD_SIZE", "1")),
        "gpu_busy": busy.get("busy"),
        "idle_ms": busy.get("idle_ms_by_host_range"),
        "step_ms": 1e3 * dt / max(len(timed), 1),
    }


def bench_parity(cfg, seqs, device, dtype, a) -> dict:
    """``--parity``: the project's LoRA model on the first ``--parity-rows`` rows, run with model.kernels none and
    then again with ``--kernels`` patched into the same weights (llm.fused.apply_kernels on the peft base
    model): relative L2 differences of the logits and of the trainable weights' gradients (cross-entropy on
    fixed labels; dropout off; LoRA B and the head drawn non-zero so that every gradient flows)."""
    import torch.nn.functional as F

    from lmsys_arena.llm.batching import autocast, collate
    from lmsys_arena.llm.fused import apply_kernels

    stock = argparse.Namespace(**{**vars(a), "kernels": "none", "compile": False, "cudagraphs": False})
    model = build_project_model(cfg, device, dtype, lora=True, a=stock).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    ids, mask = collate(seqs[: a.parity_rows], 0, device=device)
    labels = torch.arange(len(ids), device=device) % 3

    def run(m):
        m.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            logits = m(ids, mask, right_padded=True).float()
        F.cross_entropy(logits, labels).backward()
        grads = {n: p.grad.detach().float().clone() for n, p in m.named_parameters() if p.grad is not None}
        return logits.detach(), grads

    rel = lambda x, y: float((x - y).norm() / y.norm().clamp_min(1e-30))  # noqa: E731
    logits0, grads0 = run(model)
    apply_kernels(model.backbone.get_base_model(), a.kernels, device)
    logits1, grads1 = run(model)
    per = {n: rel(grads1[n], g) for n, g in grads0.items()}
    worst = max(per, key=per.get)
    flat = lambda g: torch.cat([v.flatten() for _, v in sorted(g.items())])  # noqa: E731
    del model
    free(device)
    return {
        "kernels": a.kernels,
        "dtype": str(dtype),
        "rows": len(ids),
        "logits_rel_diff": rel(logits1, logits0),
        "grads_rel_diff": rel(flat(grads1), flat(grads0)),
        "worst_grad": worst,
        "worst_grad_rel_diff": per[worst],
    }


def run_variants(variants: list[str], argv: list[str]) -> dict:
    """``--variants "before:--peft-cast" "new:--compile"``: one subprocess each, then a summary table."""
    i = argv.index("--variants")
    common = argv[:i] + [x for x in argv[i + 1 :] if x not in variants]
    lines = {}
    for v in variants:
        name, _, flags = v.partition(":")
        cmd = [sys.executable, __file__, *common, *shlex.split(flags), "--tag", name]
        print("#", " ".join(cmd), flush=True)
        t0 = time.time()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = p.stdout
        print(
            out[-6000:] if p.returncode else "\n".join(x for x in out.splitlines() if not x.startswith(" ")), flush=True
        )
        lines[name] = (
            next(
                (x for x in out.splitlines() if x.startswith("SUMMARY")), f"SUMMARY {name:<24} FAILED rc={p.returncode}"
            )
            + f" ({time.time() - t0:.0f} s)"
        )
    print("\n".join(lines.values()), flush=True)
    return lines


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--mean-len", type=float, default=720)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument(
        "--raw-lognormal",
        action="store_true",
        help="--mean-len is the mean before clipping to max-len (~650 after it for 720/2048; earlier runs)",
    )
    ap.add_argument("--naive-batch", type=int, default=8)
    ap.add_argument(
        "--naive-rows",
        type=int,
        default=256,
        help="rows for the naive loop (always padded to max-len, so its rows/s does not depend on which rows)",
    )
    ap.add_argument("--max-tokens", type=int, default=65536, help="project inference token budget per batch")
    ap.add_argument("--max-rows", type=int, default=512, help="project inference rows per batch (at most)")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--warm-steps", type=int, default=3)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--micro-tokens", type=int, default=0, help="train.micro_tokens (0: fixed micro-batch rows)")
    ap.add_argument("--compile", action="store_true", help="model.compile: regional torch.compile of the layers")
    ap.add_argument("--cudagraphs", action="store_true", help="model.compile: cudagraphs (training only)")
    ap.add_argument(
        "--kernels",
        choices=["none", "liger"],
        default="none",
        help="model.kernels of the project paths (liger: liger-kernel's RMSNorm, GeGLU/SwiGLU, rotary); the naive "
        "loop and the HF Trainer baseline stay stock",
    )
    ap.add_argument(
        "--t4",
        action="store_true",
        help="also time the project inference path as a Kaggle T4 kernel runs it (infer_t4_path): fp16 (fp32 for "
        "fp16-unsafe types), no FlashAttention / cuDNN attention",
    )
    ap.add_argument("--t4-dtype", choices=["fp16", "fp32"], default=None, help="--t4 precision (default: the kernel's)")
    ap.add_argument(
        "--quant", choices=["8bit", "4bit"], default=None, help="--t4 path: bitsandbytes weights (infer.quant)"
    )
    ap.add_argument(
        "--parity",
        action="store_true",
        help="also compare logits and LoRA gradients with model.kernels none vs --kernels on the same weights (key "
        "kernels_parity; training precision)",
    )
    ap.add_argument("--parity-rows", type=int, default=8, help="rows of the --parity batch")
    ap.add_argument(
        "--infer-dtype",
        choices=["fp16", "bf16"],
        default="fp16",
        help="project / naive inference precision on a GPU (fp16: what earlier runs used)",
    )
    ap.add_argument(
        "--trainer-micro-batch",
        type=int,
        default=0,
        help="HF Trainer baseline rows per pass (0: --micro-batch capped by --micro-tokens / max length)",
    )
    ap.add_argument("--pad-multiple", type=int, default=1, help="train.pad_multiple")
    ap.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp", help="train.strategy under torchrun")
    ap.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="gemma2-2b",
        help="backbone shape (random weights); LoRA as in that model's config",
    )
    ap.add_argument("--peft-cast", action="store_true", help="keep peft's fp32 cast of LoRA inputs (old behaviour)")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one batch / step")
    ap.add_argument("--tag", default="", help="label of this variant in the summary line")
    ap.add_argument("--peak", type=float, default=989.4e12)
    ap.add_argument("--small", action="store_true", help="tiny shape (CPU dry run)")
    ap.add_argument(
        "--skip",
        default="",
        help="comma list of parts to skip: naive,infer,train,trainer (train also skips trainer: the HF Trainer "
        "baseline)",
    )
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--no-expandable",
        action="store_true",
        help="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:False (the old allocator setting)",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME:FLAGS",
        help="run each variant in its own process (the other arguments shared) and print a table",
    )
    a = ap.parse_args(argv)
    if a.variants:
        return run_variants(a.variants, [x for x in (argv if argv is not None else sys.argv[1:])])
    if a.no_expandable:
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:False"
    local = int(os.environ.get("LOCAL_RANK", "0"))  # under torchrun: training with DDP, one GPU per process
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if int(os.environ.get("RANK", "0")):
        sys.stdout = open(os.devnull, "w")  # rank 0 reports
    dtype = (torch.bfloat16 if a.infer_dtype == "bf16" else torch.float16) if device.type == "cuda" else torch.float32
    cfg = SHAPES[a.shape](a.small)
    module = modeling_module(cfg)  # its namespace before any --kernels patch: the stock baselines run with it
    saved = dict(vars(module)) if a.kernels != "none" else None
    max_len = min(a.max_len, 256) if a.small else a.max_len
    mean_len = min(a.mean_len, max_len / 3) if a.small else a.mean_len
    lengths = lognormal_lengths(a.rows, mean_len, max_len, match_mean=not a.raw_lognormal)
    seqs = make_seqs(lengths, cfg.vocab_size)
    skip = set(filter(None, a.skip.split(",")))
    res = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "rows": a.rows,
        "mean_len": float(lengths.mean()),
        "max_len": int(lengths.max()),
        "dtype": str(dtype),
        "kernels": a.kernels,
    }
    print(json.dumps(res), flush=True)
    if "infer" not in skip:
        res["project_infer"] = bench_project_infer(cfg, seqs, device, dtype, a)
        n = res["project_infer"]["params_nonembed"]
        flops = 2 * n * lengths.sum()
        res["project_infer"]["mfu"] = flops / res["project_infer"]["seconds"] / a.peak
        res["project_infer"]["mfu_incl_attention"] = (
            res["project_infer"]["mfu"] + res["project_infer"]["attention_flops_s"] / a.peak
        )
        print("project inference", json.dumps(res["project_infer"]), flush=True)
    if "naive" not in skip:
        with stock_modeling(saved, module):
            res["naive_infer"] = bench_naive(cfg, seqs[: a.naive_rows], device, dtype, max_len, a.naive_batch)
        free(device)
        print("naive inference", json.dumps(res["naive_infer"]), flush=True)
        if "project_infer" in res:
            res["infer_speedup"] = res["project_infer"]["rows_s"] / res["naive_infer"]["rows_s"]
    if a.parity:
        pdtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        res["kernels_parity"] = bench_parity(cfg, seqs, device, pdtype, a)
        print("kernels parity", json.dumps(res["kernels_parity"]), flush=True)
    if a.t4:
        t4 = res["infer_t4_path"] = bench_t4_infer(cfg, seqs, device, a)
        t4["mfu"] = 2 * t4["params_nonembed"] * lengths.sum() / t4["seconds"] / a.peak
        t4["mfu_incl_attention"] = t4["mfu"] + t4["attention_flops_s"] / a.peak
        print("T4-path inference", json.dumps(t4), flush=True)
    if "train" not in skip:
        import tempfile

        tlen = lognormal_lengths(
            a.train_batch * (a.train_steps + a.warm_steps + 1),
            mean_len,
            max_len,
            seed=2,
            match_mean=not a.raw_lognormal,
        )
        tseqs = make_seqs(tlen, cfg.vocab_size, 3)
        tdtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        with tempfile.TemporaryDirectory() as tmp:
            res["lora_train"] = bench_train(cfg, tseqs, device, tdtype, a, Path(tmp))
        tr = res["lora_train"]  # MFU: 4N FLOPs per real token (forward 2N + backward through frozen weights 2N)
        tr["mfu"] = 4 * nonembed_count(cfg) * tr["tokens_s"] / a.peak / tr["world"]
        tr["mfu_incl_attention"] = tr["mfu"] + tr["attention_flops_s"] / a.peak / tr["world"]
        print("lora training", json.dumps(res["lora_train"]), flush=True)
        if "trainer" not in skip and tr["world"] > 1:
            print("HF Trainer baseline: skipped under torchrun (one process only)", flush=True)
        elif "trainer" not in skip:
            if a.compile or a.cudagraphs:
                torch._dynamo.reset()  # drop the compiled project layers (and what their caches hold)
            free(device)
            labels = np.random.default_rng(0).integers(0, 3, len(tseqs))  # bench_train's labels
            with stock_modeling(saved, module):
                hf = res["hf_trainer"] = bench_hf_trainer_fitting(cfg, tseqs, labels, device, tdtype, a, max_len)
            hf["mfu"] = 4 * nonembed_count(cfg) * hf["tokens_s"] / a.peak
            hf["mfu_incl_attention"] = hf["mfu"] + hf["attention_flops_s"] / a.peak
            res["train_speedup_vs_trainer"] = tr["tokens_s"] / hf["tokens_s"]
            print("HF Trainer baseline", json.dumps(hf), flush=True)
    res["args"] = vars(a)
    print(json.dumps(res, indent=2))
    print(summary_line(res, a.tag))
    if a.out:
        out = Path(a.out)
        out = out.with_name(f"{out.stem}-{a.tag}{out.suffix}") if a.tag else out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
