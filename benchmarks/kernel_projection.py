"""Projected Kaggle T4 x2 time of the kernel's LLM swap-TTA inference, from token counts and FLOPs.

    # here (CPU): token counts of real battles under each config's formatter, with a real Gemma tokenizer
    .venv/bin/python benchmarks/kernel_projection.py --data ../shared/data/lmsys-arena-subset --rows 4000
    # -> benchmarks/kernel_token_stats.json (committed; benchmarks/kernel_gpu_sim.py reads it on the GPU box)
    .venv/bin/python benchmarks/kernel_projection.py --mfu 0.40     # projection only, at an assumed MFU
    .venv/bin/python benchmarks/kernel_projection.py --plan kernels/<name>/kernel_plan.json   # what a kernel runs

Plans: a kernel's LLM work is, per LLM run of its plan, (models: 5 for a fold run, 1 for a merge / refit /
export) x (orders: 2 with swap-TTA) passes over the test rows, in the plan's precision: fp16 on the tensor
cores (65 TFLOP/s), fp32 without them (8.1 TFLOP/s), 8-bit weights (bitsandbytes int8) at ``--int8-slowdown``
times the fp16 time (an assumption: int8 matmuls dequantise and run slower than fp16; no T4 measurement here).
Without ``--plan`` the standard scenarios are printed (a merged Gemma-2-9B in 8-bit with swap-TTA, the same as a
5-fold ensemble, Gemma-2-2B in fp16, Gemma 3 270M in fp32).

Model: FLOPs per sequence of L real tokens = 2*N*L (N = non-embedding weights; matmuls) + attention scores
2*layers*heads*head_dim*L^2 (QK^T and AV, causal half counted). Time = FLOPs / (GPUs * peak * MFU) with the
T4's 65 TFLOP/s fp16 tensor-core peak and an MFU *measured on another GPU* (kernel_gpu_sim.py) — this
assumes the T4 reaches the same fraction of its peak, which is optimistic (T4s throttle at 70 W; bitsandbytes
8-bit matmuls are slower than fp16, not faster). Model loading (~1-4 min) and tokenisation come on top.

Tokenizer: the Gemma 3 tokenizer of the bundled gemma3-270m (262k vocab; Gemma 2's is 256k with the same
SentencePiece family), so counts are close to, not exactly, Gemma 2's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
T4_PEAK_FP16 = 65e12
T4_PEAK_FP32 = 8.1e12  # no tensor cores for fp32 on sm75
STATS_FILE = Path(__file__).with_name("kernel_token_stats.json")
# Gemma-2 shapes (config.json of google/gemma-2-2b-it and -9b-it)
SHAPES = {
    "gemma2-2b-it": dict(layers=26, hidden=2304, intermediate=9216, heads=8, kv_heads=4, head_dim=256, vocab=256000),
    "gemma2-9b-it": dict(layers=42, hidden=3584, intermediate=14336, heads=16, kv_heads=8, head_dim=256, vocab=256000),
    # google/gemma-3-270m config.json
    "gemma3-270m": dict(layers=18, hidden=640, intermediate=2048, heads=4, kv_heads=1, head_dim=256, vocab=262144),
}


def non_embedding_params(s: dict) -> int:
    attn = s["hidden"] * s["head_dim"] * (2 * s["heads"] + 2 * s["kv_heads"])  # q, o + k, v
    mlp = 3 * s["hidden"] * s["intermediate"]
    return s["layers"] * (attn + mlp)


def seq_flops(s: dict, lengths: np.ndarray) -> float:
    L = np.asarray(lengths, dtype=np.float64)
    return float((2 * non_embedding_params(s) * L + 2 * s["layers"] * s["heads"] * s["head_dim"] * L**2).sum())


def project(
    shape: str,
    lengths: np.ndarray,
    rows: int = 25_000,
    orders: int = 2,
    mfu: float = 0.35,
    gpus: int = 2,
    peak: float = T4_PEAK_FP16,
) -> dict:
    """Seconds for ``rows`` x ``orders`` sequences whose lengths follow the sample ``lengths``."""
    s = SHAPES[shape]
    per_seq = seq_flops(s, lengths) / len(lengths)
    total = per_seq * rows * orders
    secs = total / (gpus * peak * mfu)
    return {
        "shape": shape,
        "rows": rows,
        "orders": orders,
        "mean_tokens": float(np.mean(lengths)),
        "flops": total,
        "mfu": mfu,
        "gpus": gpus,
        "peak_tflops": peak / 1e12,
        "seconds": secs,
        "hours": secs / 3600,
    }


def token_stats(data: Path, rows: int, tokenizer: Path, configs: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from lmsys_arena.config import load_config
    from lmsys_arena.data import Competition
    from lmsys_arena.llm.backbones import load_tokenizer
    from lmsys_arena.llm.config import FormatConfig
    from lmsys_arena.llm.format import BattleEncoder, lengths
    from lmsys_arena.schema import build

    comp = Competition(data)
    df = comp.train()
    n_read = len(df)
    df = df.sample(n=min(rows, len(df)), random_state=0).reset_index(drop=True)
    print(f"read {n_read} rows from {comp.train_csv}, sampled {len(df)}; tokenizer {tokenizer}")
    tok = load_tokenizer(tokenizer)
    out = {"data": _shown(data), "rows": len(df), "tokenizer": _shown(tokenizer), "configs": {}}
    for name in configs:
        fmt = build(FormatConfig, load_config(name).get("format"), prefix="format.")
        t0 = time.time()
        fwd, rev = BattleEncoder(tok, fmt).encode(df, both=True)
        L = np.concatenate([lengths(fwd), lengths(rev)])
        out["configs"][name] = {
            "max_len": fmt.max_len,
            "mean": float(L.mean()),
            "p50": float(np.median(L)),
            "p95": float(np.percentile(L, 95)),
            "at_max": float((L >= fmt.max_len).mean()),
            "lengths": L.astype(int).tolist(),
            "encode_s": round(time.time() - t0, 1),
        }
        print(
            f"{name}: max_len {fmt.max_len}, mean {L.mean():.0f} tokens (p50 {np.median(L):.0f}, "
            f"p95 {np.percentile(L, 95):.0f}, {100 * (L >= fmt.max_len).mean():.1f}% at max_len)"
        )
    return out


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it is near it (no one machine's absolute paths in the JSON)."""
    try:
        return os.path.relpath(Path(path).resolve(), ROOT)
    except ValueError:  # another drive (Windows)
        return str(path)


