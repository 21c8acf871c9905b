"""Hand-built battle features (placeholder: lengths only; the full set replaces this)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def build_features(df: pd.DataFrame) -> pd.DataFrame:
    def chars(col):
        return df[col].map(lambda t: sum(len(x) for x in t)).to_numpy(dtype=np.float64)

    a, b, p = chars("response_a"), chars("response_b"), chars("prompt")
    return pd.DataFrame({"a_chars": a, "b_chars": b, "prompt_chars": p, "diff_chars": a - b,
                         "lr_chars": np.log1p(a) - np.log1p(b)})


def swap_features(X: pd.DataFrame) -> pd.DataFrame:
    out = X.copy()
    for c in X.columns:
        if c.startswith("a_"):
            out[c], out["b_" + c[2:]] = X["b_" + c[2:]], X[c]
        elif c.startswith(("diff_", "lr_")):
            out[c] = -X[c]
    return out
