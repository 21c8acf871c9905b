"""Feature GBDT family (XGBoost or LightGBM), one model per fold with early stopping."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.features import build_features, swap_features
from lmsys_arena.runner import unswap_average


def _features(cfg, df):
    return build_features(df)


def fit_fold(cfg: dict, train: pd.DataFrame, valid: pd.DataFrame, fold_dir: Path, seed: int) -> np.ndarray:
    import xgboost as xgb

    Xtr, Xva = _features(cfg, train), _features(cfg, valid)
    ytr = train["label"].to_numpy()
    if cfg.get("swap_augment", False):
        Xtr = pd.concat([Xtr, swap_features(Xtr)], ignore_index=True)
        ytr = np.concatenate([ytr, np.where(ytr == 2, 2, 1 - ytr)])
    params = {"objective": "multi:softprob", "num_class": 3, "eval_metric": "mlogloss", "seed": seed,
              "nthread": cfg.get("threads", 0) or None, **cfg.get("params", {})}
    dtr, dva = xgb.DMatrix(Xtr, label=ytr), xgb.DMatrix(Xva, label=valid["label"].to_numpy())
    booster = xgb.train(params, dtr, num_boost_round=cfg.get("num_boost_round", 1000), evals=[(dva, "valid")],
                        early_stopping_rounds=cfg.get("early_stopping_rounds", 100), verbose_eval=False)
    booster.save_model(fold_dir / "model.json")
    return predict(cfg, valid, fold_dir, booster=booster)


def predict(cfg: dict, df: pd.DataFrame, fold_dir: Path, booster=None) -> np.ndarray:
    import xgboost as xgb

    if booster is None:
        booster = xgb.Booster()
        booster.load_model(fold_dir / "model.json")
    X = _features(cfg, df)
    rng = (0, booster.best_iteration + 1)
    logit = np.log(np.clip(booster.predict(xgb.DMatrix(X), iteration_range=rng), 1e-15, 1))
    if cfg.get("tta", False):
        logit_sw = np.log(np.clip(booster.predict(xgb.DMatrix(swap_features(X)), iteration_range=rng), 1e-15, 1))
        return unswap_average(logit, logit_sw)
    return logit
