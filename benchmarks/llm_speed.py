"""LLM inference and LoRA-training speed at Gemma-2-2B shape (random weights, built in code).

    torchrun --nproc-per-node 2 benchmarks/llm_speed.py --shape gemma3-270m --skip naive,infer --compile
                                   # LoRA training with DDP (tokens/s of all GPUs together; MFU per GPU)

    python benchmarks/llm_speed.py --out runs/llm_speed.json            # one GPU (H100: the reported numbers)
    python benchmarks/llm_speed.py --small --rows 64 --train-steps 3     # CPU dry run at a tiny shape
    python benchmarks/llm_speed.py --variants "before:--peft-cast --no-expandable" "new:--compile --micro-tokens 32768"
                                   # one process per variant, the other flags shared; a SUMMARY table at the end

Rows have lognormal token lengths (mean ~720, clipped to [32, 2048]). Measured in the same run:

* naive:   HF AutoModelForSequenceClassification, default Gemma-2 config (soft-capping on -> eager
           attention), every batch padded to 2048, arrival order, batch 8;
* project: lmsys_arena.llm inference path (PreferenceModel, sdpa, soft-capping off, length-sorted
           token-budget batches with dynamic padding);
* LoRA training: lmsys_arena.llm.model.for_training + lmsys_arena.llm.train.Trainer (r=16 on q,k,v,o,gate,
           bf16, length-grouped batches, ``--micro-tokens`` budget); ``--compile`` = model.compile.

MFU counts matrix-multiply FLOPs of the non-embedding weights N only (attention score FLOPs are
reported separately, not counted): inference 2*N per real (non-pad) token; LoRA training with a
frozen base 4*N per real token (forward 2N + input-gradient backward 2N; no weight gradients for
frozen weights; LoRA's own FLOPs and activation-checkpoint recompute are not counted).
Peak: H100 SXM dense fp16/bf16 989.4 TFLOP/s (``--peak`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def gemma3_270m_config(small: bool):
    """Gemma 3 270M's text shape (the gemma3-270m config's backbone): 18 layers, hidden 640, 5 of 6 layers
    with 512-token sliding windows."""
    from transformers import Gemma3TextConfig

    if small:
        return Gemma3TextConfig(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=32,
            sliding_window=64,
            pad_token_id=0,
        )
    return Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=512,
        pad_token_id=0,
    )


# LoRA as in each shape's project config: gemma2-2b-it r=16 on q,k,v,o,gate; gemma3-270m r=32 on all linear layers
LORA = {
    "gemma2-2b": {
        "r": 16,
        "alpha": 32,
        "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"],
    },
    "gemma3-270m": {"r": 32, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
}


def gemma2_2b_config(small: bool):
    from transformers import Gemma2Config

    if small:
        return Gemma2Config(
            vocab_size=1024,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            pad_token_id=0,
        )
    return Gemma2Config(
        vocab_size=256000,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=4096,
        pad_token_id=0,
    )


SHAPES = {"gemma2-2b": gemma2_2b_config, "gemma3-270m": gemma3_270m_config}  # shape -> config(small)


def lognormal_lengths(n: int, mean: float, max_len: int, seed: int = 0, match_mean: bool = True) -> np.ndarray:
    """Row lengths: lognormal (sigma 0.8) clipped to [32, max_len]. ``match_mean``: mu is solved so that
    the clipped lengths average ``mean``; otherwise mu = log(mean) - sigma^2/2, the mean before clipping
    (clipping at 2,048 then leaves ~650 for mean 720: what the earlier GPU runs in docs/results.md used,
    --raw-lognormal)."""
    sigma = 0.8
    z = np.random.default_rng(seed).standard_normal(n)
    draw = lambda mu: np.clip(np.exp(mu + sigma * z), 32, max_len)  # noqa: E731
    mu = np.log(mean) - sigma**2 / 2
    if match_mean:
        lo, hi = mu - 2, mu + 2
        for _ in range(60):
            mu = (lo + hi) / 2
            lo, hi = (mu, hi) if draw(mu).mean() < mean else (lo, mu)
    return draw(mu).astype(np.int64)


def make_seqs(lengths, vocab: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=int(n)).astype(np.int32) for n in lengths]


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" in n)
    return sum(p.numel() for p in model.parameters()) - emb


def nonembed_count(cfg) -> int:
    """Non-embedding weights of the Gemma-2 shape (q,k,v,o + gate,up,down + 4 norms per layer + final norm)."""
    h, i, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    return L * (h * q + 2 * h * kv + q * h + 3 * h * i + 4 * h) + h


def attention_flops(cfg, lengths: np.ndarray, passes: int) -> float:
    """FLOPs of the attention scores (QK^T and AV, causal: half the square) of rows of ``lengths``:
    2 * s^2 * heads * head_dim per layer and forward pass; ``passes`` = 1 forward, 3 forward + backward.
    Sliding-window layers count only the window."""
    L, d = cfg.num_hidden_layers, cfg.num_attention_heads * cfg.head_dim
    window = getattr(cfg, "sliding_window", None) or 10**9
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * L
    s = lengths.astype(np.float64)
    full = 2 * (s**2).sum() * d  # 2 matmuls x 2 FLOPs x s^2/2 pairs x d
    w = np.minimum(s, window)
    slide = 4 * (s * w - w**2 / 2).sum() * d  # s*w - w^2/2 (query, key) pairs: at most `window` keys each
    return passes * sum(slide if t == "sliding_attention" else full for t in types)


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
    )


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


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


def build_project_model(cfg, device, dtype, lora: bool, a):
    """The project's own model paths (model.for_training / compile_layers) on a random-init backbone."""
    from transformers import AutoModel

    from lmsys_arena.llm.config import LoraOptions, ModelConfig
    from lmsys_arena.llm.model import PreferenceModel, compile_layers, for_training, lora_input_cast, make_head

    if hasattr(cfg, "attn_logit_softcapping"):
        cfg = type(cfg)(**{**cfg.to_dict(), "attn_logit_softcapping": None})
    cfg._attn_implementation = "eager"  # Gemma-2 refuses sdpa at init; fine once soft-capping is off
    torch.manual_seed(0)
    with device:
        backbone = AutoModel.from_config(cfg, dtype=dtype)
    backbone.config._attn_implementation = "sdpa"
    if not lora:
        model = PreferenceModel(backbone, make_head(cfg.hidden_size).to(device))
        if a.compile:
            compile_layers(model)
        return model
    mcfg = ModelConfig(compile="cudagraphs" if a.cudagraphs else a.compile, lora=LoraOptions(**LORA[a.shape]))
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


