"""The A/B swap, in one place: labels, battle frames, feature frames, logits and swap-TTA.

A battle seen as B|A is the same battle with the two responses exchanged: A wins <-> B wins, a tie
stays a tie. Class columns are (A wins, B wins, tie) everywhere, so a prediction made on the swapped
battle is read back in the original order by exchanging its first two columns (:data:`UNSWAP`).

Feature frames follow a naming convention (``features.py``) that defines their swap without
recomputing anything: ``a_<x>`` / ``b_<x>`` are exchanged, ``diff_<x>`` and ``lr_<x>`` negated,
everything else (prompt and symmetric pair features) kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

UNSWAP = [1, 0, 2]  # columns of a B|A prediction, in the A|B order


def swap_labels(y) -> np.ndarray:
    """Class indices of the swapped battles (0 <-> 1, ties and -1 unchanged), dtype kept."""
    y = np.asarray(y)
    return np.where(y == 0, 1, np.where(y == 1, 0, y)).astype(y.dtype)


def swap_battles(df: pd.DataFrame) -> pd.DataFrame:
    """The same battles with A and B exchanged (responses, model names, labels)."""
    out = df.copy()
    out["response_a"], out["response_b"] = df["response_b"], df["response_a"]
    if "model_a" in df.columns and "model_b" in df.columns:
        out["model_a"], out["model_b"] = df["model_b"], df["model_a"]
    if "label" in df.columns:
        out["label"] = swap_labels(df["label"].to_numpy()).astype(np.int8)
    return out


def swap_features(X: pd.DataFrame) -> pd.DataFrame:
    """The feature frame of the A/B-swapped battles, without recomputing anything."""
    out = X.copy()
    for c in X.columns:
        if c.startswith("a_") and "b_" + c[2:] in X.columns:
            out[c], out["b_" + c[2:]] = X["b_" + c[2:]].to_numpy(), X[c].to_numpy()
        elif c.startswith(("diff_", "lr_")):
            out[c] = -X[c].to_numpy()
    return out


def unswap(pred: np.ndarray) -> np.ndarray:
    """A prediction (logits or probabilities, ``(n, 3)``) of the swapped battles, in the original order."""
    return np.asarray(pred)[:, UNSWAP]


def unswap_average(logits: np.ndarray, logits_swapped: np.ndarray) -> np.ndarray:
    """Swap-TTA: average p(x) with unswap(p(swap(x))); returns log-probabilities."""
    from lmsys_arena.metrics import softmax

    p = softmax(logits)
    q = unswap(softmax(logits_swapped))
    return np.log(np.clip((p + q) / 2, 1e-300, 1))


def combine_tta(logits: np.ndarray, logits_swapped: np.ndarray | None) -> np.ndarray:
    """Swap-TTA where both orders were scored; one order where only one was (a deadline stopped the
    other); NaN where neither. ``logits_swapped=None``: no TTA, ``logits`` as they are."""
    if logits_swapped is None:
        return logits
    out = np.full(logits.shape, np.nan, dtype=np.float64)
    ok_f, ok_s = np.isfinite(logits).all(1), np.isfinite(logits_swapped).all(1)
    both = ok_f & ok_s
    if both.any():
        out[both] = unswap_average(logits[both], logits_swapped[both])
    out[ok_f & ~ok_s] = logits[ok_f & ~ok_s]
    out[~ok_f & ok_s] = unswap(logits_swapped[~ok_f & ok_s])
    return out
