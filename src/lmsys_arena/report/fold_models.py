"""What a run's fold models add to its view: both orders' predictions (position bias) and, for GBDT runs, the
feature importance (gain and mean |SHAP|)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lmsys_arena.metrics import order_consistency, softmax

if TYPE_CHECKING:
    from lmsys_arena.report.frames import RunView


def _llm_orders(view: RunView) -> None:
    """Both orders' logits of the LLM's validation rows (``fold<k>/valid_raw.npz``: ``ab``, ``ba``; no TTA)."""
    ids, ab, ba = [], [], []
    for f in sorted(view.oof["fold"].unique()):
        path = view.source.fold_dir(int(f)) / "valid_raw.npz"
        if not path.exists():
            view.orders_note = f"{path} not found (a fold trained before raw logits were saved)"
            return
        raw = np.load(path)
        ids.append(raw["id"].astype(str))
        ab.append(raw["ab"].astype(np.float64))
        ba.append(raw["ba"].astype(np.float64) if len(raw["ba"]) else np.full_like(raw["ab"], np.nan, np.float64))
    _set_orders(view, np.concatenate(ids), np.concatenate(ab), np.concatenate(ba))


def _set_orders(view: RunView, ids: np.ndarray, logit_ab: np.ndarray, logit_ba: np.ndarray) -> None:
    """Store both orders' probabilities aligned with the OOF rows (the A|B logits, the B|A logits in B|A order)."""
    pos = pd.Series(np.arange(len(ids)), index=pd.Index(ids))
    idx = pos.reindex(view.oof["id"].to_numpy()).to_numpy()
    if np.isnan(idx).any():
        view.orders_note = f"{int(np.isnan(idx).sum())} OOF rows have no per-order logits"
        return
    idx = idx.astype(np.int64)
    ab, ba = logit_ab[idx], logit_ba[idx]
    ok_ab = np.isfinite(ab).all(axis=1)
    has_ba = np.isfinite(ba).all(axis=1)
    view.orders = {
        "ab": np.where(ok_ab[:, None], softmax(np.nan_to_num(ab)), np.nan),
        "ba": np.where(has_ba[:, None], softmax(np.nan_to_num(ba)), np.nan) if has_ba.any() else None,
        "consistency": order_consistency(ab[ok_ab & has_ba], ba[ok_ab & has_ba])
        if (ok_ab & has_ba).sum() > 1
        else None,
    }
    if not has_ba.any():
        view.orders_note = "the run scored the A|B order only (tta: false): no swap statistics"


def _gbdt_extras(view: RunView, shap_rows: int, seed: int) -> None:
    """Each fold model on its own OOF rows: both orders without TTA (swap.swap_features, as gbdt.py's TTA does),
    and gain / mean |SHAP| (the library's own contributions) on a seeded sample of the rows."""
    from lmsys_arena import gbdt
    from lmsys_arena.io import read_json
    from lmsys_arena.swap import swap_features

    o = gbdt.options({k: v for k, v in view.source.model_config()[0].items()})
    rng = np.random.default_rng(seed)
    in_sample = np.zeros(len(view.oof), dtype=bool)
    in_sample[rng.choice(len(view.oof), size=min(shap_rows, len(view.oof)), replace=False)] = True
    p_ab = np.full((len(view.oof), 3), np.nan)
    p_ba = np.full((len(view.oof), 3), np.nan)
    gains, shaps = [], []
    for f in sorted(view.oof["fold"].unique()):
        fold_dir = view.source.fold_dir(int(f))
        at = np.flatnonzero(view.oof["fold"].to_numpy() == f)
        rows = view.oof.iloc[at].reset_index(drop=True)
        meta = read_json(fold_dir / "gbdt.json")
        X = gbdt.features(o, rows)
        if o.text_score:  # the fold's own Naive-Bayes weights, as gbdt.predict reads them
            X["diff_text_score"] = gbdt._text_score(o, rows, np.load(fold_dir / "text_score.npy"))
        if meta["features"] != list(X.columns):
            view.orders_note = view.importance_note = f"{fold_dir} was trained on other features (features.py changed)"
            return
        model = gbdt._load(meta["backend"], fold_dir)
        p_ab[at] = gbdt._proba(model, X)
        p_ba[at] = gbdt._proba(model, swap_features(X))
        gains.append(_gain(model, meta["backend"], list(X.columns)))
        sample = in_sample[at]
        if sample.any():
            shaps.append((int(sample.sum()), _mean_abs_shap(model, meta["backend"], X[sample])))
    again = unswap_mean(p_ab, p_ba) if o.tta else np.log(np.clip(p_ab, 1e-15, 1))
    drift = float(np.abs(softmax(again) - view.p).max())
    if drift > 1e-4:
        view.notes.append(f"the fold models re-scored give OOF probabilities up to {drift:.2g} off the saved ones")
    view.orders = {"ab": p_ab, "ba": p_ba, "consistency": order_consistency(np.log(p_ab), np.log(p_ba))}
    gain = pd.concat(gains, axis=1).fillna(0.0).mean(axis=1)
    w = np.array([n for n, _ in shaps], dtype=np.float64)
    if shaps:
        shap = pd.concat([s for _, s in shaps], axis=1).fillna(0.0)
        shap = pd.Series(shap.to_numpy() @ (w / w.sum()), index=shap.index)
    else:
        shap = pd.Series(np.nan, index=gain.index)
    imp = pd.DataFrame({"gain share": gain, "mean |SHAP|": shap.reindex(gain.index).fillna(0.0)})
    view.importance = imp.sort_values("mean |SHAP|", ascending=False).rename_axis("feature").reset_index()
    view.importance_note = (
        f"{meta['backend']}: gain = each feature's share of the total split gain, averaged over "
        f"{len(gains)} fold models; mean |SHAP| over {int(w.sum())} sampled OOF rows and the 3 classes "
        "(log-odds units), each row scored by its own fold's model"
    )


def unswap_mean(p_ab: np.ndarray, p_ba: np.ndarray) -> np.ndarray:
    from lmsys_arena.swap import unswap_average

    return unswap_average(np.log(np.clip(p_ab, 1e-15, 1)), np.log(np.clip(p_ba, 1e-15, 1)))


def _gain(model, backend: str, names: list[str]) -> pd.Series:
    if backend == "xgboost":
        score = model.get_score(importance_type="total_gain")
        g = pd.Series({n: float(score.get(n, 0.0)) for n in names})
    else:
        g = pd.Series(model.feature_importance(importance_type="gain"), index=model.feature_name(), dtype=float)
        g = g.reindex(names).fillna(0.0)
    return g / g.sum() if g.sum() > 0 else g


def _mean_abs_shap(model, backend: str, X: pd.DataFrame) -> pd.Series:
    """Mean |contribution| per feature over rows and classes (xgboost pred_contribs / lightgbm pred_contrib)."""
    if backend == "xgboost":
        import xgboost as xgb

        c = np.asarray(model.predict(xgb.DMatrix(X), pred_contribs=True))  # (n, classes, features + bias)
    else:
        c = np.asarray(model.predict(X, pred_contrib=True, num_iteration=model.best_iteration or None))
        c = c.reshape(len(X), -1, X.shape[1] + 1)  # (n, classes * (features + bias)) -> by class
    if c.ndim == 2:  # a single-output model
        c = c[:, None, :]
    return pd.Series(np.abs(c[:, :, :-1]).mean(axis=(0, 1)), index=X.columns)
