"""Feature GBDT family: XGBoost or LightGBM on :mod:`lmsys_arena.features`, one model per fold.

    make folds train infer MODEL=xgb            # or MODEL=lgbm
    make train MODEL=lgbm SET="num_boost_round=50 params.learning_rate=0.1"

The options are :class:`GBDTConfig` (docs/config-reference.md). The swapped rows come from
:func:`swap.swap_features` (a column permutation/negation), so neither augmentation nor TTA computes
features twice. Fold files: ``model.json`` (xgboost) or ``model.txt`` (lightgbm), both truncated to the
best iteration, ``gbdt.json`` (backend, best iteration, feature names) and ``text_score.npy``; with
``train.report_to`` the per-round train and valid log loss (:mod:`lmsys_arena.curves`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lmsys_arena import curves
from lmsys_arena.bow import build_bow
from lmsys_arena.features import build_features
from lmsys_arena.io import read_json, write_json
from lmsys_arena.options import RunOptions
from lmsys_arena.schema import OptionError, build, option
from lmsys_arena.swap import swap_features, swap_labels, unswap_average

log = logging.getLogger(__name__)

# booster parameters whose type is checked (others pass to the backend as they are)
INT_PARAMS = {
    "max_depth",
    "max_bin",
    "num_leaves",
    "min_data_in_leaf",
    "bagging_freq",
    "max_leaves",
    "num_parallel_tree",
    "min_child_samples",
}
FLOAT_PARAMS = {
    "learning_rate",
    "eta",
    "min_child_weight",
    "subsample",
    "colsample_bytree",
    "colsample_bylevel",
    "reg_lambda",
    "reg_alpha",
    "lambda",
    "alpha",
    "gamma",
    "feature_fraction",
    "bagging_fraction",
    "lambda_l1",
    "lambda_l2",
    "min_gain_to_split",
    "min_sum_hessian_in_leaf",
}


@dataclass
class GBDTTrain:
    report_to: curves.ReportTo = option("none", curves.REPORT_TO_HELP + ": train/logloss, valid/logloss per round")


@dataclass
class GBDTConfig(RunOptions):
    """A feature GBDT (``family: gbdt``)."""

    backend: Literal["xgboost", "lightgbm"] = option("xgboost", "the booster library")
    swap_augment: bool = option(True, "train on every row twice, also as B|A with the label swapped")
    num_boost_round: int = option(3000, "upper bound on boosting rounds")
    early_stopping_rounds: int = option(
        100, "stop when the fold's validation log loss has not improved for this many rounds (0: off)"
    )
    source_feature: bool = option(
        True, "add is_extra (1 on EXTRA rows): the trees learn the external set's class balance"
    )
    text_score: bool = option(
        True, "add diff_text_score: a Naive-Bayes score of hashed word 1-2-grams, fitted per fold"
    )
    text_score_alpha: float = option(1.0, "additive smoothing of the text score's word counts")
    text_score_folds: int = option(5, "inner prompt-grouped folds for the text score of the fold's train rows")
    feature_cache: bool = option(True, "reuse features cached under cache/features/ (keyed by each row's texts)")
    threads: int = option(0, "CPU threads (0: all cores)")
    log_every: int = option(0, "log the validation loss every N rounds (0: off)")
    train: GBDTTrain = option(factory=GBDTTrain, help="how a training run is watched (the model does not depend on it)")
    params: dict[str, Any] = option(
        factory=dict, help="passed to the backend as is (learning rate, depth, sampling, ...)"
    )

    def __post_init__(self):
        for k, v in self.params.items():
            integer = isinstance(v, int) and not isinstance(v, bool)
            if k in INT_PARAMS and not integer:
                raise OptionError(f"params.{k}", f"must be an integer, got {v!r} ({type(v).__name__})")
            if k in FLOAT_PARAMS and not (integer or isinstance(v, float)):
                raise OptionError(f"params.{k}", f"must be a number, got {v!r} ({type(v).__name__})")
            if isinstance(v, (dict, list)):
                raise OptionError(f"params.{k}", f"must be a single value, got {v!r}")


def options(cfg: dict) -> GBDTConfig:
    return build(GBDTConfig, cfg)


def _threads(o: GBDTConfig) -> int:
    return int(o.threads or os.cpu_count() or 1)


def features(o: GBDTConfig, df: pd.DataFrame) -> pd.DataFrame:
    """The cached text features, plus ``is_extra`` (1 for external train-only rows) if ``source_feature``."""
    X = build_features(df, use_cache=o.feature_cache)
    if o.source_feature:
        source = df["source"].to_numpy() if "source" in df.columns else np.full(len(df), "")
        X = X.assign(is_extra=(source == "extra").astype(np.float32))
    return X


def fit_fold(cfg: dict, train: pd.DataFrame, valid: pd.DataFrame, fold_dir: Path, seed: int) -> np.ndarray:
    fold_dir, o = Path(fold_dir), options(cfg)
    curves.require(o.train.report_to)  # a missing writer library fails before the features are built
    Xtr, Xva = features(o, train), features(o, valid)
    if o.text_score:
        Xtr["diff_text_score"], Xva["diff_text_score"] = _fit_text_score(o, train, valid, fold_dir)
    ytr, yva = train["label"].to_numpy().astype(np.int32), valid["label"].to_numpy().astype(np.int32)
    Xtr, ytr, wtr = soft_rows(Xtr, ytr, train)
    if o.swap_augment:
        Xtr = pd.concat([Xtr, swap_features(Xtr)], ignore_index=True)
        ytr = np.concatenate([ytr, swap_labels(ytr)])
        wtr = None if wtr is None else np.concatenate([wtr, wtr])
    backend = o.backend
    fit = _fit_xgboost if backend == "xgboost" else _fit_lightgbm
    model, best_iter = fit(o, Xtr, ytr, Xva, yva, fold_dir, seed, weight=wtr)
    write_json(
        fold_dir / "gbdt.json",
        {
            "backend": backend,
            "best_iteration": best_iter,
            "features": list(Xtr.columns),
            "train_rows": len(Xtr),
            "valid_rows": len(Xva),
        },
    )
    log.info("%s: %s stopped at %d rounds (%d train rows incl. swaps)", fold_dir.name, backend, best_iter + 1, len(Xtr))
    return _predict_logits(o, model, Xva) if len(Xva) else np.zeros((0, 3))


def soft_rows(X: pd.DataFrame, y: np.ndarray, rows: pd.DataFrame):
    """``(X, y, weight)`` with soft targets and row weights (data.SOFT_COLS, data.WEIGHT_COL) as sample weights:
    a row with soft targets q becomes one row per class k with q_k > 0, label k and weight w * q_k, which gives
    the trees exactly the cross-entropy gradient and hessian of the soft target. ``weight`` is None (and X, y
    are returned as they are) when every row is one-hot with weight 1."""
    from lmsys_arena.data import row_weights, soft_targets

    soft, w = soft_targets(rows), row_weights(rows)
    if soft is None and w is None:
        return X, y, None
    w = np.ones(len(rows)) if w is None else w
    has = np.zeros(len(rows), dtype=bool) if soft is None else np.isfinite(soft).all(axis=1)
    hard = np.flatnonzero(~has)
    r, k = np.nonzero(np.nan_to_num(soft[has]) > 0) if has.any() else (np.zeros(0, int), np.zeros(0, int))
    src = np.flatnonzero(has)[r]
    idx = np.concatenate([hard, src])
    X = X.iloc[idx].reset_index(drop=True)
    y = np.concatenate([y[hard], k]).astype(np.int32)
    weight = np.concatenate([w[hard], w[src] * soft[src, k]]).astype(np.float32)
    if has.any():
        log.info("%d soft-target rows as %d weighted one-class rows", int(has.sum()), len(src))
    return X, y, weight


def refit_config(cfg: dict, fold_dirs: list[Path]) -> dict:
    """A full-data refit: the folds' mean best number of rounds, no early stopping (no validation rows)."""
    rounds = [read_json(Path(d) / "gbdt.json")["best_iteration"] + 1 for d in fold_dirs]
    n = max(int(round(float(np.mean(rounds)))), 1)
    log.info("refit: %d rounds, the mean best round of %d folds (%s)", n, len(rounds), rounds)
    return {**cfg, "num_boost_round": n, "early_stopping_rounds": 0}


