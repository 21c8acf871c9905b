"""Kaggle's metric and the submission validator."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmsys_arena.data import CLASS_NAMES

EPS = np.finfo(np.float64).eps


def log_loss(labels, probs) -> float:
    """Multi-class log loss exactly as Kaggle scores this competition (sklearn ``log_loss`` with
    ``eps="auto"``, as sklearn <= 1.4 computed it): probabilities clipped to [eps, 1 - eps] with
    eps = float64 machine epsilon, then each row divided by its sum, then the mean of
    -log p[label]. So unnormalised rows are fine and an all-zero row scores log(3).
    (sklearn >= 1.5 no longer renormalises; on normalised rows the two agree.)"""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs shape {p.shape} does not match {y.shape[0]} labels")
    if len(y) == 0:
        raise ValueError("log loss of zero rows")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must be in 0..{p.shape[1] - 1}, got {y.min()}..{y.max()}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN or inf")
    p = np.clip(p, EPS, 1 - EPS)
    p = p / p.sum(axis=1, keepdims=True)
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


def order_consistency(logits_ab, logits_ba) -> float:
    """How much a pairwise model's A-vs-B margin follows the responses when their order is swapped:
    the correlation of ``a - b`` scored as A|B with ``b - a`` scored as B|A (logit columns a, b, tie).
    About 1: the margin follows the content. About 0 or below: the model ignores the order, e.g. a text
    model whose margin has collapsed to a constant (it then only predicts ties vs non-ties; swap-TTA
    hides this by averaging the two orders). 0.0 when either margin is constant."""
    ab, ba = np.asarray(logits_ab, dtype=np.float64), np.asarray(logits_ba, dtype=np.float64)
    m_ab, m_ba = ab[:, 0] - ab[:, 1], ba[:, 1] - ba[:, 0]
    if len(m_ab) < 2 or m_ab.std() < 1e-12 or m_ba.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(m_ab, m_ba)[0, 1])


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
        raise SubmissionError(
            f"{name}: ids differ from test ids: {len(missing)} missing (e.g. "
            f"{list(missing[:3])}), {len(extra)} unexpected (e.g. {list(extra[:3])})"
        )
    p = sub[list(CLASS_NAMES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    _first_bad(~np.isfinite(p), ids, name, "is not a finite number")
    _first_bad(p < 0, ids, name, "is negative")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1) > 1e-6
    if off.any():
        i = int(np.argmax(off))
        raise SubmissionError(
            f"{name}: row id={ids.iloc[i]!r}: probabilities sum to {sums[i]:.9f}, not 1 "
            f"(tolerance 1e-6; {int(off.sum())} such rows)"
        )


def _first_bad(mask: np.ndarray, ids: pd.Series, name: str, what: str) -> None:
    rows = mask.any(axis=1)
    if rows.any():
        i = int(np.argmax(rows))
        col = CLASS_NAMES[int(np.argmax(mask[i]))]
        raise SubmissionError(f"{name}: row id={ids.iloc[i]!r} column '{col}' {what} ({int(rows.sum())} such rows)")
