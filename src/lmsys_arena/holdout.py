"""Held-out labels: score runs and fit blend weights on battles that no model (and no teacher) trained on.

    make score RUN=xgb-holdout LABELS=input/lmsys-arena-subset-holdout_labels.csv
    make ensemble RUNS="xgb-holdout qwen2.5-coder-1.5b-distill-holdout" FIT_LABELS=input/..._labels.csv

A run's OOF rows are optimistic where a teacher or a pseudo-labeller saw them (docs/llm.md#distillation), so
its gains, and blend weights, are better read on a held-out slice: keep some prompts out of every fold, train on
the rest, and let ``make infer`` score the held-out battles as the data folder's test.csv.
``benchmarks/merge_holdout.py --precision-only`` writes such a split: ``input/<data>-holdout/`` (test.csv = the
held-out battles) and ``input/<data>-holdout_labels.csv``.

A labels file is a CSV with ``id`` and ``label`` (0 = A wins, 1 = B wins, 2 = tie), or ``id`` and the
competition's one-hot ``winner_model_a, winner_model_b, winner_tie`` (a train.csv of the held-out rows will
do). Every labelled id must have a prediction in the run's ``test.parquet``; other predicted rows are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.cells import LABEL_COLUMNS, DataError
from lmsys_arena.metrics import accuracy, log_loss
from lmsys_arena.predictions import PROB_COLS


def read_labels(path: str | Path) -> pd.Series:
    """The labels file as a Series ``id (str) -> label (0, 1, 2)``; bad input is a :class:`DataError` naming
    the file, the row and the column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path}: not found")
    df = pd.read_csv(path, dtype={"id": str}, keep_default_na=False, na_values=[""])
    if "id" not in df.columns:
        raise DataError(f"{path}: no 'id' column (columns: {list(df.columns)})")
    if "label" in df.columns:
        col, raw = "label", pd.to_numeric(df["label"], errors="coerce")
        bad = ~raw.isin([0, 1, 2])
    elif set(LABEL_COLUMNS) <= set(df.columns):
        col = ",".join(LABEL_COLUMNS)
        onehot = df[list(LABEL_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        bad = ~(onehot.isin([0, 1]).all(axis=1) & (onehot.sum(axis=1) == 1))
        raw = onehot.to_numpy().argmax(axis=1)
    else:
        raise DataError(f"{path}: needs a 'label' column or the columns {list(LABEL_COLUMNS)}")
    bad = np.asarray(bad) | df["id"].isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{path}: row {i + 2} (id {df['id'].iloc[i]!r}), column {col}: not a label of 0, 1, 2 "
            f"(or a one-hot winner row); {int(bad.sum())} bad rows"
        )
    dup = df["id"].duplicated()
    if dup.any():
        i = int(np.argmax(dup.to_numpy()))
        raise DataError(f"{path}: row {i + 2}, column id: duplicate id {df['id'].iloc[i]!r}")
    return pd.Series(np.asarray(raw).astype(np.int64), index=pd.Index(df["id"], name="id"), name="label")


def labelled_rows(test: pd.DataFrame, labels: pd.Series, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(row positions in ``test``, their labels) for every labelled id; a labelled id without a prediction is
    an error naming ``what`` (the run) and the count."""
    pos = pd.Index(test["id"].astype(str)).get_indexer(labels.index)
    missing = pos < 0
    if missing.any():
        raise ValueError(
            f"{what}: {int(missing.sum())} of {len(labels)} labelled ids have no test prediction "
            f"(e.g. {list(labels.index[missing][:3])}): `make infer` it on the data whose test.csv holds the "
            f"held-out battles"
        )
    return pos, labels.to_numpy()


def score_test(run, labels_path: str | Path) -> dict:
    """Log loss and accuracy of ``run``'s test predictions on the labelled rows, merged into its
    ``metrics.json`` as ``holdout``; returns that dict."""
    labels = read_labels(labels_path)
    test = run.read_test()
    pos, y = labelled_rows(test, labels, f"run {run.name}")
    p = test[PROB_COLS].to_numpy()[pos]
    out = {"labels": str(labels_path), "rows": len(y), "logloss": log_loss(y, p), "accuracy": accuracy(y, p)}
    run.merge_metrics({"holdout": out})
    return out