def golden_features(cfg: dict, df: pd.DataFrame) -> pd.DataFrame:
    """The battle features the trees read (the text score is the fold's own weights, checked through the
    predictions)."""
    return features(options(cfg), df)


def predict(cfg: dict, df: pd.DataFrame, fold_dir: Path) -> np.ndarray:
    fold_dir, o = Path(fold_dir), options(cfg)
    meta = read_json(fold_dir / "gbdt.json")
    X = features(o, df)
    if o.text_score:
        X["diff_text_score"] = _text_score(o, df, np.load(fold_dir / "text_score.npy"))
    if meta["features"] != list(X.columns):
        raise RuntimeError(f"{fold_dir} was trained on other features (features.py changed): retrain with FRESH=1")
    return _predict_logits(o, _load(meta["backend"], fold_dir), X)


def _predict_logits(o: GBDTConfig, model, X: pd.DataFrame) -> np.ndarray:
    logit = np.log(np.clip(_proba(model, X), 1e-15, 1))
    if o.tta:
        logit_sw = np.log(np.clip(_proba(model, swap_features(X)), 1e-15, 1))
        return unswap_average(logit, logit_sw)
    return logit


# ------------------------------------------------------------------------------------------ text score


def _nb_weights(A, B, y: np.ndarray, alpha: float) -> np.ndarray:
    """Log-count ratio of hashed word n-grams in winning vs losing responses (ties ignored)."""
    import scipy.sparse as sp

    win = sp.vstack([A[y == 0], B[y == 1]])
    lose = sp.vstack([B[y == 0], A[y == 1]])
    p = np.asarray(win.sum(axis=0)).ravel() + alpha
    q = np.asarray(lose.sum(axis=0)).ravel() + alpha
    return (np.log(p / p.sum()) - np.log(q / q.sum())).astype(np.float32)


