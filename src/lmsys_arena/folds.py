"""Stratified, prompt-grouped K folds, written once per data folder and selected by query.

``folds/<data-name>.csv`` has columns ``id, fold``. Identical prompts (all turns) share a
group, so a prompt never straddles folds; folds are stratified by label and seeded, so
re-running yields the identical file. External rows get no fold: they always train.

    make folds [DATA=input/lmsys-chatbot-arena] [FOLDS=5] [SEED=42]
    python -m lmsys_arena folds --data input/sample --folds 5 --seed 42
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from lmsys_arena.data import DataError, prompt_key
from lmsys_arena.io import write_csv

log = logging.getLogger(__name__)


def make_folds(train: pd.DataFrame, k: int = 5, seed: int = 42) -> pd.DataFrame:
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    groups = pd.factorize(prompt_key(train))[0]
    if groups.max(initial=-1) + 1 < k:
        raise ValueError(f"need at least {k} distinct prompts for {k} folds, got {groups.max(initial=-1) + 1}")
    fold = np.full(len(train), -1, dtype=np.int16)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, valid_idx) in enumerate(splitter.split(np.zeros(len(train)), train["label"], groups)):
        fold[valid_idx] = f
    return pd.DataFrame({"id": train["id"].to_numpy(), "fold": fold})


def folds_path(data_name: str, root: str | Path = "folds") -> Path:
    return Path(root) / f"{data_name}.csv"


def write_folds(folds: pd.DataFrame, path: str | Path, labels=None) -> None:
    write_csv(path, folds)
    frame = folds.assign(label=np.asarray(labels)) if labels is not None else folds
    for f, g in frame.groupby("fold"):
        shares = "" if labels is None else ", A/B/tie " + "/".join(f"{(g['label'] == c).mean():.1%}" for c in range(3))
        log.info("fold %d: %d rows%s", f, len(g), shares)


def read_folds(path: str | Path, train: pd.DataFrame) -> pd.Series:
    """Fold per train row (aligned to ``train``), after checking the file against the data the run reads:
    columns ``id,fold``, unique ids, the same ids as ``train``, whole fold numbers 0..k-1 (k >= 2) each with
    rows, and every prompt (all turns) in one fold. A failed check names the file and what differs."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make folds` first")
    try:
        folds = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable folds file ({type(e).__name__}: {e}); re-run `make folds`") from None
    if list(folds.columns) != ["id", "fold"]:
        raise DataError(f"{path}: expected the columns id,fold; got {list(folds.columns)}")
    number = pd.to_numeric(folds["fold"], errors="coerce")
    bad = ~(number.notna() & (number % 1 == 0))
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise DataError(f"{path} line {i + 2} (id={folds['id'].iat[i]!r}): fold {folds['fold'].iat[i]!r} is not a "
                        f"whole number")  # fmt: skip
    fold = number.astype(int)
    dup = folds["id"].duplicated(keep=False)
    if dup.any():
        first = folds["id"][dup].iat[0]
        raise DataError(f"{path}: id {first!r} appears {int((folds['id'] == first).sum())} times "
                        f"({int(dup.sum())} rows with a repeated id); re-run `make folds`")  # fmt: skip
    k = int(fold.max()) + 1 if len(fold) else 0
    wrong = sorted(set(fold[(fold < 0)].tolist()))
    empty = sorted(set(range(k)) - set(fold.tolist()))
    if wrong or k < 2 or empty:
        what = (f"negative fold numbers {wrong}" if wrong else f"only {k} fold" if k < 2
                else f"folds {empty} have no rows (folds are numbered 0..{k - 1})")  # fmt: skip
        raise DataError(f"{path}: {what}; every train row needs a fold 0..k-1 with k >= 2: re-run `make folds`")
    mapping = dict(zip(folds["id"], fold))
    missing = [i for i in train["id"] if i not in mapping]
    unknown = sorted(set(mapping) - set(train["id"]))
    if missing or unknown:
        raise DataError(
            f"{path} does not match the train rows: {len(missing)} train ids have no fold (e.g. {missing[:3]}), "
            f"{len(unknown)} ids are not in the train file (e.g. {unknown[:3]}); the data changed since "
            f"`make folds` (or another data folder has the same name): re-run it"
        )
    fold_of = train["id"].map(mapping).astype(int)
    spread = pd.Series(fold_of.to_numpy()).groupby(prompt_key(train).to_numpy()).nunique()
    if (spread > 1).any():
        raise DataError(
            f"{path}: {int((spread > 1).sum())} prompts straddle folds (e.g. a prompt starting "
            f"{str(spread[spread > 1].index[0])[:60]!r}): these folds were not made from this data by `make folds`"
        )
    return fold_of