def bench_project_infer(cfg, seqs, device, dtype, a) -> dict:
    from lmsys_arena.llm.config import InferConfig
    from lmsys_arena.llm.infer import score_local

    model = build_project_model(cfg, device, dtype, lora=False, a=a).eval()
    icfg = InferConfig(max_tokens=a.max_tokens, max_rows=a.max_rows)
    t0 = time.time()
    for k in (8, 24, 64):  # warm-up (and, with --compile, compile) on a few batch shapes
        score_local(model, seqs[:: len(seqs) // k][:k], 0, icfg, device, dtype, progress=False)
    sync(device)
    warm = time.time() - t0
    t0 = time.time()
    score_local(model, seqs, 0, icfg, device, dtype, progress=False)
    sync(device)
    dt = time.time() - t0
    if a.profile:
        print(profile_table(lambda m=model: score_local(m, seqs[:256], 0, icfg, device, dtype, progress=False), device))
    n = non_embedding_params(model.backbone)
    del model
    return {
        "seconds": dt,
        "rows_s": len(seqs) / dt,
        "params_nonembed": n,
        "warmup_s": warm,
        "attention_flops_s": attention_flops(cfg, np.fromiter(map(len, seqs), np.int64), passes=1) / dt,
    }


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
    ap.add_argument("--skip", default="", help="comma list of parts to skip: naive,infer,train")
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
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cfg = SHAPES[a.shape](a.small)
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
        res["naive_infer"] = bench_naive(cfg, seqs[: a.naive_rows], device, dtype, max_len, a.naive_batch)
        print("naive inference", json.dumps(res["naive_infer"]), flush=True)
        if "project_infer" in res:
            res["infer_speedup"] = res["project_infer"]["rows_s"] / res["naive_infer"]["rows_s"]
    if "train" not in skip:
        import tempfile

        tlen = lognormal_lengths(
            a.train_batch * (a.train_steps + a.warm_steps + 1),
            mean_len,
            max_len,
            seed=2,
            match_mean=not a.raw_lognormal,
        )
        with tempfile.TemporaryDirectory() as tmp:
            res["lora_train"] = bench_train(
                cfg,
                make_seqs(tlen, cfg.vocab_size, 3),
                device,
                torch.bfloat16 if device.type == "cuda" else torch.float32,
                a,
                Path(tmp),
            )
        tr = res["lora_train"]  # MFU: 4N FLOPs per real token (forward 2N + backward through frozen weights 2N)
        tr["mfu"] = 4 * nonembed_count(cfg) * tr["tokens_s"] / a.peak / tr["world"]
        tr["mfu_incl_attention"] = tr["mfu"] + tr["attention_flops_s"] / a.peak / tr["world"]
        print("lora training", json.dumps(res["lora_train"]), flush=True)
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