def _text_score(o: GBDTConfig, df: pd.DataFrame, w: np.ndarray) -> np.ndarray:
    """(bow(A) - bow(B)) . w: antisymmetric, so the swapped row's score is exactly the negation."""
    if not len(df):  # a refit's (empty) validation rows
        return np.zeros(0, dtype=np.float32)
    A, B = build_bow(df, use_cache=o.feature_cache)
    return (A @ w - B @ w).astype(np.float32)


def _fit_text_score(o: GBDTConfig, train: pd.DataFrame, valid: pd.DataFrame, fold_dir: Path):
    """Naive-Bayes text score as one stacked feature: out-of-fold on the fold's train rows (inner
    prompt-grouped folds, so the trees never see a score fitted on the row itself), fitted on all
    of them for the valid rows and later the test rows (weights saved as ``text_score.npy``)."""
    from sklearn.model_selection import GroupKFold

    from lmsys_arena.data import prompt_key

    alpha = o.text_score_alpha
    A, B = build_bow(train, use_cache=o.feature_cache)
    y = train["label"].to_numpy()
    oof = np.zeros(len(train), dtype=np.float32)
    groups = pd.factorize(prompt_key(train))[0]
    for fit_idx, pred_idx in GroupKFold(n_splits=o.text_score_folds).split(A, groups=groups):
        w = _nb_weights(A[fit_idx], B[fit_idx], y[fit_idx], alpha)
        oof[pred_idx] = A[pred_idx] @ w - B[pred_idx] @ w
    w = _nb_weights(A, B, y, alpha)
    np.save(fold_dir / "text_score.npy", w)
    return oof, _text_score(o, valid, w)


# ------------------------------------------------------------------------------------------ backends


def _fit_xgboost(o: GBDTConfig, Xtr, ytr, Xva, yva, fold_dir: Path, seed: int, weight=None):
    import xgboost as xgb

    params = {
        "objective": "multi:softprob",
        "num_class": 3,
        "eval_metric": "mlogloss",
        "tree_method": "hist",
        "nthread": _threads(o),
        "seed": seed,
        "verbosity": 1,
        **o.params,
    }
    dtr = xgb.QuantileDMatrix(Xtr, label=ytr, weight=weight, max_bin=params.get("max_bin", 256))
    evals = [(xgb.DMatrix(Xva, label=yva), "valid")] if len(Xva) else []  # a refit has no validation rows
    every = o.log_every
    callbacks = [_xgb_log(every)] if every and evals else []
    report = o.train.report_to != "none"
    history: dict = {}
    booster = xgb.train(
        params,
        dtr,
        num_boost_round=o.num_boost_round,
        evals=([(dtr, "train")] if report else []) + evals,  # early stopping watches the last: valid
        early_stopping_rounds=(o.early_stopping_rounds or None) if evals else None,
        verbose_eval=False,
        callbacks=callbacks,
        evals_result=history,
    )
    if report:
        _write_curves(o, fold_dir, {name: h.get("mlogloss", []) for name, h in history.items()})
    best = int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1))
    if not evals or not o.early_stopping_rounds:
        best = booster.num_boosted_rounds() - 1
    booster = booster[: best + 1]  # keep only the trees up to the best round
    booster.save_model(fold_dir / "model.json")
    return booster, best


