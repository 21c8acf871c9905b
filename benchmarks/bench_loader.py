"""Loader speed on a Kaggle-sized train file, against a naive baseline measured in the same run.

    .venv/bin/python benchmarks/bench_loader.py [--csv input/lmsys-chatbot-arena/train.csv] [--rows 57477]

Without --csv it builds a 57,477-row file (the size of Kaggle's train.csv) by repeating the
bundled/real train rows with fresh ids. Baseline: pandas.read_csv + json.loads per cell in a
Python loop (what a first version does). Prints seconds and rows/s for both, and the ratio.
Run it on a quiet machine (it prints `uptime`'s load).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from lmsys_arena.data import load_battles

SOURCES = [Path("/work/shared/data/lmsys-arena-subset/train.csv"), Path("input/sample/train.csv")]


def build_file(rows: int, out: Path) -> Path:
    src = next(p for p in SOURCES if p.exists())
    base = pd.read_csv(src, dtype=str, keep_default_na=False)
    reps = -(-rows // len(base))
    big = pd.concat([base.assign(id=base["id"] + f"r{k}") for k in range(reps)]).head(rows)
    big.to_csv(out, index=False)
    return out


def baseline(path: Path) -> int:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    out = {c: [json.loads(x) for x in raw[c]] for c in ("prompt", "response_a", "response_b")}
    labels = raw[["winner_model_a", "winner_model_b", "winner_tie"]].astype(int).to_numpy().argmax(axis=1)
    return len(out["prompt"]) + 0 * len(labels)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=None)
    ap.add_argument("--rows", type=int, default=57_477)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.csv) if args.csv else build_file(args.rows, Path(tmp) / "train.csv")
        n = len(load_battles(path))
        print(f"{path}: {n} rows, {path.stat().st_size / 1e6:.0f} MB; load average {os.getloadavg()[0]:.2f}")
        t_base = best_of(lambda: baseline(path), args.repeat)
        t_ours = best_of(lambda: load_battles(path), args.repeat)
    print(f"baseline read_csv + json.loads loop: {t_base:.2f}s ({n / t_base:,.0f} rows/s)")
    print(f"load_battles (validated, surrogates, progress): {t_ours:.2f}s ({n / t_ours:,.0f} rows/s)")
    print(f"ratio load_battles / baseline: {t_ours / t_base:.2f}x")


if __name__ == "__main__":
    main()
