"""Kaggle's metric and the submission validator."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lmsys_arena.data import CLASS_NAMES

EPS = np.finfo(np.float64).eps


def log_loss(labels, probs) -> float:
    """Multi-class log loss exactly as Kaggle (sklearn ``log_loss``): rows renormalised to sum
    to 1, then clipped to [eps, 1 - eps] with eps = float64 machine epsilon."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs shape {p.shape} does not match {y.shape[0]} labels")
    p = p / p.sum(axis=1, keepdims=True)
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def accuracy(labels, probs) -> float:
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels)))


def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class SubmissionError(ValueError):
    pass


def validate_submission(sub: pd.DataFrame, test_ids, *, name: str = "submission") -> None:
    """Raise SubmissionError unless ``sub`` is a valid Kaggle submission for ``test_ids``."""
    expected = ["id", *CLASS_NAMES]
    if list(sub.columns) != expected:
        raise SubmissionError(f"{name}: columns {list(sub.columns)}, expected {expected}")
    ids = sub["id"].astype(str).str.strip()
    dup = ids[ids.duplicated()]
    if len(dup):
        raise SubmissionError(f"{name}: duplicate id {dup.iloc[0]!r}")
    want = pd.Index([str(i).strip() for i in test_ids])
    missing = want.difference(pd.Index(ids))
    extra = pd.Index(ids).difference(want)
    if len(missing) or len(extra):
        raise SubmissionError(f"{name}: ids differ from test ids: {len(missing)} missing (e.g. "
                              f"{list(missing[:3])}), {len(extra)} unexpected (e.g. {list(extra[:3])})")
    vals = sub[list(CLASS_NAMES)]
    try:
        p = vals.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise SubmissionError(f"{name}: non-numeric probabilities") from None
    bad_rows = ~np.isfinite(p).all(axis=1)
    if bad_rows.any():
        i = int(np.argmax(bad_rows))
        raise SubmissionError(f"{name}: row id={ids.iloc[i]!r} has a non-finite probability")
    neg = (p < 0).any(axis=1)
    if neg.any():
        i = int(np.argmax(neg))
        raise SubmissionError(f"{name}: row id={ids.iloc[i]!r} has a negative probability")
    off = np.abs(p.sum(axis=1) - 1) > 1e-6
    if off.any():
        i = int(np.argmax(off))
        raise SubmissionError(f"{name}: row id={ids.iloc[i]!r} probabilities sum to {p[i].sum():.9f}, not 1")