def _fit_lightgbm(o: GBDTConfig, Xtr, ytr, Xva, yva, fold_dir: Path, seed: int, weight=None):
    import lightgbm as lgb

    params = {
        "objective": "multiclass",
        "num_class": 3,
        "metric": "multi_logloss",
        "num_threads": _threads(o),
        "seed": seed,
        "verbosity": -1,
        "deterministic": True,
        "force_row_wise": True,
        **o.params,
    }
    dtr = lgb.Dataset(Xtr, label=ytr, weight=weight, free_raw_data=True)
    valid = [lgb.Dataset(Xva, label=yva, reference=dtr)] if len(Xva) else []  # a refit has no validation rows
    every = o.log_every
    stop = valid and o.early_stopping_rounds
    callbacks = [lgb.early_stopping(o.early_stopping_rounds, verbose=False)] if stop else []
    if every and valid:
        callbacks.append(_lgb_log(every))
    report = o.train.report_to != "none"
    history: dict = {}
    if report:
        callbacks.append(lgb.record_evaluation(history))
    train_set = [dtr] if report else []  # the train rows' loss too (early stopping ignores the train set)
    booster = lgb.train(
        params,
        dtr,
        num_boost_round=o.num_boost_round,
        valid_sets=train_set + valid,
        valid_names=(["train"] if report else []) + ["valid"][: len(valid)],
        callbacks=callbacks,
    )
    if report:
        _write_curves(o, fold_dir, {name: h.get("multi_logloss", []) for name, h in history.items()})
    best = max(int(booster.best_iteration or booster.current_iteration()), 1) - 1
    booster.save_model(str(fold_dir / "model.txt"), num_iteration=best + 1)
    return booster, best


def _write_curves(o: GBDTConfig, fold_dir: Path, history: dict[str, list[float]]) -> None:
    """The booster's per-round log loss by eval set (train, valid) as ``<set>/logloss``, step = round (1, 2, ...)."""
    with curves.Curves(o.train.report_to, fold_dir, fresh=True) as c:
        c.log_series({f"{name}/logloss": values for name, values in history.items() if values})


def _load(backend: str, fold_dir: Path):
    name = "model.json" if backend == "xgboost" else "model.txt"
    try:
        if backend == "xgboost":
            import xgboost as xgb

            booster = xgb.Booster()
            booster.load_model(fold_dir / name)
            return booster
        import lightgbm as lgb

        return lgb.Booster(model_file=str(fold_dir / name))
    except Exception as e:  # the libraries raise their own error types for unreadable files
        raise ValueError(f"{fold_dir / name}: not a readable {backend} model ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:200]}); retrain with FRESH=1") from None  # fmt: skip


def _proba(model, X: pd.DataFrame) -> np.ndarray:
    if type(model).__module__.startswith("xgboost"):
        import xgboost as xgb

        return model.predict(xgb.DMatrix(X))
    return model.predict(X, num_iteration=model.best_iteration or None)


def _lgb_log(every: int):
    def cb(env):
        results = [r for r in env.evaluation_result_list or [] if r[0] == "valid"]  # not train (report_to)
        if (env.iteration + 1) % every == 0 and results:
            _, name, value, _ = results[0][:4]
            log.info("round %d: valid %s %.5f", env.iteration + 1, name, value)

    return cb


def _xgb_log(every: int):
    """An xgboost TrainingCallback that logs the validation loss every ``every`` rounds."""
    import xgboost as xgb

    class Log(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            if (epoch + 1) % every == 0:
                log.info("round %d: valid mlogloss %.5f", epoch + 1, evals_log["valid"]["mlogloss"][-1])
            return False

    return Log()
