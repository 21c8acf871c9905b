"""Control for an LLM run with an aux head: the aux head alone (battle features + source bias, no text),
trained like the LLM's heads on the same fold rows, on CPU in seconds. If the LLM's fold loss is no better
than this, its text path adds nothing on these rows (docs/results.md, "The aux head alone").

    python benchmarks/aux_head_alone.py --data DATA --extra EXTRA --model gemma3-270m --fold 0 [--epochs 1.5]

Same train/valid rows as ``make train`` (folds file, extra rows minus those sharing a validation prompt),
random A/B swaps per row per epoch (``train.swap: random``), AdamW at ``train.head_lr`` with the config's
warmup + schedule (``llm.optim.lr_lambda``), ``train.batch_size`` rows per step, swap-TTA on the validation rows.
Prints the fold log loss with and without TTA, and the order consistency (``metrics.order_consistency``).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import torch

from lmsys_arena.config import load_config, parse_assignments
from lmsys_arena.data import load_extra, prompt_key
from lmsys_arena.folds import read_folds
from lmsys_arena.llm.family import options
from lmsys_arena.llm.heads import make_aux
from lmsys_arena.llm.optim import lr_lambda
from lmsys_arena.llm.side_inputs import aux_matrix
from lmsys_arena.metrics import log_loss, order_consistency, softmax
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.runner import fold_split
from lmsys_arena.swap import swap_labels, unswap_average


def fold_rows(spec: RunSpec, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fold's (train, valid) rows, as ``make train`` builds them."""
    train = spec.competition().train()
    extra = load_extra(spec.extra, train) if spec.extra else train.iloc[:0]
    return fold_split(
        train, read_folds(spec.resolved_folds_file(), train), extra, prompt_key(extra) if len(extra) else None, fold
    )


def train_head(lc, tr: pd.DataFrame, seed: int, init_seed: int | None = None, epochs: float | None = None,
               prior: bool = True) -> tuple[torch.nn.Module, int]:  # fmt: skip
    """(the aux head trained alone on ``tr``, its steps): init from ``init_seed`` (default ``seed``), row order
    and swaps from ``seed``."""
    torch.manual_seed(seed if init_seed is None else init_seed)
    rng = np.random.default_rng(seed)
    head = make_aux(lc.model)
    x_ab, x_ba = (torch.from_numpy(x) for x in aux_matrix(lc.model, tr))
    head.set_stats(torch.cat([x_ab, x_ba]))
    y = tr["label"].to_numpy()
    if prior:
        head.set_source_prior(y, x_ab[:, -1].numpy() > 0)
    bs = lc.train.batch_size
    steps = math.ceil(len(tr) / bs * (epochs or lc.train.epochs))
    warm = int(steps * lc.train.warmup)
    opt = torch.optim.AdamW(head.parameters(), lr=lc.train.head_lr, weight_decay=lc.train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, warm, lc.train.schedule))
    order = np.concatenate([rng.permutation(len(tr)) for _ in range(math.ceil(steps * bs / len(tr)) + 1)])
    for s in range(steps):
        idx = order[s * bs : (s + 1) * bs]
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
        xb = torch.where(flip[:, None], x_ba[idx], x_ab[idx])
        yb = torch.from_numpy(np.where(flip.numpy(), swap_labels(y[idx]), y[idx]).astype(np.int64))
        loss = torch.nn.functional.cross_entropy(head(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval(), steps


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--extra", default=None)
    ap.add_argument("--folds-file", default=None)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=None, help="default: the config's train.epochs")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-prior", action="store_true", help="start the source bias at zero (before set_source_prior)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)

    lc = options(load_config(a.model, parse_assignments(a.set, flag="--set")))
    if not lc.model.uses_aux:
        raise SystemExit(f"{a.model} has no aux head (model.aux)")
    tr, va = fold_rows(RunSpec(data=a.data, extra=a.extra, folds_file=a.folds_file), a.fold)
    head, steps = train_head(lc, tr, a.seed, epochs=a.epochs, prior=not a.no_prior)
    with torch.no_grad():
        v_ab, v_ba = (head(torch.from_numpy(x)).numpy().astype(np.float64) for x in aux_matrix(lc.model, va))
    yv = va["label"].to_numpy()
    res = {
        "rows": len(va),
        "train_rows": len(tr),
        "steps": steps,
        "logloss_tta": log_loss(yv, softmax(unswap_average(v_ab, v_ba))),
        "logloss_no_tta": log_loss(yv, softmax(v_ab)),
        "order_consistency": order_consistency(v_ab, v_ba),
    }
    print(
        f"aux head alone ({len(lc.model.aux_features)} features), fold {a.fold}: tta {res['logloss_tta']:.5f} "
        f"no-tta {res['logloss_no_tta']:.5f} order consistency {res['order_consistency']:.3f} "
        f"({len(tr)} train / {len(va)} valid rows, {steps} steps)"
    )
    return res


if __name__ == "__main__":
    main()
