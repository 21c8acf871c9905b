"""The aux head's side inputs (``model.aux``): a frame's battle features and ``is_extra`` as rows of both
orders, built without torch (scoring in a kernel, the serve page and benchmarks read them too)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmsys_arena.llm.config import ModelConfig


def aux_matrix(mcfg: ModelConfig, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """Side-input rows of both orders ``(A|B, B|A)``, each ``(n, n_features + 1)`` float32:
    ``sign(x) log1p(|x|)`` of the selected battle features, then ``is_extra``; None without an aux head.
    The B|A rows come from :func:`features.swap_features`, so swap-TTA stays exactly symmetric."""
    if not mcfg.uses_aux:
        return None
    names = mcfg.aux_features
    extra = (df["source"].to_numpy() == "extra") if "source" in df.columns else np.zeros(len(df), dtype=bool)
    if names:
        from lmsys_arena.features import build_features
        from lmsys_arena.swap import swap_features

        X = build_features(df)
        sides = [X[names], swap_features(X)[names]]
    else:
        sides = [pd.DataFrame(index=df.index)] * 2
    out = []
    for F in sides:
        F = F.to_numpy(np.float64)
        out.append(np.column_stack([np.sign(F) * np.log1p(np.abs(F)), extra]).astype(np.float32))
    return out[0], out[1]
