"""Soft targets, row weights, distillation and pseudo-labels (CPU, tiny): the losses, the swap of soft targets,
the loader's soft columns, the GBDT's weighted rows, a pseudo CSV written by an xgb teacher and read back as
train-only rows, and a tiny LLM run distilled from that teacher.

    .venv/bin/python -m pytest -q tests/test_soft_targets.py
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lmsys_arena.config import load_config
from lmsys_arena.data import SOFT_COLS, WEIGHT_COL, DataError, load_battles, load_pseudo, prompt_key
from lmsys_arena.llm.losses import distill_loss, target_loss
from lmsys_arena.llm.training_targets import Targets, sequence_targets
from lmsys_arena.predictions import PROB_COLS
from lmsys_arena.run_inputs import RunSpec

SAMPLE = Path(__file__).resolve().parents[1] / "input" / "sample"
XGB_FAST = {"num_boost_round": 20, "early_stopping_rounds": 10, "params.learning_rate": 0.3, "threads": 2}
TINY = {"format.max_len": 128, "train.batch_size": 32, "train.micro_batch": 32, "train.log_every": 2}


# ---------------------------------------------------------------- the losses


def test_target_loss_is_cross_entropy_same_bits_on_one_hot_rows_and_soft_on_soft_rows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 3, generator=g, requires_grad=True)
    y = torch.randint(0, 3, (37,), generator=g)
    hard = target_loss(x, y)
    assert torch.equal(hard, F.cross_entropy(x, y, reduction="sum"))  # no soft rows: the loss of before
    (g_hard,) = torch.autograd.grad(hard, x)
    onehot = F.one_hot(y, 3).float()
    soft_path = target_loss(x, y, onehot)
    (g_soft,) = torch.autograd.grad(soft_path, x)
    assert torch.equal(g_soft, g_hard)  # one-hot rows through the soft path: the same gradient bits
    assert torch.equal(
        F.cross_entropy(x, onehot, reduction="none"), F.cross_entropy(x, y, reduction="none")
    )  # and the same per-row losses
    # soft rows: -sum_k q_k log p_k, weighted
    q = torch.softmax(torch.randn(37, 3, generator=g), -1)
    w = torch.rand(37, generator=g) + 0.5
    want = -(w[:, None] * q * torch.log_softmax(x, -1)).sum()
    torch.testing.assert_close(target_loss(x, y, q, w), want)
    assert not torch.allclose(target_loss(x, y, q), hard)
    # weights alone (no soft rows): the row-weighted cross-entropy of the labels
    torch.testing.assert_close(target_loss(x, y, None, w), (w * F.cross_entropy(x, y, reduction="none")).sum())


def test_distill_kl_is_zero_when_student_equals_teacher_and_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 3, generator=g)
    ones = torch.ones(16)
    teacher = torch.log_softmax(z, -1)  # the teacher's log-probabilities: a shift of the same logits
    for t in (1.0, 2.0, 0.5):
        assert abs(float(distill_loss(z, teacher, ones, t))) < 1e-5
    other = torch.log_softmax(torch.randn(16, 3, generator=g), -1)
    kl1 = distill_loss(z, other, ones, 1.0)
    assert kl1 > 0.01
    want = (torch.softmax(other, -1) * (torch.log_softmax(other, -1) - torch.log_softmax(z, -1))).sum()
    torch.testing.assert_close(kl1, want)
    t = 3.0  # T^2 * KL at temperature T
    p_t, s_t = torch.log_softmax(other / t, -1), torch.log_softmax(z / t, -1)
    torch.testing.assert_close(distill_loss(z, other, ones, t), t * t * (p_t.exp() * (p_t - s_t)).sum())
    mask = torch.zeros(16)
    mask[:4] = 1.0  # rows without a teacher prediction (weight 0) add nothing
    torch.testing.assert_close(distill_loss(z, other, mask), distill_loss(z[:4], other[:4], ones[:4]))


def test_swap_flips_soft_targets_teacher_and_labels():
    labels = np.array([0, 1, 2, 0])
    soft = np.array([[0.7, 0.2, 0.1], [np.nan] * 3, [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    teacher = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [np.nan] * 3, [0.4, 0.4, 0.2]]))
    weight = np.array([1.0, 1.0, 0.5, 2.0])
    tg = Targets(soft, weight, teacher)
    rows, swapped = np.array([0, 0, 1, 2, 3]), np.array([False, True, True, False, True])
    y, s, w, t, kw = sequence_targets(rows, swapped, labels, tg)
    assert y.tolist() == [0, 1, 0, 2, 1]
    np.testing.assert_allclose(s[0], [0.7, 0.2, 0.1], rtol=1e-6)
    np.testing.assert_allclose(s[1], [0.2, 0.7, 0.1], rtol=1e-6)  # A <-> B, the tie stays
    np.testing.assert_allclose(s[2], [1.0, 0.0, 0.0])  # a hard row (label B) shown B|A: the one-hot of A
    np.testing.assert_allclose(s[4], [0.4, 0.5, 0.1], rtol=1e-6)
    np.testing.assert_allclose(t[1], np.log([0.3, 0.6, 0.1]), rtol=1e-6)
    np.testing.assert_allclose(t[2], np.log([0.7, 0.2, 0.1]), rtol=1e-6)
    assert t[3].tolist() == [0, 0, 0] and kw.tolist() == [1.0, 1.0, 1.0, 0.0, 2.0]  # no teacher: no KL
    np.testing.assert_allclose(w, [1.0, 1.0, 1.0, 0.5, 2.0])
    # hard rows only, weight 1, no teacher: nothing but the labels (the plain cross-entropy path)
    y, s, w, t, kw = sequence_targets(np.array([1]), np.array([True]), labels, Targets(soft, np.ones(4)))
    assert y.tolist() == [0] and s is None and w is None and t is None and kw is None


# ---------------------------------------------------------------- the loader and the GBDT rows


def _sample_rows(sample_dir: Path, n: int) -> pd.DataFrame:
    return pd.read_csv(sample_dir / "extra.csv", dtype=str, keep_default_na=False).head(n)


def test_loader_reads_soft_columns_and_refuses_bad_ones(sample_dir, tmp_path):
    raw = _sample_rows(sample_dir, 4).drop(columns=["winner_model_a", "winner_model_b", "winner_tie"])
    raw["soft_a"] = ["0.2", "0.5", "", "0.3332"]
    raw["soft_b"] = ["0.7", "0.25", "", "0.3334"]
    raw["soft_tie"] = ["0.1", "0.25", "", "0.3333"]
    raw.to_csv(tmp_path / "soft.csv", index=False)
    df = load_battles(tmp_path / "soft.csv")
    assert df["label"].tolist() == [1, 0, -1, 1]  # the argmax; no soft targets: unlabelled
    assert np.isnan(df.loc[2, list(SOFT_COLS)].to_numpy(float)).all()
    np.testing.assert_allclose(df.loc[3, list(SOFT_COLS)].to_numpy(float).sum(), 1.0)  # renormalised
    bad = raw.copy()
    bad.loc[1, "soft_b"] = "0.9"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"row id=.*soft_a/soft_b/soft_tie.*sum to"):
        load_battles(tmp_path / "bad.csv")
    assert len(load_battles(tmp_path / "bad.csv", skip_bad=True)) == 3
    raw.drop(columns=["soft_tie"]).to_csv(tmp_path / "part.csv", index=False)
    with pytest.raises(DataError, match="soft_tie"):
        load_battles(tmp_path / "part.csv")


def test_gbdt_soft_rows_become_weighted_one_class_rows():
    from lmsys_arena.gbdt import soft_rows

    rows = pd.DataFrame({"label": [0, 2, 1]})
    X = pd.DataFrame({"f": [1.0, 2.0, 3.0]})
    y = rows["label"].to_numpy()
    same = soft_rows(X, y, rows)
    assert same[0] is X and same[1] is y and same[2] is None  # one-hot rows of weight 1: untouched
    rows[list(SOFT_COLS)] = [[np.nan] * 3, [0.5, 0.0, 0.5], [0.2, 0.3, 0.5]]
    rows[WEIGHT_COL] = [np.nan, 2.0, 1.0]
    Xe, ye, we = soft_rows(X, y, rows)
    assert Xe["f"].tolist() == [1.0, 2.0, 2.0, 3.0, 3.0, 3.0]
    assert ye.tolist() == [0, 0, 2, 0, 1, 2]
    np.testing.assert_allclose(we, [1.0, 1.0, 1.0, 0.2, 0.3, 0.5], rtol=1e-6)


# ---------------------------------------------------------------- a teacher run, pseudo rows, distillation


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_competition):
    """A project folder: 200 sample train rows in 2 folds, an xgb teacher trained on both folds, and a pool of
    60 unlabelled battles (extra rows, plus 8 that reuse train prompts with other responses)."""
    from lmsys_arena.runner import train_run

    root = tmp_path_factory.mktemp("soft")
    data, folds = small_competition(root, 200)
    old = Path.cwd()
    os.chdir(root)
    try:
        spec = RunSpec(data=str(data), folds_file=str(folds), seed=42)
        train_run(load_config("xgb", XGB_FAST), "runs/xgb", spec)
        train = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
        pool = _sample_rows(SAMPLE, 52).drop(columns=["winner_model_a", "winner_model_b", "winner_tie"])
        reuse = train.head(8)[["id", "model_a", "model_b", "prompt", "response_b", "response_a"]].copy()
        reuse.columns = ["id", "model_a", "model_b", "prompt", "response_a", "response_b"]  # swapped: new texts
        pool = pd.concat([pool, reuse.assign(id="reuse-" + reuse["id"])], ignore_index=True)
        pool.to_csv(root / "pool.csv", index=False)
    finally:
        os.chdir(old)
    return {"root": root, "data": data, "folds": folds, "pool": root / "pool.csv"}


@pytest.fixture
def at(project, monkeypatch, tmp_path):
    monkeypatch.chdir(project["root"])
    monkeypatch.setenv("LMSYS_MODELS_DIR", str(tmp_path / "models"))
    return project


def test_pseudo_csv_round_trip_threshold_and_train_only_rows(at, caplog):
    from lmsys_arena.cli import main
    from lmsys_arena.runner import _read_inputs, fold_split, train_run

    main(["pseudo", "--teacher", "xgb", "--pool", str(at["pool"]), "--out", "pseudo/pool.csv"])
    out = pd.read_csv("pseudo/pool.csv", dtype={"id": str})
    assert list(out.columns) == [
        "id", "model_a", "model_b", "prompt", "response_a", "response_b", *SOFT_COLS, "source",
    ]  # fmt: skip
    assert len(out) == 60 and (out["source"] == "pseudo:xgb").all()
    np.testing.assert_allclose(out[list(SOFT_COLS)].sum(axis=1), 1.0)
    scores = pd.read_parquet("runs/xgb/pseudo/pool.parquet")  # the teacher's scores, by text key
    np.testing.assert_allclose(scores[PROB_COLS].to_numpy(), out[list(SOFT_COLS)].to_numpy())
    # the texts survive the round trip
    pool = load_battles(at["pool"], require_labels=False)
    back = load_pseudo("pseudo/pool.csv", pool.iloc[:0])
    assert back["prompt"].tolist() == pool["prompt"].tolist()
    assert back["response_b"].tolist() == pool["response_b"].tolist()
    assert (back["source"] == "pseudo").all() and (back[WEIGHT_COL] == 1.0).all()
    assert (back["label"].to_numpy() == out[list(SOFT_COLS)].to_numpy().argmax(1)).all()

    conf = out[list(SOFT_COLS)].to_numpy().max(axis=1)
    threshold = float(np.median(conf))
    spec = RunSpec(
        data=str(at["data"]), folds_file=str(at["folds"]), pseudo="pseudo/pool.csv", pseudo_weight=0.5,
        pseudo_min_prob=threshold,
    )  # fmt: skip
    train, fold_of, extra = _read_inputs(spec)
    assert len(extra) == int((conf >= threshold).sum()) and (extra[list(SOFT_COLS)].max(axis=1) >= threshold).all()
    assert (extra[WEIGHT_COL] == 0.5).all()
    keys = prompt_key(extra)
    for f in (0, 1):
        tr, va = fold_split(train, fold_of, extra, keys, f)
        assert not va["source"].eq("pseudo").any() and len(va) == int((fold_of == f).sum())
        pseudo_in = tr[tr["source"] == "pseudo"]
        assert not prompt_key(pseudo_in).isin(set(prompt_key(va))).any()  # no pseudo row shares a valid prompt
    reused = extra["id"].str.startswith("reuse-")
    if reused.any():  # some of them share a train prompt: left out of the fold that validates on it
        leaked = [prompt_key(extra[reused]).isin(set(prompt_key(fold_split(train, fold_of, extra, keys, f)[1])))
                  for f in (0, 1)]  # fmt: skip
        assert any(x.any() for x in leaked)
    # a GBDT run takes them as weighted rows, one per class
    with caplog.at_level(logging.INFO):
        train_run(load_config("xgb", XGB_FAST), "runs/xgb-pseudo", spec, only_folds=[0])
    assert "soft-target rows as" in caplog.text and "pseudo" in caplog.text
    assert len(pd.read_parquet("runs/xgb-pseudo/oof.parquet")) == int((fold_of == 0).sum())


def test_a_teacher_missing_train_rows_is_an_error(at):
    from lmsys_arena.runner import _read_inputs, train_run
    from lmsys_arena.teacher import distill_targets

    spec = RunSpec(data=str(at["data"]), folds_file=str(at["folds"]), seed=42)
    train_run(load_config("xgb", XGB_FAST), "runs/xgb-fold0", spec, only_folds=[0])
    train, fold_of, _ = _read_inputs(spec)
    rows = train[(fold_of == 1).to_numpy()]
    with pytest.raises(ValueError, match=rf"distill teacher 'xgb-fold0': {len(rows)} of {len(rows)} .* not in its OOF"):
        distill_targets("xgb-fold0", rows)
    with pytest.raises(FileNotFoundError, match="teacher run 'nope'"):
        distill_targets("nope", rows)
    lp = distill_targets("xgb", rows)  # a teacher on every fold: its OOF log-probabilities, by id
    oof = pd.read_parquet("runs/xgb/oof.parquet").set_index("id").loc[rows["id"]]
    np.testing.assert_allclose(np.exp(lp), oof[PROB_COLS].to_numpy(), rtol=1e-6)


def test_tiny_llm_with_distill_from_xgb_and_pseudo_rows_trains_and_writes_oof(at, caplog):
    from lmsys_arena.runner import train_run

    if not Path("pseudo/pool.csv").exists():  # written by the round-trip test; alone, write it here
        from lmsys_arena.teacher import write_pseudo

        write_pseudo("xgb", at["pool"], "pseudo/pool.csv")
    spec = RunSpec(data=str(at["data"]), folds_file=str(at["folds"]), seed=42, pseudo="pseudo/pool.csv")
    distill = {"train.distill.teacher": "xgb", "train.distill.weight": 2.0, "train.distill.temperature": 2.0}
    with caplog.at_level(logging.INFO):
        m = train_run(load_config("tiny", {**TINY, **distill}), "runs/tiny-kd", spec, only_folds=[0])
    oof = pd.read_parquet("runs/tiny-kd/oof.parquet")
    assert set(oof["fold"]) == {0} and np.isfinite(oof[PROB_COLS].to_numpy()).all() and 0 < m["oof_logloss"] < 2
    assert "distill from xgb: KL on" in caplog.text and "rows with soft targets" in caplog.text
    line = next(r.getMessage() for r in caplog.records if "distill from xgb" in r.getMessage())
    n_other = int(line.split(" train rows (its OOF) and ")[1].split(" of ")[0])
    assert n_other > 0  # pseudo rows: the teacher's make pseudo scores, matched by their texts
    plain = train_run(load_config("tiny", TINY), "runs/tiny-plain", spec, only_folds=[0])
    assert plain["oof_logloss"] != m["oof_logloss"]  # the KL term changed the training


def test_one_hot_soft_rows_train_the_same_bits_as_labels(at, monkeypatch, caplog):
    """Every row carrying its label's one-hot as soft targets (and weight 1) trains to the same OOF bits."""
    from lmsys_arena import data as data_mod
    from lmsys_arena.runner import train_run

    spec = RunSpec(data=str(at["data"]), folds_file=str(at["folds"]), seed=42)
    c = load_config("tiny", {**TINY, "train.batch_size": 16, "train.micro_batch": 8})
    ref = train_run(c, "runs/tiny-hard", spec, only_folds=[0])
    real = data_mod.Competition.train

    def with_soft(self, skip_bad=False):
        df = real(self, skip_bad)
        df[list(SOFT_COLS)] = np.eye(3)[df["label"].to_numpy()]
        df[WEIGHT_COL] = 1.0
        return df

    monkeypatch.setattr(data_mod.Competition, "train", with_soft)
    with caplog.at_level(logging.INFO):
        got = train_run(c, "runs/tiny-onehot", spec, only_folds=[0])
    assert "fold0 train: 100 rows with soft targets" in caplog.text  # the soft-target path, in every micro-batch
    a = pd.read_parquet("runs/tiny-hard/oof.parquet")[PROB_COLS].to_numpy()
    b = pd.read_parquet("runs/tiny-onehot/oof.parquet")[PROB_COLS].to_numpy()
    assert np.array_equal(a, b) and ref["oof_logloss"] == got["oof_logloss"]


