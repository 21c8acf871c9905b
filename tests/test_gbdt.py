"""Feature GBDT family: 2-fold train -> infer on real sample rows, for xgboost and lightgbm.

.venv/bin/python -m pytest tests/test_gbdt.py -q
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from lmsys_arena import gbdt
from lmsys_arena.config import load_config
from lmsys_arena.data import Competition
from lmsys_arena.folds import make_folds, write_folds
from lmsys_arena.predictions import PROB_COLS
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.runner import infer_run, train_run
from lmsys_arena.runs import Run
from lmsys_arena.swap import swap_battles as swap_ab
from lmsys_arena.swap import swap_labels

FAST = {"num_boost_round": 25, "early_stopping_rounds": 10, "params.learning_rate": 0.2, "threads": 2}


@pytest.fixture
def small_data(sample_dir, workdir):
    """A competition folder with 300 real sample rows (all ties kept) and the official test file."""
    data = workdir / "small"
    data.mkdir()
    raw = pd.read_csv(sample_dir / "train.csv", dtype=str, keep_default_na=False)
    ties = raw[raw["winner_tie"] == "1"]
    rows = pd.concat([ties, raw[raw["winner_tie"] != "1"].head(300 - len(ties))]).sample(frac=1, random_state=0)
    rows.to_csv(data / "train.csv", index=False)
    for name in ("test.csv", "sample_submission.csv"):
        shutil.copy(sample_dir / name, data / name)
    write_folds(make_folds(Competition(data).train(), k=2, seed=0), workdir / "folds" / "small.csv")
    return data


@pytest.mark.parametrize("model", ["xgb", "lgbm"])
def test_two_fold_train_infer(model, small_data, sample_dir, workdir):
    cfg = load_config(model, FAST)
    spec = RunSpec(data=str(small_data), extra=str(sample_dir / "extra.csv"), seed=7)
    run = workdir / "runs" / model
    metrics = train_run(cfg, run, spec)

    assert metrics["rows"] == 300 and set(metrics["folds"]) == {0, 1}
    assert 0.3 < metrics["oof_logloss"] < math.log(3) + 0.1
    model_file = "model.json" if cfg["backend"] == "xgboost" else "model.txt"
    for f in (0, 1):
        assert (run / f"fold{f}" / model_file).exists() and (run / f"fold{f}" / "gbdt.json").exists()

    # the saved fold model reproduces the validation predictions made at training time
    cfg_saved, _ = Run(run).model_config()
    train = Competition(small_data).train()
    valid = pd.read_parquet(run / "fold0" / "valid.parquet")
    rows = train.set_index("id").loc[valid["id"]].reset_index()
    again = gbdt.predict(cfg_saved, rows, run / "fold0")
    np.testing.assert_allclose(again, valid[["logit_a", "logit_b", "logit_tie"]].to_numpy(), rtol=1e-5, atol=1e-6)

    # swap-TTA makes predictions exactly symmetric: p(swap(x)) == p(x) with A and B exchanged
    swapped = gbdt.predict(cfg_saved, swap_ab(rows), run / "fold0")
    np.testing.assert_allclose(np.exp(swapped), np.exp(again)[:, [1, 0, 2]], atol=1e-6)

    sub = infer_run(run)
    assert len(sub) == 3 and np.allclose(sub[PROB_COLS].sum(axis=1), 1)
    assert (workdir / "submissions" / f"{model}.csv").exists()


def test_swap_augment_and_no_tta(small_data, workdir):
    """Without augmentation or TTA the model is not forced to be symmetric (sanity of the switches)."""
    cfg = load_config("xgb", {**FAST, "swap_augment": False, "tta": False})
    train = Competition(small_data).train()
    fold_dir = workdir / "fold"
    fold_dir.mkdir()
    logits = gbdt.fit_fold(cfg, train.iloc[:200], train.iloc[200:].reset_index(drop=True), fold_dir, seed=0)
    assert logits.shape == (100, 3) and np.isfinite(logits).all()
    assert gbdt.read_json(fold_dir / "gbdt.json")["train_rows"] == 200
    cfg_aug = {**cfg, "swap_augment": True}
    gbdt.fit_fold(cfg_aug, train.iloc[:200], train.iloc[200:].reset_index(drop=True), fold_dir, seed=0)
    assert gbdt.read_json(fold_dir / "gbdt.json")["train_rows"] == 400


def test_swap_labels():
    y = np.array([0, 1, 2, 0], dtype=np.int32)
    assert swap_labels(y).tolist() == [1, 0, 2, 1]


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be one of 'xgboost', 'lightgbm', got 'catboost'"):
        load_config("xgb", {"backend": "catboost"})