def print_projection(stats: dict, mfu: float, source: str) -> list[dict]:
    res = []
    print(
        f"\nProjected T4 x2 swap-TTA time, 25,000 test rows x 2 orders; T4 fp16 peak 65 TFLOP/s at MFU "
        f"{mfu:.1%} ({source}); projection, not a T4 measurement:"
    )
    for name, st in stats["configs"].items():
        if name not in SHAPES:
            continue
        p = project(name, np.asarray(st["lengths"]), mfu=mfu)
        p["config"] = name
        res.append(p)
        note = " (8-bit weights: same FLOPs, bitsandbytes int8 is slower -> optimistic)" if "9b" in name else ""
        print(
            f"  {name:<14} max_len {st['max_len']:>5}  mean {p['mean_tokens']:6.0f} tok  "
            f"{p['flops'] / 1e15:9.1f} PFLOP  -> {p['hours']:.2f} h{note}"
        )
    return res


def plan_projection(passes: int, orders: int, shape: str, lengths, dtype: str, quant: str | None, mfu: float,
                    int8_slowdown: float, rows: int = 25_000) -> dict:  # fmt: skip
    """Hours of one LLM run of a kernel plan: ``passes`` models x ``orders`` over ``rows`` test rows."""
    peak = T4_PEAK_FP32 if dtype == "fp32" else T4_PEAK_FP16
    p = project(shape, np.asarray(lengths), rows=rows, orders=orders, mfu=mfu, peak=peak)
    factor = passes * (int8_slowdown if quant == "8bit" else 1.0)
    return {**p, "passes": passes, "dtype": dtype, "quant": quant, "seconds": p["seconds"] * factor,
            "hours": p["hours"] * factor}  # fmt: skip


def _shape_of(backbone: str) -> str:
    name = Path(str(backbone)).name.lower().replace("_", "-")
    for shape, keys in (("gemma2-9b-it", ("9b",)), ("gemma2-2b-it", ("2b",)), ("gemma3-270m", ("270m", "tiny"))):
        if any(k in name for k in keys):
            return shape
    raise SystemExit(f"no known shape for backbone {backbone!r}: add it to SHAPES")


