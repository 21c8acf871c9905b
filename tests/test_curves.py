"""Training curves (train.report_to, lmsys_arena.curves): an xgb run and a tiny LLM fold with tensorboard, read
back with read_scalars; lightgbm and a refit's train-only curve; none writes nothing; bad values and missing
libraries give errors naming the key.

    .venv/bin/python -m pytest tests/test_curves.py -q
"""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_arena import curves, gbdt
from lmsys_arena.config import load_config
from lmsys_arena.curves import Curves, read_scalars
from lmsys_arena.data import Competition
from lmsys_arena.metrics import log_loss
from lmsys_arena.predictions import PROB_COLS
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.runner import train_run
from lmsys_arena.schema import ConfigError

GBDT_FAST = {"num_boost_round": 20, "early_stopping_rounds": 0, "params.learning_rate": 0.2, "threads": 2}
TB = {"train.report_to": "tensorboard"}


@pytest.fixture(scope="module")
def data(tmp_path_factory, llm_inputs):
    """120 real sample rows, 2 folds (and a models folder for the tiny backbone)."""
    return llm_inputs(tmp_path_factory.mktemp("curvesdata"), 120)


def _check_curve(points, n: int | None = None):
    steps, values = [s for s, _ in points], [v for _, v in points]
    assert steps == sorted(set(steps)), "steps must strictly increase"
    assert all(math.isfinite(v) for v in values)
    if n is not None:
        assert steps == list(range(1, n + 1))
    return steps, values


def test_xgb_run_curves_match_the_fold_loss(data, workdir):
    spec = RunSpec(data=data["data"], folds_file=data["folds"], seed=3)
    cfg = load_config("xgb", {**GBDT_FAST, **TB, "tta": False})
    train_run(cfg, "runs/xgb", spec)
    got = read_scalars("runs/xgb")
    assert list(got) == ["fold0", "fold1"]
    for f in (0, 1):
        assert (workdir / f"runs/xgb/fold{f}/tensorboard").is_dir()
        assert set(got[f"fold{f}"]) == {"train/logloss", "valid/logloss"}
        _, train = _check_curve(got[f"fold{f}"]["train/logloss"], 20)
        _, valid = _check_curve(got[f"fold{f}"]["valid/logloss"], 20)
        assert train[-1] < train[0] and train[-1] < valid[-1]  # the trees fit their own rows best
        # no early stopping, no TTA: the last round's valid loss is the fold's loss
        frame = pd.read_parquet(f"runs/xgb/fold{f}/valid.parquet")
        assert valid[-1] == pytest.approx(log_loss(frame["label"], frame[PROB_COLS].to_numpy()), abs=2e-4)
    # report_to is not part of the model's config: not in config.json, and the run resumes with another value
    saved = json.loads((workdir / "runs/xgb/config.json").read_text())
    assert "train" not in saved
    train_run(load_config("xgb", {**GBDT_FAST, "tta": False}), "runs/xgb", spec)  # folds done: skipped
    assert read_scalars("runs/xgb")["fold0"] == got["fold0"]


def test_lightgbm_early_stopping_and_refit_curves(data, workdir):
    rows = Competition(Path(data["data"])).train()
    tr, va = rows.iloc[:80], rows.iloc[80:].reset_index(drop=True)
    cfg = load_config(
        "lgbm", {**GBDT_FAST, **TB, "num_boost_round": 40, "early_stopping_rounds": 5, "log_every": 5, "tta": False}
    )
    (workdir / "fold0").mkdir()
    gbdt.fit_fold(cfg, tr, va, workdir / "fold0", seed=0)
    best = gbdt.read_json(workdir / "fold0/gbdt.json")["best_iteration"]
    c = read_scalars(workdir)["fold0"]
    steps, valid = _check_curve(c["valid/logloss"])
    assert steps == [s for s, _ in c["train/logloss"]] and steps[0] == 1
    assert min(valid) == pytest.approx(valid[best])  # step best + 1: the kept model's round
    # a refit (no validation rows): the train loss alone, in the model folder
    (workdir / "model").mkdir()
    gbdt.fit_fold(cfg, tr, tr.iloc[:0], workdir / "model", seed=0)
    assert set(read_scalars(workdir)["model"]) == {"train/logloss"}


