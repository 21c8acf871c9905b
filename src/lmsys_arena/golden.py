"""Golden rows: the train/serve skew check.

At training time every model folder gets ``golden.parquet``: a few of its rows (their texts), the features its
family computes for them (:func:`family_features`: a GBDT's feature matrix, an LLM's token counts and aux
features) and the model's logits. A kernel scores those rows again beside the test rows (no extra model load),
recomputes their features, and compares (:func:`check`): a changed feature definition, tokenizer or library
shows as a mismatch, and the kernel then treats the run as it treats a run the time guard stopped (its rows
fall back). :func:`compare_versions` lists the libraries whose version differs from training time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

GOLDEN_FILE = "golden.parquet"
N_GOLDEN = 8
TEXT_COLS = ("id", "prompt", "response_a", "response_b")
FEATURE_PREFIX, LOGIT_PREFIX = "f:", "logit:"
FEATURE_RTOL, FEATURE_ATOL = 1e-5, 1e-6


def pick(df: pd.DataFrame, n: int = N_GOLDEN) -> np.ndarray:
    """Row positions spread over the rows' text lengths (short to long), deterministic."""
    if len(df) <= n:
        return np.arange(len(df))
    size = sum(df[c].astype(str).str.len().to_numpy() for c in TEXT_COLS[1:])
    order = np.argsort(size, kind="stable")
    return np.sort(order[np.linspace(0, len(df) - 1, n).round().astype(int)])


def family_features(fam, cfg: dict, df: pd.DataFrame) -> pd.DataFrame:
    """The family's ``golden_features`` hook (an empty frame for a family without one)."""
    hook = getattr(fam, "golden_features", None)
    return hook(cfg, df).reset_index(drop=True) if hook is not None else pd.DataFrame(index=range(len(df)))


def write(model_dir: Path, rows: pd.DataFrame, logits: np.ndarray, features: pd.DataFrame, tolerance: float) -> Path:
    """``model_dir/golden.parquet`` from the rows, their logits (n, 3) and their features."""
    from lmsys_arena.io import write_parquet

    cols = [c for c in (*TEXT_COLS, "source") if c in rows.columns]
    out = rows[cols].reset_index(drop=True).copy()
    out["id"] = out["id"].astype(str)
    logits = np.asarray(logits, dtype=np.float64)
    extra = {FEATURE_PREFIX + str(c): features[c].to_numpy(dtype=np.float64) for c in features.columns}
    extra.update({f"{LOGIT_PREFIX}{k}": logits[:, k] for k in range(3)})
    extra["tolerance"] = np.full(len(out), float(tolerance))
    out = pd.concat([out, pd.DataFrame(extra)], axis=1)
    out.attrs = {}  # the loader's report (not JSON) would go into the parquet metadata
    path = Path(model_dir) / GOLDEN_FILE
    write_parquet(path, out)
    return path


def read(model_dir: Path) -> pd.DataFrame | None:
    path = Path(model_dir) / GOLDEN_FILE
    return pd.read_parquet(path) if path.exists() else None


def rows_of(golden: pd.DataFrame) -> pd.DataFrame:
    """The battles of a golden file, as the family's ``predict`` takes them."""
    cols = [c for c in golden.columns if not c.startswith((FEATURE_PREFIX, LOGIT_PREFIX)) and c != "tolerance"]
    return golden[cols].reset_index(drop=True)


def check(golden: pd.DataFrame, logits: np.ndarray, features: pd.DataFrame) -> list[str]:
    """What differs between a golden file and the same rows scored now ([]: nothing). Probabilities are
    compared to the file's ``tolerance`` (the family's: exact-ish for a GBDT, precision-sized for an LLM);
    rows not scored (NaN: the time guard) are not compared."""
    from lmsys_arena.metrics import softmax

    problems = []
    want_f = [c for c in golden.columns if c.startswith(FEATURE_PREFIX)]
    have = {FEATURE_PREFIX + str(c): c for c in features.columns}
    if sorted(want_f) != sorted(have):
        missing, extra = sorted(set(want_f) - set(have)), sorted(set(have) - set(want_f))
        problems.append(f"feature columns differ (missing {missing[:5]}, new {extra[:5]})")
    else:
        for c in want_f:
            a = golden[c].to_numpy(dtype=np.float64)
            b = features[have[c]].to_numpy(dtype=np.float64)
            bad = ~np.isclose(a, b, rtol=FEATURE_RTOL, atol=FEATURE_ATOL, equal_nan=True)
            if bad.any():
                i = int(np.argmax(bad))
                problems.append(
                    f"feature {c[len(FEATURE_PREFIX) :]!r} of row id={golden['id'].iloc[i]}: {a[i]:.6g} at "
                    f"training, {b[i]:.6g} now"
                )
    want = golden[[f"{LOGIT_PREFIX}{k}" for k in range(3)]].to_numpy(dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    scored = np.isfinite(logits).all(axis=1)
    if scored.any():
        diff = np.abs(softmax(want[scored]) - softmax(logits[scored])).max(axis=1)
        tol = float(golden["tolerance"].iloc[0])
        if diff.max() > tol:
            i = int(np.argmax(diff))
            problems.append(
                f"predictions of row id={golden['id'][scored].iloc[i]} moved by {diff[i]:.3g} in probability "
                f"(tolerance {tol:g})"
            )
    return problems


def compare_versions(trained: dict[str, str], now: dict[str, str]) -> dict[str, list[str | None]]:
    """``{library: [version at training, version now]}`` for the libraries that differ (None: absent)."""
    alias = {"xgboost-cpu": "xgboost"}  # the same library without CUDA
    trained = {alias.get(k, k): v for k, v in trained.items()}
    now = {alias.get(k, k): v for k, v in now.items()}
    names = sorted(set(trained) | set(now))
    return {n: [trained.get(n), now.get(n)] for n in names if trained.get(n) != now.get(n)}