def project_plan(plan_file: Path, stats: dict, mfu: float, int8_slowdown: float, rows: int) -> list[dict]:
    """Each LLM run of a kernel plan as the kernel will run it."""
    plan = json.loads(plan_file.read_text())
    runs_root = plan_file.parent.parent.parent / "runs"
    out = []
    for run, entry in plan["runs"].items():
        if entry["family"] != "llm":
            continue
        cfg = json.loads((runs_root / run / "config.json").read_text())
        overrides = plan.get("llm_overrides", {})
        quant = overrides.get("infer.quant", (cfg.get("infer") or {}).get("quant"))
        dtype = (entry.get("precision") or {}).get("dtype", "fp16")
        shape = _shape_of(cfg.get("backbone", ""))
        lengths = _lengths_for(stats, shape)
        passes = len(entry.get("models") or entry.get("folds") or [1])
        p = plan_projection(passes, 2 if cfg.get("tta", True) else 1, shape, lengths, dtype, quant, mfu,
                            int8_slowdown, rows)  # fmt: skip
        out.append({"run": run, **{k: v for k, v in p.items() if k != "lengths"}})
        print(f"  {run}: {shape}, {passes} model(s) x {p['orders']} orders, {dtype}{' 8-bit' if quant else ''} "
              f"-> {p['hours']:.2f} h")  # fmt: skip
    return out


def _lengths_for(stats: dict, shape: str):
    cfgs = stats["configs"]
    return np.asarray((cfgs.get(shape) or cfgs.get("gemma2-9b-it") or next(iter(cfgs.values())))["lengths"])


def scenarios(stats: dict, mfu: float, int8_slowdown: float, rows: int = 25_000) -> list[dict]:
    out = []
    for label, passes, shape, dtype, quant in (
        ("merged gemma2-9b-it, 8-bit, swap-TTA", 1, "gemma2-9b-it", "fp16", "8bit"),
        ("5-fold gemma2-9b-it, 8-bit, swap-TTA", 5, "gemma2-9b-it", "fp16", "8bit"),
        ("merged gemma2-2b-it, fp16, swap-TTA", 1, "gemma2-2b-it", "fp16", None),
        ("merged gemma3-270m, fp32, swap-TTA", 1, "gemma3-270m", "fp32", None),
    ):
        p = plan_projection(passes, 2, shape, _lengths_for(stats, shape), dtype, quant, mfu, int8_slowdown, rows)
        out.append({"scenario": label, **p})
        print(f"  {label:<40} {p['hours']:6.2f} h")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default=None,
        help="competition folder (e.g. ../shared/data/lmsys-arena-subset from the repo root); computes token "
        "stats (else reads the JSON)",
    )
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument(
        "--tokenizer",
        type=Path,
        default=ROOT / "models" / "gemma-3-270m-q4_k_m-hf",
        help="tokenizer folder (default: %(default)s)",
    )
    ap.add_argument("--configs", nargs="+", default=["gemma2-2b-it", "gemma2-9b-it"])
    ap.add_argument("--mfu", type=float, default=0.35, help="assumed MFU when no measurement is given")
    ap.add_argument("--plan", type=Path, default=None, help="a kernel's kernel_plan.json: project what it runs")
    ap.add_argument("--int8-slowdown", type=float, default=1.3, help="8-bit weights' time / fp16 time (assumed)")
    ap.add_argument("--test-rows", type=int, default=25_000, help="test rows to project for")
    args = ap.parse_args(argv)
    if args.data:
        stats = token_stats(Path(args.data), args.rows, args.tokenizer, args.configs)
        STATS_FILE.write_text(json.dumps(stats) + "\n")
        print(f"wrote {STATS_FILE}")
    stats = json.loads(STATS_FILE.read_text())
    print(f"token stats from {STATS_FILE} ({stats['rows']} rows of {stats['data']}, tokenizer {stats['tokenizer']})")
    print_projection(stats, args.mfu, "assumed, pass the measured one from kernel_gpu_sim.py")
    print(f"\nKernel plans at MFU {args.mfu:.1%}, 8-bit = {args.int8_slowdown:g} x fp16 time, {args.test_rows} rows:")
    if args.plan:
        project_plan(args.plan, stats, args.mfu, args.int8_slowdown, args.test_rows)
    else:
        scenarios(stats, args.mfu, args.int8_slowdown, args.test_rows)


if __name__ == "__main__":
    main()
