"""Projected Kaggle T4 x2 time of the kernel's LLM swap-TTA inference, from token counts and FLOPs.

    # here (CPU): token counts of real battles under each config's formatter, with a real Gemma tokenizer
    .venv/bin/python benchmarks/kernel_projection.py --data ../shared/data/lmsys-arena-subset --rows 4000
    # -> benchmarks/kernel_token_stats.json (committed; benchmarks/kernel_gpu_sim.py reads it on the GPU box)
    .venv/bin/python benchmarks/kernel_projection.py --mfu 0.40     # projection only, at an assumed MFU

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
STATS_FILE = Path(__file__).with_name("kernel_token_stats.json")
# Gemma-2 shapes (config.json of google/gemma-2-2b-it and -9b-it)
SHAPES = {
    "gemma2-2b-it": dict(layers=26, hidden=2304, intermediate=9216, heads=8, kv_heads=4, head_dim=256, vocab=256000),
    "gemma2-9b-it": dict(layers=42, hidden=3584, intermediate=14336, heads=16, kv_heads=8, head_dim=256, vocab=256000),
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
    args = ap.parse_args(argv)
    if args.data:
        stats = token_stats(Path(args.data), args.rows, args.tokenizer, args.configs)
        STATS_FILE.write_text(json.dumps(stats) + "\n")
        print(f"wrote {STATS_FILE}")
    stats = json.loads(STATS_FILE.read_text())
    print(f"token stats from {STATS_FILE} ({stats['rows']} rows of {stats['data']}, tokenizer {stats['tokenizer']})")
    print_projection(stats, args.mfu, "assumed, pass the measured one from kernel_gpu_sim.py")


if __name__ == "__main__":
    main()
