"""Speed of the feature GBDT family on 57k rows: features + 5-fold training, cold then warm cache.

    .venv/bin/python benchmarks/gbdt_speed.py                          # xgb, 57,000 rows
    .venv/bin/python benchmarks/gbdt_speed.py --model lgbm --rows 20000 --set params.learning_rate=0.1
    .venv/bin/python benchmarks/gbdt_speed.py --data input/sample/train.csv

Rows: ``--data`` (default: the shared real train.csv, 12,555 rows, at <repo>/../shared/data/
lmsys-arena-subset/, found from this file's checkout; else the bundled input/sample/train.csv)
replicated to ``--rows``. Copy k > 0 gets new ids,
odd copies are A/B-swapped (label swapped too) and every copy appends k spaces to each response,
so each copy has distinct texts (distinct cache keys, distinct features) while the label signal is
the real one. Folds are the project's prompt-grouped folds, so all copies of a battle share a fold
(no copy leaks into its own validation fold).

Measures, in one process, run 1 with an empty feature cache (the baseline) and run 2 with the
cache warm: wall time of the feature stage (features and, with text_score, bag of words) and of
features + 5-fold training, the ratio run2/run1, peak RSS (getrusage) and the machine load. Bars: run 1 <=
180 s and <= 4 GB on 2 cores; the
feature stage of run 2 >= 5x faster than run 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena import gbdt
from lmsys_arena.bow import build_bow
from lmsys_arena.config import load_config, parse_assignments
from lmsys_arena.data import load_battles
from lmsys_arena.features import build_features
from lmsys_arena.folds import make_folds
from lmsys_arena.metrics import log_loss, softmax
from lmsys_arena.swap import swap_battles

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "lmsys-arena-subset" / "train.csv"
SAMPLE_TRAIN = ROOT / "input" / "sample" / "train.csv"


def default_data() -> Path:
    return SHARED_TRAIN if SHARED_TRAIN.exists() else SAMPLE_TRAIN


def replicate(df: pd.DataFrame, rows: int) -> pd.DataFrame:
    parts = []
    for k in range(int(np.ceil(rows / len(df)))):
        part = swap_battles(df) if k % 2 else df.copy()
        if k:
            pad = " " * k
            part["id"] = part["id"] + f"-{k}"
            for col in ("response_a", "response_b"):
                part[col] = [t[:-1] + [t[-1] + pad] for t in part[col]]
        parts.append(part)
    return pd.concat(parts, ignore_index=True).iloc[:rows].reset_index(drop=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def one_run(cfg: dict, df: pd.DataFrame, fold: np.ndarray, cache: Path, work: Path, train: bool = True) -> dict:
    os.environ["LMSYS_CACHE"] = str(cache)
    t0 = time.perf_counter()
    build_features(df)  # the whole set once, as the first fold would
    if cfg.get("text_score"):
        build_bow(df)
    t_feat = time.perf_counter() - t0
    if not train:
        return {"features_s": t_feat, "total_s": float("nan"), "rounds": [], "oof_logloss": float("nan")}
    oof = np.zeros((len(df), 3))
    rounds = []
    for f in range(int(fold.max()) + 1):
        va = fold == f
        fold_dir = work / f"fold{f}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        oof[va] = gbdt.fit_fold(cfg, df[~va].reset_index(drop=True), df[va].reset_index(drop=True), fold_dir, seed=f)
        rounds.append(gbdt.read_json(fold_dir / "gbdt.json")["best_iteration"] + 1)
    total = time.perf_counter() - t0
    return {
        "features_s": t_feat,
        "total_s": total,
        "rounds": rounds,
        "oof_logloss": log_loss(df["label"].to_numpy(), softmax(oof)),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="xgb")
    ap.add_argument("--rows", type=int, default=57_000)
    ap.add_argument(
        "--data",
        type=Path,
        default=default_data(),
        help="a Kaggle-format train.csv to replicate (default: %(default)s)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--train-twice", action="store_true", help="run 2 also trains (default: run 2 = warm feature stage)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level="WARNING")

    cfg = load_config(args.model, parse_assignments(args.set))
    t0 = time.perf_counter()
    base = load_battles(args.data)
    print(f"read {len(base)} rows from {args.data}")
    df = replicate(base, args.rows)
    fold = make_folds(df, k=5, seed=42)["fold"].to_numpy()
    print(
        f"{args.model}: {len(df)} rows ({df['label'].value_counts().sort_index().tolist()} a/b/tie), "
        f"prepared in {time.perf_counter() - t0:.1f}s; threads={gbdt._threads(gbdt.options(cfg))}; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            one_run(cfg, df, fold, Path(tmp) / "cache", Path(tmp) / f"run{i}", train=i == 1 or args.train_twice)
            for i in (1, 2)
        ]
    for i, r in enumerate(runs, 1):
        trained = (
            f", features + 5 folds {r['total_s']:.1f}s, rounds {r['rounds']}, OOF log loss {r['oof_logloss']:.4f}"
            if r["rounds"]
            else ""
        )
        print(f"run {i} ({'cold' if i == 1 else 'warm'} cache): features {r['features_s']:.1f}s{trained}")
    print(
        f"ratio run2/run1: features {runs[1]['features_s'] / runs[0]['features_s']:.3f} "
        f"({runs[0]['features_s'] / runs[1]['features_s']:.1f}x faster)"
        + (f", total {runs[1]['total_s'] / runs[0]['total_s']:.3f}" if args.train_twice else "")
    )
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"CPU time {ru.ru_utime + ru.ru_stime:.0f}s (user+sys, whole script); "
        f"peak RSS {peak_rss_gb():.2f} GB; load average now {os.getloadavg()[0]:.2f} (2 cores; >2 means shared)"
    )
    ok = runs[0]["total_s"] <= 180 and peak_rss_gb() <= 4 and runs[0]["features_s"] >= 5 * runs[1]["features_s"]
    print("bars (run1 <= 180 s, <= 4 GB, features >= 5x faster warm):", "MET" if ok else "NOT MET")
    sys.exit(0)


if __name__ == "__main__":
    main()
