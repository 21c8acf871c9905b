"""What a battle is trained towards: the three classes, soft targets and row weights.

The column names (:data:`SOFT_COLS`, :data:`WEIGHT_COL`) are declared here once, for CSVs and frames;
:func:`parse_soft_targets` checks a CSV's soft-target cells, the other functions read a loaded frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASS_NAMES = ("winner_model_a", "winner_model_b", "winner_tie")
# soft targets of a row (A wins, B wins, tie): the one declaration of their column names, in CSVs and frames
SOFT_COLS = ("soft_a", "soft_b", "soft_tie")
WEIGHT_COL = "weight"  # per-row loss weight in a training frame (absent or NaN: 1)
SOFT_SUM_TOL = 1e-3  # a soft-target row must sum to 1 within this (it is then renormalised)


def parse_soft_targets(raw: pd.DataFrame) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    """``(n, 3)`` soft targets from the :data:`SOFT_COLS` cells (all three empty: NaN, a row without
    them), renormalised, plus {row: (column, reason)} for bad rows."""
    text = raw[list(SOFT_COLS)].apply(lambda s: s.str.strip())
    empty = (text == "").to_numpy()
    num = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(num).all(axis=1) & (num >= 0).all(axis=1)
    total = np.where(ok, num.sum(axis=1), np.nan)
    ok &= np.abs(total - 1) <= SOFT_SUM_TOL
    bad = {int(i): _soft_row_problem(text, num, empty, i) for i in np.flatnonzero(~ok & ~empty.all(axis=1))}
    out = np.full(num.shape, np.nan)
    out[ok] = num[ok] / num[ok].sum(axis=1, keepdims=True)
    return out, bad


def _soft_row_problem(text: pd.DataFrame, num: np.ndarray, empty: np.ndarray, i: int) -> tuple[str, str]:
    """(column, reason) of bad soft-target row ``i``: a missing or non-numeric cell, a negative value, or a
    sum other than 1."""
    values = dict(zip(SOFT_COLS, text.iloc[i].tolist()))
    not_num = [c for c, v, e in zip(SOFT_COLS, num[i], empty[i]) if e or not np.isfinite(v)]
    if not_num:
        return not_num[0], f"{values[not_num[0]]!r} is not a number (a soft row needs all three)"
    if (num[i] < 0).any():
        return "/".join(SOFT_COLS), f"soft targets {values} are negative"
    return "/".join(SOFT_COLS), f"soft targets {values} sum to {num[i].sum():.6g}, not 1"


def soft_labels(soft: np.ndarray) -> np.ndarray:
    """The label a soft-labelled row stands for (its soft targets' argmax; -1 on a row without them)."""
    has = np.isfinite(soft).all(axis=1)
    return np.where(has, np.argmax(np.nan_to_num(soft), axis=1), -1).astype(np.int8)


def soft_targets(df: pd.DataFrame) -> np.ndarray | None:
    """The rows' soft targets ``(n, 3)`` (NaN rows: no soft target, the label is the target), or None when
    no row has one."""
    if not all(c in df.columns for c in SOFT_COLS):
        return None
    soft = df[list(SOFT_COLS)].to_numpy(dtype=np.float64)
    return soft if np.isfinite(soft).all(axis=1).any() else None


def target_matrix(df: pd.DataFrame) -> np.ndarray:
    """Every row's target distribution ``(n, 3)``: its soft targets, else the one-hot of its label."""
    y = df["label"].to_numpy()
    if (y < 0).any() and soft_targets(df) is None:
        raise ValueError(f"{int((y < 0).sum())} unlabelled rows have no soft targets")
    out = np.zeros((len(df), 3))
    out[np.arange(len(df))[y >= 0], y[y >= 0]] = 1.0
    soft = soft_targets(df)
    if soft is not None:
        has = np.isfinite(soft).all(axis=1)
        out[has] = soft[has]
    return out


def row_weights(df: pd.DataFrame) -> np.ndarray | None:
    """The rows' loss weights (NaN: 1), or None when every row weighs 1."""
    if WEIGHT_COL not in df.columns:
        return None
    w = np.nan_to_num(df[WEIGHT_COL].to_numpy(dtype=np.float64), nan=1.0)
    return None if (w == 1.0).all() else w
