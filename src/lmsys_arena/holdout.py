"""A held-out split, and held-out labels: score runs and fit blend weights on battles no model (or teacher) saw.

    make holdout DATA=input/lmsys-chatbot-arena EXTRA=extra.csv [FRAC=0.15]   # input/<data>-holdout/ + labels
    make score RUN=xgb-holdout LABELS=input/lmsys-arena-subset-holdout_labels.csv
    make ensemble RUNS="xgb-holdout qwen2.5-coder-1.5b-distill-holdout" FIT_LABELS=input/..._labels.csv

A run's OOF rows are optimistic where a teacher or a pseudo-labeller saw them (docs/llm.md#distillation), so
its gains, and blend weights, are better read on a held-out slice: ``make holdout`` keeps ``FRAC`` of the prompts
(grouped by prompt, seeded) out of the data: ``input/<data>-holdout/`` gets the other battles as train.csv and the
held-out ones as test.csv (+ a sample_submission.csv), their labels go to ``input/<data>-holdout_labels.csv`` and
``input/<data>-holdout_extra.csv`` gets the EXTRA rows that share no held-out prompt. Train on that folder
as on any other; ``make infer`` then scores the held-out battles.

A labels file is a CSV with ``id`` and ``label`` (0 = A wins, 1 = B wins, 2 = tie), or ``id`` and the
competition's one-hot ``winner_model_a, winner_model_b, winner_tie`` (a train.csv of the held-out rows will
do). Every labelled id must have a prediction in the run's ``test.parquet``; other predicted rows are left out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.cells import LABEL_COLUMNS, DataError, read_csv_text, winner_labels
from lmsys_arena.io import read_json, write_csv, write_json
from lmsys_arena.metrics import accuracy, log_loss
from lmsys_arena.predictions import PROB_COLS

log = logging.getLogger(__name__)
SPLIT_FILE = "holdout.json"  # in the split's folder: where it came from, the fraction and the seed


def split_paths(out: Path) -> tuple[Path, Path]:
    """(labels CSV, filtered EXTRA CSV) written beside the split folder ``out``."""
    return out.with_name(out.name + "_labels.csv"), out.with_name(out.name + "_extra.csv")


def write_split(data: Path, extra: Path | None, frac: float, seed: int, out: Path | None = None) -> Path:
    """Keep ``frac`` of ``data``'s train.csv prompts out: writes ``out`` (default ``<data>-holdout`` beside
    ``data``), its labels and filtered EXTRA files (module docstring); returns ``out``. The same split again is a
    no-op; another one over an existing folder is refused (the runs trained on it would no longer match)."""
    from lmsys_arena.data import Competition, load_extra, prompt_key

    if not 0 < frac < 1:
        raise ValueError(f"--frac {frac}: must be between 0 and 1")
    data = Path(data)
    out = Path(out) if out else data.with_name(data.name + "-holdout")
    labels_csv, extra_csv = split_paths(out)
    want = {"data": str(data), "extra": str(extra) if extra else None, "frac": frac, "seed": seed}
    if (out / SPLIT_FILE).exists():
        have = read_json(out / SPLIT_FILE)
        if have != want:
            raise ValueError(f"{out} holds another split ({have}); delete it (and its runs) to make this one")
        log.info("%s: the same split is there already", out)
        return out
    raw = read_csv_text(data / "train.csv")  # cells as written: the split files keep them byte for byte
    train = Competition(data).train()
    keys = prompt_key(train)
    groups = keys.unique()
    held = set(np.random.default_rng(seed).choice(groups, int(round(frac * len(groups))), replace=False))
    is_held = keys.isin(held).to_numpy()
    ids = set(train["id"][is_held].astype(str))
    write_csv(out / "train.csv", raw[~raw["id"].isin(ids)])
    test = raw[raw["id"].isin(ids)]
    write_csv(out / "test.csv", test[["id", "prompt", "response_a", "response_b"]])
    write_csv(out / "sample_submission.csv", pd.DataFrame({"id": test["id"], **dict.fromkeys(LABEL_COLUMNS, 1 / 3)}))
    write_csv(labels_csv, train[is_held][["id", "label"]].assign(id=lambda d: d["id"].astype(str)))
    if extra:
        ex_raw = read_csv_text(Path(extra))
        ex = load_extra(str(extra), train)
        shared = set(ex["id"][prompt_key(ex).isin(held).to_numpy()].astype(str))
        write_csv(extra_csv, ex_raw[~ex_raw["id"].isin(shared)])
        log.info("EXTRA: dropped %d rows that share a held-out prompt", len(shared))
    write_json(out / SPLIT_FILE, want)  # last: a split interrupted before it is made again from scratch
    log.info(
        "held out %d of %d battles (%d of %d prompts) -> %s", is_held.sum(), len(train), len(held), len(groups), out
    )
    return out


def read_labels(path: str | Path) -> pd.Series:
    """The labels file as a Series ``id (str) -> label (0, 1, 2)``; bad input is a :class:`DataError` naming
    the file, the row and the column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path}: not found")
    df = read_csv_text(path)  # every cell a string, as written (ids like 007 stay)
    if "id" not in df.columns:
        raise DataError(f"{path}: no 'id' column (columns: {list(df.columns)})")
    if "label" in df.columns:
        col, raw = "label", pd.to_numeric(df["label"], errors="coerce")
        bad = ~raw.isin([0, 1, 2])
    elif set(LABEL_COLUMNS) <= set(df.columns):
        col, (raw, _) = ",".join(LABEL_COLUMNS), winner_labels(df)
        bad = raw < 0
    else:
        raise DataError(f"{path}: needs a 'label' column or the columns {list(LABEL_COLUMNS)}")
    bad = np.asarray(bad) | df["id"].str.strip().eq("").to_numpy()
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


def labelled_rows(ids, labels: pd.Series, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the predicted ``ids``, their labels) for every labelled id; a labelled id without a
    prediction is an error naming ``what`` (the run) and the count."""
    pos = pd.Index(pd.Index(ids).astype(str)).get_indexer(labels.index)
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
    pos, y = labelled_rows(test["id"], labels, f"run {run.name}")
    p = test[PROB_COLS].to_numpy()[pos]
    out = {"labels": str(labels_path), "rows": len(y), "logloss": log_loss(y, p), "accuracy": accuracy(y, p)}
    run.merge_metrics({"holdout": out})
    return out
