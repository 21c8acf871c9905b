"""Prediction frames: one row per battle, ``id`` (then any extra columns), :data:`PROB_COLS` and
:data:`LOGIT_COLS` (classes A wins, B wins, tie). Every run file of predictions (``oof.parquet``,
``test.parquet``, a fold's ``valid.parquet``: :mod:`lmsys_arena.runs`) and every blend holds one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PROB_COLS = ["p_a", "p_b", "p_tie"]
LOGIT_COLS = ["logit_a", "logit_b", "logit_tie"]


def frame_from_logprobs(ids, logp: np.ndarray, **cols) -> pd.DataFrame:
    """A prediction frame (``id``, extra columns, probabilities, logits) from log-probabilities or logits;
    NaN rows are kept (a kernel fills them later)."""
    from lmsys_arena.metrics import softmax

    df = pd.DataFrame({"id": list(ids), **cols})
    df[PROB_COLS] = softmax(logp)
    df[LOGIT_COLS] = logp
    return df


def frame_from_logits(ids, logits: np.ndarray, **extra_cols) -> pd.DataFrame:
    """A prediction frame from a model's logits (refuses NaN/inf and wrong shapes)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (len(ids), 3) or not np.isfinite(logits).all():
        raise ValueError(f"model returned bad logits: shape {logits.shape}, finite={np.isfinite(logits).all()}")
    return frame_from_logprobs(ids, logits, **extra_cols)


def frame_logprobs(frame: pd.DataFrame) -> np.ndarray:
    """Log-probabilities of a prediction frame (its logits through log_softmax, else log of its probabilities)."""
    from lmsys_arena.metrics import log_softmax

    if all(c in frame.columns for c in LOGIT_COLS):
        return log_softmax(frame[LOGIT_COLS].to_numpy(dtype=np.float64))
    return np.log(np.clip(frame[PROB_COLS].to_numpy(dtype=np.float64), 1e-300, None))


def frame_probs(frame: pd.DataFrame) -> np.ndarray:
    return frame[PROB_COLS].to_numpy(dtype=np.float64)


def checked_frame(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A prediction frame read back: ids as strings, unique, finite predictions."""
    df["id"] = df["id"].astype(str)
    if df["id"].duplicated().any():
        raise ValueError(f"{path}: duplicate id {df['id'][df['id'].duplicated()].iloc[0]!r}")
    bad = ~np.isfinite(frame_logprobs(df)).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: row id={df['id'].iloc[int(np.argmax(bad))]!r} has non-finite predictions")
    return df
