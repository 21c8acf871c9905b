"""Train several LLM config variants on one fold at once (spread over the visible GPUs) and compare
their validation log loss without and with swap-TTA, and their blends with a GBDT run's OOF.

    python benchmarks/llm_fold_sweep.py --data DATA --extra EXTRA --model gemma3-270m --fold 0 \\
        --gbdt runs/xgb/oof.parquet --per-gpu 2 \\
        --variants "src:model.aux.source_bias=true" "aux:model.aux.source_bias=true model.aux.features=all"
    python benchmarks/llm_fold_sweep.py ... --gpus 2 --variants "ddp:..."     # one variant on 2 GPUs (torchrun)
    python benchmarks/llm_fold_sweep.py ... --gpus 2 --from-best runs/llm_fold_sweep.json --variants "ddp:"

Each variant is ``name:KEY=VALUE KEY=VALUE ...`` (config overrides, as ``make train SET=...``;
``seed=N`` is the run's ``--seed`` instead, default ``--seed``; ``command=judge`` makes it the zero-shot judge of
``--model`` (``make judge``) instead of a trained run; ``pseudo=CSV`` / ``pseudo_weight=W`` its ``--pseudo`` rows) and
becomes ``runs/<name>/`` through the normal CLI (``python -m lmsys_arena train --only-folds <fold>``),
one process per variant, ``--per-gpu`` variants sharing a GPU (the 270M model leaves most of an H200
idle); a variant's tokens/s is then its share of the GPU, not its speed alone. ``--gpus N`` runs each
variant on N GPUs through torchrun instead, one after the other. The backbone is resolved (GGUF
converted) once before the processes start. Prints, per variant: fold log loss with swap-TTA (the
OOF) and without (the A|B logits in ``valid_raw.npz``), accuracy, train tokens/s (from the log) and
wall time; the order consistency of the A|B and B|A logits (``metrics.order_consistency``), of the
whole model and of its text head alone (near 0 or below: the text path collapsed); with ``--gbdt``,
the GBDT's loss on the same rows, the 50/50 blends (mean of probabilities, and of log-probabilities)
and the stack gain (what the LLM adds to the GBDT in a cross-validated logistic stack). With
``--holdout-labels`` (the ``<data>_labels.csv`` that ``make holdout`` writes beside a data folder
whose test.csv is a held-out slice), each variant also runs ``infer`` and is scored on the held-out rows (swap-TTA),
and with ``--gbdt-test`` (the GBDT run's ``test.parquet`` of the same rows) gets the stack gain there too: rows
that no fold model and no teacher saw. Writes ``--out`` (JSON).

    python benchmarks/llm_fold_sweep.py --data input/lmsys-arena-subset-holdout \
        --extra input/lmsys-arena-subset-holdout_extra.csv --model qwen2.5-coder-0.5b --per-gpu 6 \
        --gbdt runs/xgb-holdout/oof.parquet --gbdt-test runs/xgb-holdout/test.parquet \
        --holdout-labels input/lmsys-arena-subset-holdout_labels.csv \
        --variants "aux:" "judge:command=judge" "distill:train.distill.teacher=xgb-holdout train.distill.weight=0.5"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.metrics import accuracy, log_loss, order_consistency, softmax

PROB = ["p_a", "p_b", "p_tie"]


def launch(name: str, sets: list[str], a, gpus: str, log_path: Path) -> subprocess.Popen:
    base = [sys.executable, "-m", "lmsys_arena"]
    if a.gpus > 1:
        base = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(a.gpus),
            "-m",
            "lmsys_arena",
            "--",
        ]
    args = dict(s.split("=", 1) for s in sets if s.split("=", 1)[0] in RUN_ARGS)
    command = args.get("command", "train")
    cmd = base + [command, "--data", a.data, "--model", a.model, "--run", name, "--only-folds", str(a.fold)]
    cmd += ["--seed", args.get("seed", str(a.seed))]
    if command == "train":
        cmd += ["--extra", a.extra] if a.extra else []
        cmd += ["--pseudo", args["pseudo"]] if "pseudo" in args else []
        cmd += ["--pseudo-weight", args["pseudo_weight"]] if "pseudo_weight" in args else []
    for s in config_sets(sets):
        cmd += ["--set", s]
    line = shlex.join(cmd)
    if a.holdout_labels:  # then the fold model scores the data's test.csv (the held-out rows)
        line += " && " + shlex.join([sys.executable, "-m", "lmsys_arena", "infer", "--run", name])
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus, "PYTHONUNBUFFERED": "1"}
    print(f"[{name}] GPU {gpus}: {line}", flush=True)
    return subprocess.Popen(["bash", "-c", line], stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env)


RUN_ARGS = ("seed", "command", "pseudo", "pseudo_weight")  # variant words that are CLI arguments, not config keys


def config_sets(sets: list[str]) -> list[str]:
    return [s for s in sets if s.split("=", 1)[0] not in RUN_ARGS]


def tokens_per_s(log_text: str) -> dict:
    """Training throughput, all GPUs of the run together: ``overall`` (the whole run, compilation
    included) and ``steady`` (median of the per-log-interval rates after the first two intervals)."""
    total = re.findall(r"([\d.]+) tokens/s \(this GPU x (\d+)\)", log_text)
    recent = [float(x) for x in re.findall(r"([\d.]+) tokens/s all GPUs over the last", log_text)]
    out = {"overall": float(total[-1][0]) * int(total[-1][1]) if total else None}
    if recent:
        out["steady"] = float(np.median(recent[2:] if len(recent) > 4 else recent))
    return out


def summarise_holdout(name: str, labels: pd.Series, gbdt_test: pd.DataFrame | None) -> dict:
    """The variant's test.parquet (its fold model on the held-out rows, swap-TTA) against their labels
    (``lmsys_arena.holdout.read_labels``)."""
    from lmsys_arena.holdout import labelled_rows

    test = pd.read_parquet(Path("runs") / name / "test.parquet")
    pos, y = labelled_rows(test["id"], labels, f"run {name}")
    p = test[PROB].to_numpy()[pos]
    res = {"holdout_rows": len(y), "holdout_logloss": log_loss(y, p), "holdout_accuracy": accuracy(y, p)}
    if gbdt_test is not None:
        g = gbdt_test[PROB].to_numpy()[labelled_rows(gbdt_test["id"], labels, "--gbdt-test")[0]]
        res["holdout_gbdt_logloss"] = log_loss(y, g)
        res.update({f"holdout_{k}": v for k, v in stack_gain(y, g, p).items()})
    return res


def summarise(name: str, fold: int, gbdt: pd.DataFrame | None) -> dict:
    run = Path("runs") / name
    oof = pd.read_parquet(run / "oof.parquet")
    y = oof["label"].to_numpy()
    p = oof[PROB].to_numpy()
    res = {"rows": len(oof), "logloss_tta": log_loss(y, p), "accuracy_tta": accuracy(y, p)}
    raw_path = run / f"fold{fold}" / "valid_raw.npz"
    if raw_path.exists():
        raw = np.load(raw_path)
        order = pd.Series(np.arange(len(raw["id"])), index=raw["id"]).loc[oof["id"].astype(str)].to_numpy()
        res["logloss_no_tta"] = log_loss(y, softmax(raw["ab"][order].astype(np.float64)))
        if len(raw["ba"]):
            res["order_consistency"] = order_consistency(raw["ab"], raw["ba"])
            if "aux_ab" in raw:  # the text head alone (model logits minus the aux head's)
                res["text_order_consistency"] = order_consistency(raw["ab"] - raw["aux_ab"], raw["ba"] - raw["aux_ba"])
    if gbdt is not None:
        g = gbdt.set_index(gbdt["id"].astype(str)).loc[oof["id"].astype(str), PROB].to_numpy()
        res["gbdt_logloss_same_rows"] = log_loss(y, g)
        res["blend50_prob"] = log_loss(y, (p + g) / 2)
        geo = np.exp((np.log(np.clip(p, 1e-15, 1)) + np.log(np.clip(g, 1e-15, 1))) / 2)
        res["blend50_logprob"] = log_loss(y, geo / geo.sum(1, keepdims=True))
        res.update(stack_gain(y, g, p))
    return res


def stack_gain(y: np.ndarray, gbdt: np.ndarray, llm: np.ndarray, folds: int = 5) -> dict:
    """Does the LLM add information the GBDT lacks? 5-fold CV logistic regression on the fold's rows,
    over [A-B margin, tie margin] of the GBDT's log-probabilities alone vs with the LLM's too. The gain
    (``stack_gbdt - stack_gbdt_llm``) bounds what any blend of the two can gain beyond recalibration."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    def margins(p):
        lp = np.log(np.clip(p, 1e-9, 1))
        return np.column_stack([lp[:, 0] - lp[:, 1], lp[:, 2] - (lp[:, 0] + lp[:, 1]) / 2])

    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    fit = lambda X: log_loss(
        y,
        cross_val_predict(
            LogisticRegression(max_iter=2000),
            X,
            y,
            cv=cv,  # noqa: E731
            method="predict_proba",
        ),
    )
    alone, both = fit(margins(gbdt)), fit(np.column_stack([margins(gbdt), margins(llm)]))
    return {"stack_gbdt": alone, "stack_gbdt_llm": both, "stack_gain": alone - both}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--extra", default=None)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--gbdt", default=None, help="a GBDT run's oof.parquet to blend with")
    ap.add_argument("--holdout-labels", default=None, help="labels of --data test.csv (held out): infer, score")
    ap.add_argument("--gbdt-test", default=None, help="the GBDT run's test.parquet of the held-out rows")
    ap.add_argument("--per-gpu", type=int, default=1, help="variants sharing one GPU")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs per variant (torchrun DDP when > 1)")
    ap.add_argument("--variants", nargs="+", required=True, metavar="NAME:KEY=VALUE ...")
    ap.add_argument(
        "--from-best",
        default=None,
        metavar="SWEEP_JSON",
        help="prepend the overrides of the best variant (lowest TTA log loss) of an earlier sweep",
    )
    ap.add_argument("--out", default="runs/llm_fold_sweep.json")
    a = ap.parse_args(argv)

    from lmsys_arena.config import load_config, parse_assignments
    from lmsys_arena.llm.backbones import resolve_backbone

    variants = [(v.split(":", 1)[0], v.split(":", 1)[1].split() if ":" in v else []) for v in a.variants]
    if a.from_best:
        done = {k: r for k, r in json.loads(Path(a.from_best).read_text()).items() if "logloss_tta" in r}
        best = min(done, key=lambda k: done[k]["logloss_tta"])
        print(f"best of {a.from_best}: {best} ({done[best]['logloss_tta']:.5f}) {done[best]['sets']}")
        variants = [(name, done[best]["sets"] + sets) for name, sets in variants]
    for name, sets in variants:
        overrides = config_sets(sets)  # seed=N, command=judge, pseudo=...: CLI arguments (launch)
        cfg = load_config(a.model, parse_assignments(overrides, flag=f"--variants {name}:"))
        resolve_backbone(cfg["backbone"])  # convert a GGUF once, before the processes start
    import torch

    n_gpus = max(torch.cuda.device_count(), 1)
    slots = n_gpus * a.per_gpu if a.gpus == 1 else 1
    Path("runs").mkdir(exist_ok=True)
    gbdt = pd.read_parquet(a.gbdt) if a.gbdt else None
    if a.holdout_labels:
        from lmsys_arena.holdout import read_labels

        labels = read_labels(a.holdout_labels)
    else:
        labels = None
    gbdt_test = pd.read_parquet(a.gbdt_test) if a.gbdt_test else None
    pending, running, results = list(variants), {}, {}
    t_start = time.time()
    while pending or running:
        while pending and len(running) < slots:
            name, sets = pending.pop(0)
            slot = len(results) + len(running)
            gpus = ",".join(str(g) for g in range(a.gpus)) if a.gpus > 1 else str(slot % n_gpus)
            log_path = Path("runs") / f"{name}.log"
            running[name] = (launch(name, sets, a, gpus, log_path), time.time(), log_path, sets)
        time.sleep(2)
        for name, (proc, t0, log_path, sets) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            text = log_path.read_text(errors="replace")
            m = re.search(r"trained in ([\d.]+)s", text)
            res = {
                "sets": sets,
                "returncode": proc.returncode,
                "wall_s": round(time.time() - t0, 1),
                "train_s": float(m.group(1)) if m else None,
                "train_tokens_s": tokens_per_s(text),
            }
            if proc.returncode == 0:
                res.update(summarise(name, a.fold, gbdt))
                if labels is not None:
                    res.update(summarise_holdout(name, labels, gbdt_test))
            else:
                res["log_tail"] = text[-3000:]
            results[name] = res
            print(f"[{name}] {json.dumps(res)}", flush=True)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(results, indent=1))  # after every variant: a killed sweep keeps these
    print(f"all variants in {time.time() - t_start:.0f}s")
    for name, r in results.items():
        f = lambda k, r=r: f"{r[k]:.5f}" if isinstance(r.get(k), float) else "-"
        print(
            f"SUMMARY {name:<14} tta {f('logloss_tta')} no-tta {f('logloss_no_tta')} acc {f('accuracy_tta')} "
            f"gbdt {f('gbdt_logloss_same_rows')} blend50 prob {f('blend50_prob')} logprob {f('blend50_logprob')} "
            f"stack gain {f('stack_gain')} order {f('order_consistency')} text order {f('text_order_consistency')} "
            f"holdout {f('holdout_logloss')} gbdt {f('holdout_gbdt_logloss')} stack gain {f('holdout_stack_gain')} "
            f"tok/s {r.get('train_tokens_s')} train {r.get('train_s')}s wall {r['wall_s']}s"
        )
    return results


if __name__ == "__main__":
    main()