def test_cli_refuses_pseudo_options_without_pseudo(at):
    from lmsys_arena.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(at["data"]), "--model", "xgb", "--pseudo-weight", "0.5"])
    assert e.value.code == 2


def test_a_distill_teacher_named_by_model_is_the_run_of_that_model_on_the_same_data(tmp_path):
    """``train.distill.teacher: xgb`` (the distill config) finds ``make train MODEL=xgb``'s run on any data:
    ``runs/xgb`` if there is one, else ``runs/xgb-<data folder>``; the resolved name is what the run records."""
    from lmsys_arena.teacher import resolve_distill_teacher

    root = tmp_path / "runs"

    def make_run(name):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text("{}")

    cfg = load_config("tiny", {"train.distill.teacher": "xgb"})
    assert resolve_distill_teacher(cfg, tmp_path / "mydata", root) is cfg  # no such run: preflight names it
    make_run("xgb-mydata")
    got = resolve_distill_teacher(cfg, tmp_path / "mydata", root)
    assert got["train"]["distill"]["teacher"] == "xgb-mydata" and cfg["train"]["distill"]["teacher"] == "xgb"
    assert {k: v for k, v in got["train"].items() if k != "distill"} == {
        k: v for k, v in cfg["train"].items() if k != "distill"
    }
    make_run("xgb")  # a run of exactly that name wins
    assert resolve_distill_teacher(cfg, tmp_path / "mydata", root)["train"]["distill"]["teacher"] == "xgb"
    plain = load_config("tiny", {})
    assert resolve_distill_teacher(plain, tmp_path / "mydata", root) is plain
