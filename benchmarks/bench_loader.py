"""Loader speed on a Kaggle-sized train file, against a naive baseline measured in the same run.

    .venv/bin/python benchmarks/bench_loader.py [--csv input/lmsys-chatbot-arena/train.csv] [--rows 57477]
    .venv/bin/python benchmarks/bench_loader.py --source input/sample/train.csv

Without --csv it builds a 57,477-row file (the size of Kaggle's train.csv) by repeating the rows
of --source with fresh ids (default: the shared real train.csv at <repo>/../shared/data/
lmsys-arena-subset/ when present, else the bundled input/sample/train.csv; both found from this
file's checkout, whatever the working folder). Baseline: pandas.read_csv + json.loads per cell in
a Python loop (what a first version does). Prints what it read, seconds and rows/s for both, and
the ratio. Run it on a quiet machine (it prints `uptime`'s load).
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

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "lmsys-arena-subset" / "train.csv"
SAMPLE_TRAIN = ROOT / "input" / "sample" / "train.csv"


def default_source() -> Path:
    return SHARED_TRAIN if SHARED_TRAIN.exists() else SAMPLE_TRAIN


def build_file(rows: int, out: Path, src: Path) -> Path:
    if not src.is_file():
        raise SystemExit(f"{src}: no such file (pass --source a Kaggle-format train.csv, or --csv)")
    base = pd.read_csv(src, dtype=str, keep_default_na=False, na_filter=False)  # ids stay strings
    reps = -(-rows // len(base))
    big = pd.concat([base.assign(id=base["id"] + f"r{k}") for k in range(reps)]).head(rows)
    big.to_csv(out, index=False)
    print(f"built {out}: {len(big)} rows from {src} ({len(base)} rows, repeated {reps}x with fresh ids)")
    return out


def baseline(path: Path) -> int:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
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
    ap.add_argument("--csv", default=None, help="a Kaggle-format train.csv to time as is (else one is built)")
    ap.add_argument(
        "--source",
        type=Path,
        default=default_source(),
        help="train.csv whose rows are repeated to --rows (default: %(default)s)",
    )
    ap.add_argument("--rows", type=int, default=57_477)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.csv) if args.csv else build_file(args.rows, Path(tmp) / "train.csv", args.source)
        n = len(load_battles(path))
        print(f"{path}: {n} rows, {path.stat().st_size / 1e6:.0f} MB; load average {os.getloadavg()[0]:.2f}")
        t_base = best_of(lambda: baseline(path), args.repeat)
        t_ours = best_of(lambda: load_battles(path), args.repeat)
    print(f"baseline read_csv + json.loads loop: {t_base:.2f}s ({n / t_base:,.0f} rows/s)")
    print(f"load_battles (validated, surrogates, progress): {t_ours:.2f}s ({n / t_ours:,.0f} rows/s)")
    print(f"ratio load_battles / baseline: {t_ours / t_base:.2f}x")


if __name__ == "__main__":
    main()
