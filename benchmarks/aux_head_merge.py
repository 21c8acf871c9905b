"""What merging does to the aux head alone: one aux head per fold (battle features + source bias, no text,
trained as ``benchmarks/aux_head_alone.py`` trains it), all from one init (``model.init_seed``'s role) or each
from its own, scored on held-out battles as the fold ensemble (mean of the folds' probabilities), as the mean of
their logits (``make merge HEADS=keep``) and as one head with the element-wise mean of their weights
(``HEADS=mean``). CPU, about a minute.

    python benchmarks/aux_head_merge.py --data input/lmsys-arena-subset-holdout \\
        --extra input/lmsys-arena-subset-holdout_extra.csv --labels input/lmsys-arena-subset-holdout_labels.csv

``--data``: a held-out split (``make holdout`` / ``benchmarks/merge_holdout.py``) with its folds file; its
test.csv rows are scored against ``--labels``, with swap-TTA (probabilities of both orders averaged).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aux_head_alone import fold_rows, train_head
from lmsys_arena.config import load_config, parse_assignments
from lmsys_arena.data import Competition
from lmsys_arena.holdout import labelled_rows, read_labels
from lmsys_arena.llm.family import options
from lmsys_arena.llm.heads import make_aux
from lmsys_arena.llm.merge import mean_state
from lmsys_arena.llm.side_inputs import aux_matrix
from lmsys_arena.metrics import log_loss, softmax
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.swap import unswap_average


def tta_logprobs(head: torch.nn.Module, x_ab: torch.Tensor, x_ba: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return unswap_average(head(x_ab).double().numpy(), head(x_ba).double().numpy())


def weight_mean(lc, heads: list[torch.nn.Module]) -> torch.nn.Module:
    """One aux head with the element-wise mean of the heads' tensors, as ``make merge HEADS=mean`` makes it."""
    merged = make_aux(lc.model)
    merged.load_state_dict(mean_state([h.state_dict() for h in heads]))
    return merged.eval()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--extra", default=None)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42, help="row order and swaps (fold k: seed + k)")
    ap.add_argument("--init-seed", type=int, default=0, help="the shared init (per-fold inits: 100 + k)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="write the result as JSON")
    a = ap.parse_args(argv)

    lc = options(load_config(a.model, parse_assignments(a.set, flag="--set")))
    if not lc.model.uses_aux:
        raise SystemExit(f"{a.model} has no aux head (model.aux)")
    spec = RunSpec(data=a.data, extra=a.extra)
    test = Competition(Path(a.data)).test(check_sample="skip")
    pos, y = labelled_rows(pd.Index(test["id"]), read_labels(a.labels), "aux_head_merge")
    x_ab, x_ba = (torch.from_numpy(x) for x in aux_matrix(lc.model, test.iloc[pos]))
    res = {"model": a.model, "rows": len(y), "folds": a.folds}
    for init in ("shared", "per-fold"):
        heads = []
        for k in range(a.folds):
            tr, _ = fold_rows(spec, k)
            init_seed = a.init_seed if init == "shared" else 100 + k
            heads.append(train_head(lc, tr, a.seed + k, init_seed=init_seed)[0])
        lps = [tta_logprobs(h, x_ab, x_ba) for h in heads]
        row = {
            "folds": [log_loss(y, np.exp(lp)) for lp in lps],
            "ensemble": log_loss(y, np.mean([np.exp(lp) for lp in lps], 0)),
            "logit_mean": log_loss(y, softmax(np.mean(lps, 0))),
            "weight_mean": log_loss(y, np.exp(tta_logprobs(weight_mean(lc, heads), x_ab, x_ba))),
        }
        res[init] = row
        print(
            f"{init} init: folds {' '.join(f'{v:.5f}' for v in row['folds'])} | ensemble {row['ensemble']:.5f} | "
            f"logit mean (HEADS=keep) {row['logit_mean']:.5f} | weight mean (HEADS=mean) {row['weight_mean']:.5f}"
        )
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