def test_tiny_llm_fold_curves(data, llm_env, workdir):
    over = {"format.max_len": 128, "train.batch_size": 16, "train.micro_batch": 16, "train.log_every": 1, **TB}
    train_run(load_config("tiny", over), "runs/tiny", llm_env, only_folds=[0])
    got = read_scalars("runs/tiny")
    assert list(got) == ["fold0"]
    c = got["fold0"]
    assert {"train/loss", "train/lr", "train/head_lr", "train/tokens_per_s", "valid/logloss"} <= set(c)
    steps, loss = _check_curve(c["train/loss"])
    assert len(steps) >= 2 and steps[0] == 1
    for tag in ("train/lr", "train/head_lr", "train/tokens_per_s"):
        assert [s for s, _ in c[tag]] == steps and all(v >= 0 for _, v in c[tag])
    assert c["train/lr"][0][1] > 0 and all(v > 0 for _, v in c["train/tokens_per_s"])  # cosine: 0 at the end
    ((step, valid),) = c["valid/logloss"]
    assert step == steps[-1]
    frame = pd.read_parquet("runs/tiny/fold0/valid.parquet")
    assert valid == pytest.approx(log_loss(frame["label"], frame[PROB_COLS].to_numpy()), abs=1e-4)


def test_none_writes_nothing(data, workdir):
    rows = Competition(Path(data["data"])).train()
    cfg = load_config("xgb", {**GBDT_FAST, "num_boost_round": 3})
    assert cfg["train"]["report_to"] == "none"
    (workdir / "fold0").mkdir()
    gbdt.fit_fold(cfg, rows.iloc[:80], rows.iloc[80:].reset_index(drop=True), workdir / "fold0", seed=0)
    assert not (workdir / "fold0/tensorboard").exists() and not (workdir / "fold0/wandb").exists()
    assert read_scalars(workdir) == {} and read_scalars(workdir / "no-such-run") == {}
    with Curves("none", workdir / "fold1") as c:
        c.log({"train/loss": 1.0}, 1)
    assert not (workdir / "fold1").exists()


@pytest.mark.parametrize("model", ["xgb", "tiny"])
def test_bad_value_is_a_config_error(model):
    with pytest.raises(ConfigError, match=r"train\.report_to must be one of 'none', 'tensorboard', 'wandb'"):
        load_config(model, {"train.report_to": "tensorbord"})


def test_resumed_curves_keep_the_last_value_per_step(workdir):
    with Curves("tensorboard", workdir / "fold0") as c:
        for s in (1, 2, 3):
            c.log({"train/loss": 1.0 / s}, s)
    with Curves("tensorboard", workdir / "fold0", fresh=False) as c:  # a resume from the step-1 checkpoint
        for s in (2, 3, 4):
            c.log({"train/loss": 10.0 * s}, s)
    assert len(curves.event_files(workdir / "fold0/tensorboard")) == 2
    assert read_scalars(workdir)["fold0"]["train/loss"] == [(1, 1.0), (2, 20.0), (3, 30.0), (4, 40.0)]
    with Curves("tensorboard", workdir / "fold0") as c:  # fresh: a retrain drops the old curves
        c.log({"train/loss": 5.0}, 1)
    assert read_scalars(workdir)["fold0"] == {"train/loss": [(1, 5.0)]}
    assert Curves("tensorboard", workdir / "fold1", enabled=False).active is False  # other ranks
    assert not (workdir / "fold1").exists()


def test_missing_libraries_name_the_key_and_the_install(workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
    with pytest.raises(ModuleNotFoundError, match=r"train\.report_to: tensorboard .*lmsys-arena\[report\]"):
        Curves("tensorboard", workdir / "fold0")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ModuleNotFoundError, match=r"train\.report_to: wandb .*pip install wandb"):
        curves.require("wandb")


def test_wandb_is_offline_unless_wandb_mode_is_set(workdir, monkeypatch):
    calls, logged = [], []

    class FakeRun:
        def log(self, d, step):
            logged.append((step, d))

        def finish(self):
            logged.append("finish")

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(kw) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with Curves("wandb", workdir / "runs/r/fold0") as c:
        c.log({"train/loss": np.float32(0.5)}, 3)
    assert calls[0]["mode"] == "offline" and calls[0]["dir"] == str(workdir / "runs/r/fold0/wandb")
    assert calls[0]["name"] == "r-fold0" and calls[0]["group"] == "r"
    assert logged == [(3, {"train/loss": 0.5}), "finish"]
    monkeypatch.setenv("WANDB_MODE", "online")
    Curves("wandb", workdir / "runs/r/fold1").close()
    assert calls[1]["mode"] == "online"
    assert read_scalars(workdir / "runs/r") == {}  # wandb writes no event files
