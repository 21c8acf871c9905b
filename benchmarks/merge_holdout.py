"""Merged fold models vs the fold ensemble vs a full-data refit, on battles no model saw.

    # CPU, the tiny random backbone (minutes)
    .venv/bin/python benchmarks/merge_holdout.py --data ../shared/data/lmsys-arena-subset \\
        --extra ../shared/data/lmsys-arena-subset/extra_arena33k.csv --model tiny
    # GPU, real Gemma 3 270M; --precisions also scores fold 0 in each dtype (non-finite rows, log loss vs the first)
    python benchmarks/merge_holdout.py --data DATA --extra EXTRA --model gemma3-270m --precisions bf16,fp32,fp16
    python benchmarks/merge_holdout.py ... --precisions bf16,fp32,fp16 --precision-only   # fold 0 only (~3 min)
    python benchmarks/merge_holdout.py ... --precisions bf16,fp32,fp16 --precision-run RUN  # RUN's fold 0, no training
    python benchmarks/merge_holdout.py --split input/lmsys-arena-subset-holdout ...   # a split made before
    python benchmarks/merge_holdout.py ... --train-procs 3   # 3 train commands share the fold run (a small backbone)

Steps, each through the real CLI (``python -m lmsys_arena``), each resumable:

1. ``--holdout`` (15%) of the prompts of ``--data``'s train.csv are kept out, as ``make holdout`` does
   (``lmsys_arena.holdout.write_split``): ``input/<data>-holdout/`` gets the rest as train.csv and the held-out
   battles as test.csv, their labels in ``input/<data>-holdout_labels.csv``; EXTRA rows sharing a held-out prompt
   are dropped;
2. ``folds`` (5), ``train`` (the fold run), ``train --full`` (the refit), ``merge`` once per ``--methods`` and
   ``--heads`` (``<run>-merged-<method>``, ``-heads-mean`` where the heads are averaged);
3. ``infer`` on every run; each submission is scored on the held-out labels; the inference work is the number
   of model passes over the test rows (a fold run: one per fold; swap-TTA doubles every one alike).

Prints a table and writes ``--out`` (JSON). ``--precisions``: fold 0's model scores the held-out rows and its own
validation rows in each dtype (``infer.dtype``): rows with a non-finite logit, and log loss on the finite rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, log: Path, procs: int = 1) -> float:
    """Run ``python -m lmsys_arena`` (output appended to ``log``); ``procs`` copies at once (train commands share
    the run's folds); returns the wall seconds."""
    t0 = time.time()
    with open(log, "a") as fh:
        fh.write(f"\n$ lmsys_arena {' '.join(args)}" + (f"  (x{procs} at once)" if procs > 1 else "") + "\n")
        fh.flush()
        running = []
        for i in range(procs):
            running.append(subprocess.Popen([sys.executable, "-m", "lmsys_arena", *args], stdout=fh,
                                            stderr=subprocess.STDOUT))  # fmt: skip
            if i + 1 < procs:
                time.sleep(5)  # spreads their start-up (backbone load, compilation) a little
        codes = [proc.wait() for proc in running]
    if any(codes):
        sys.exit(f"lmsys_arena {' '.join(args)} failed (exit {max(codes)}); see {log}")
    return time.time() - t0


def score(sub_csv: Path, labels: pd.DataFrame) -> float:
    from lmsys_arena.metrics import log_loss

    sub = pd.read_csv(sub_csv, dtype={"id": str}).set_index("id").loc[labels["id"]]
    return log_loss(labels["label"].to_numpy(), sub[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy())


def precision_check(run: str, data: Path, labels: pd.DataFrame, dtypes: list[str]) -> dict:
    """Fold 0 of ``run`` on the held-out rows + its validation rows in each dtype."""
    from lmsys_arena import families
    from lmsys_arena.config import apply_overrides
    from lmsys_arena.data import Competition
    from lmsys_arena.metrics import log_loss, softmax
    from lmsys_arena.runs import Run

    r = Run(Path("runs") / run)
    cfg, spec = r.model_config()
    fam = families.of(cfg).load()
    test = Competition(data).test(check_sample="skip").drop(columns="label").merge(labels, on="id")  # test: -1
    train = Competition(data).train()
    valid_ids = set(r.read_fold_frame(0)["id"].astype(str))
    rows = pd.concat([test, train[train["id"].astype(str).isin(valid_ids)]], ignore_index=True)
    y = rows["label"].to_numpy()
    out, ref = {"rows": len(rows), "reference": dtypes[0]}, None
    for dt in dtypes:  # the first dtype is the reference (bf16: what training ran in)
        t0 = time.time()
        logits = np.asarray(fam.predict(apply_overrides(cfg, {"infer.dtype": dt}), rows, r.fold_dir(0)), np.float64)
        ok = np.isfinite(logits).all(axis=1)
        out[dt] = {
            "non_finite_rows": int((~ok).sum()),
            "logloss_finite_rows": log_loss(y[ok], softmax(logits[ok])) if ok.any() else None,
            "seconds": round(time.time() - t0, 1),
        }
        if ref is None:
            ref = logits
        elif ok.all():
            out[dt]["logloss_minus_reference"] = out[dt]["logloss_finite_rows"] - out[dtypes[0]]["logloss_finite_rows"]
            out[dt]["max_abs_prob_diff"] = float(np.abs(softmax(logits) - softmax(ref)).max())
        print(f"fold0 in {dt}: {out[dt]}")
    return out


def t4_precision(run: str) -> str:
    """The dtype a T4 kernel would run ``run``'s backbone in (the kernel plan's choice)."""
    from lmsys_arena.llm.kaggle import kernel_precision
    from lmsys_arena.runs import Run

    cfg, _spec = Run(Path("runs") / run).model_config()
    return kernel_precision(run, cfg["backbone"], {}, "NvidiaTeslaT4")["dtype"]


def golden_check(run: str, dtype: str) -> list[str]:
    """The run's golden rows (golden.py) scored again in ``dtype``: what differs from training time."""
    from lmsys_arena import families, golden
    from lmsys_arena.config import apply_overrides
    from lmsys_arena.runs import Run

    r = Run(Path("runs") / run)
    cfg, _spec = r.model_config()
    cfg = apply_overrides(cfg, {"infer.dtype": dtype})
    fam = families.of(cfg).load()
    problems = []
    for d in r.model_dirs():
        saved = golden.read(d)
        if saved is not None:
            rows = golden.rows_of(saved)
            problems += golden.check(saved, fam.predict(cfg, rows, d), golden.family_features(fam, cfg, rows))
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a data folder: step 1 splits it")
    src.add_argument("--split", help="a held-out split made before (make holdout): no step 1; its EXTRA file if any")
    ap.add_argument("--extra", default=None)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--set", action="append", default=[], help="config override for every run")
    ap.add_argument("--holdout", type=float, default=0.15)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--methods", default="concat,svd,mean")
    ap.add_argument("--heads", default="keep,mean", help="merge --heads values, each with every method")
    ap.add_argument("--precisions", default="", help="e.g. bf16,fp16,fp32 (fold 0 of the fold run)")
    ap.add_argument("--skip", default="", help="steps to skip: refit, merge, infer")
    ap.add_argument(
        "--train-procs", type=int, default=1, help="train commands at once on the fold run (they share its folds)"
    )
    ap.add_argument(
        "--precision-only", action="store_true", help="train fold 0 only, then the --precisions check (no merge)"
    )
    ap.add_argument("--precision-run", default=None, help="a fold run on the held-out split: check its fold 0")
    ap.add_argument("--out", default="runs/merge_holdout.json")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    Path("runs").mkdir(exist_ok=True)
    log = Path("runs") / "merge_holdout.log"
    from lmsys_arena.holdout import split_paths, write_split

    if args.split:
        data = Path(args.split)
        name = data.name
        extra = split_paths(data)[1] if split_paths(data)[1].exists() else None
    else:
        name = f"{Path(args.data).resolve().name}-holdout"
        data = write_split(Path(args.data), Path(args.extra) if args.extra else None, args.holdout, args.seed,
                           Path("input") / name)  # fmt: skip
        extra = split_paths(data)[1] if args.extra else None
    labels = pd.read_csv(split_paths(data)[0], dtype={"id": str})
    run = args.precision_run or f"{Path(args.model).stem}-{name}"
    common = ["--data", str(data), "--model", args.model, "--run", run, "--seed", str(args.seed)]
    common += (["--extra", str(extra)] if extra else []) + [a for s in args.set for a in ("--set", s)]
    skip = set(filter(None, args.skip.split(",")))
    if args.precision_only or args.precision_run:
        skip |= {"refit", "merge", "infer"}
        common += ["--only-folds", "0"]
    times = {}
    if not Path("folds", f"{name}.csv").exists():
        cli("folds", "--data", str(data), "--folds", str(args.folds), "--seed", str(args.seed), log=log)
    if not args.precision_run:
        times["train"] = cli("train", *common, log=log, procs=args.train_procs)
    runs = {run: args.folds}
    if "refit" not in skip:
        times["refit"] = cli("train", *common, "--full", log=log)
        runs[f"{run}-full"] = 1
    if "merge" not in skip:
        for m in filter(None, args.methods.split(",")):
            for h in filter(None, args.heads.split(",")):
                merged = f"{run}-merged-{m}" + ("" if h == "keep" else f"-heads-{h}")
                times[f"merge-{m}-{h}"] = cli("merge", "--run", run, "--method", m, "--heads", h, "--name", merged,
                                              log=log)  # fmt: skip
                runs[merged] = 1
    result = {"data": str(data), "model": args.model, "held_out_rows": len(labels), "set": args.set, "runs": {}}
    for r, passes in runs.items():
        if "infer" in skip:
            break
        sec = cli("infer", "--run", r, log=log)
        result["runs"][r] = {"logloss": score(Path("submissions") / f"{r}.csv", labels), "model_passes": passes,
                             "infer_seconds": round(sec, 1)}  # fmt: skip
    result["seconds"] = {k: round(v, 1) for k, v in times.items()}
    report(result, run, Path(args.out))  # before the precision checks: a failure there keeps the table
    if args.precisions:
        result["precision"] = precision_check(run, data, labels, args.precisions.split(","))
        kernel_dtype = t4_precision(run)
        result["precision"]["kernel_dtype"] = kernel_dtype
        result["golden"] = {r: golden_check(r, kernel_dtype) or "ok" for r in runs}
        print(f"golden rows in {kernel_dtype}: {result['golden']}")
        report(result, run, Path(args.out))


def report(result: dict, run: str, out: Path) -> None:
    base = result["runs"].get(run, {}).get("logloss")
    w = max([len(r) for r in result["runs"]] + [44])
    print(f"\n{'run':<{w}} {'held-out log loss':>18} {'vs folds':>9} {'passes':>7} {'infer s':>8}")
    for r, v in result["runs"].items():
        d = f"{v['logloss'] - base:+.5f}" if base is not None else ""
        print(f"{r:<{w}} {v['logloss']:>18.5f} {d:>9} {v['model_passes']:>7} {v['infer_seconds']:>8}")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
