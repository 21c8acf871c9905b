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

from lmsys_arena.data import prompt_key
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
    """Fold per train row (aligned to ``train``); refuses a folds file that does not cover the data."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make folds` first")
    folds = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    if list(folds.columns) != ["id", "fold"] or not pd.api.types.is_integer_dtype(folds["fold"]):
        raise ValueError(f"{path}: expected columns id, fold (an integer); got {dict(folds.dtypes.astype(str))}")
    mapping = dict(zip(folds["id"], folds["fold"]))
    missing = [i for i in train["id"] if i not in mapping]
    if missing:
        raise ValueError(
            f"{path} has no fold for {len(missing)} train ids (e.g. {missing[:3]}): "
            f"the data changed since `make folds`; re-run it"
        )
    return train["id"].map(mapping).astype(int)
