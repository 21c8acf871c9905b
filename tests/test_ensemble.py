"""Blends: simplex weights, temperature, alignment refusals, partial rows, nested blends, the CLI, and held-out
labels (`make score LABELS=...`, `make ensemble FIT_LABELS=...`: lmsys_arena.holdout).

Synthetic runs with known structure (fast); the real-data blend runs in tests/test_kernels.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmsys_arena.cells import DataError
from lmsys_arena.cli import main
from lmsys_arena.ensemble import align_oof, combine, ensemble_runs, evaluate_tree, fit_blend, fold_average_logprobs
from lmsys_arena.holdout import read_labels, score_test
from lmsys_arena.metrics import log_loss, log_softmax, softmax
from lmsys_arena.runs import Run

N, N_TEST = 600, 40


def _truth(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3)) * 1.5
    y = np.array([rng.choice(3, p=p) for p in softmax(z)])
    return z, y


def _write_run(root, name, ids, folds, labels, logits, test_ids, test_logits):
    d = root / "runs" / name
    d.mkdir(parents=True)
    oof = pd.DataFrame({"id": ids, "fold": folds, "label": labels})
    oof[["p_a", "p_b", "p_tie"]] = softmax(logits)
    oof[["logit_a", "logit_b", "logit_tie"]] = logits
    oof.to_parquet(d / "oof.parquet", index=False)
    test = pd.DataFrame({"id": test_ids})
    test[["p_a", "p_b", "p_tie"]] = softmax(test_logits)
    test[["logit_a", "logit_b", "logit_tie"]] = test_logits
    test.to_parquet(d / "test.parquet", index=False)
    (d / "config.json").write_text(json.dumps({"family": "gbdt", "name": name}))


@pytest.fixture
def two_runs(workdir):
    """Two noisy views of the same truth: each alone is worse than their blend."""
    z, y = _truth(N, 0)
    zt, _ = _truth(N_TEST, 1)
    ids = [f"r{i:04d}" for i in range(N)]
    test_ids = [str(1000 + i) for i in range(N_TEST)]
    folds = np.arange(N) % 3
    rng = np.random.default_rng(2)
    for name, noise in (("m1", 1.0), ("m2", 1.3)):
        _write_run(
            workdir,
            name,
            ids,
            folds,
            y,
            z + rng.normal(size=z.shape) * noise,
            test_ids,
            zt + rng.normal(size=zt.shape) * noise,
        )
    return workdir, ids, y


def test_blend_beats_members_and_is_a_run(two_runs):
    root, ids, y = two_runs
    m = ensemble_runs(["m1", "m2"], "blend", runs_root=root / "runs", submissions=root / "submissions")
    w = np.array(list(m["weights"].values()))
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-9
    assert m["oof_logloss"] < m["best_member_logloss"] - 1e-3
    assert 0.2 <= m["temperature"] <= 5
    run = root / "runs" / "blend"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["family"] == "blend" and cfg["members"] == ["m1", "m2"] and cfg["weights"] == list(w)
    oof = pd.read_parquet(run / "oof.parquet")
    assert list(oof["id"]) == ids and np.allclose(oof[["p_a", "p_b", "p_tie"]].sum(axis=1), 1)
    assert (
        abs(
            json.loads((run / "metrics.json").read_text())["oof_logloss"]
            - log_loss(y, oof[["p_a", "p_b", "p_tie"]].to_numpy())
        )
        < 1e-12
    )
    sub = pd.read_csv(root / "submissions" / "blend.csv", dtype={"id": str})
    assert list(sub.columns) == ["id", "winner_model_a", "winner_model_b", "winner_tie"] and len(sub) == N_TEST
    # the same weights applied to the members' test predictions
    t1, t2 = (pd.read_parquet(root / "runs" / r / "test.parquet") for r in ("m1", "m2"))
    lp = [log_softmax(t[["logit_a", "logit_b", "logit_tie"]].to_numpy()) for t in (t1, t2)]
    expect = softmax(m["temperature"] * (w[0] * lp[0] + w[1] * lp[1]))
    assert np.allclose(sub[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy(), expect, atol=1e-12)
    # a blend is blendable again (nested), and scoring works on it
    m2 = ensemble_runs(["blend", "m2"], "blend2", runs_root=root / "runs", submissions=root / "submissions")
    assert m2["oof_logloss"] <= m["oof_logloss"] + 1e-6


def test_fit_recovers_weights_and_temperature():
    z, y = _truth(4000, 3)
    good, bad = log_softmax(z), log_softmax(np.random.default_rng(4).normal(size=z.shape))
    w, t = fit_blend([good / 2.0, bad], y)  # a member that is too soft by 2x, and pure noise
    assert w[0] > 0.95 and abs(t - 2.0) < 0.25
    w, t = fit_blend([good, bad], y, temperature=False)
    assert t == 1.0 and w[0] > 0.95
    w, _ = fit_blend([log_softmax(z), log_softmax(z * 0.9)], y, space="prob")
    assert abs(w.sum() - 1) < 1e-9 and np.all(w >= 0)


def test_combine_drops_missing_members_per_row():
    rng = np.random.default_rng(5)
    a, b = log_softmax(rng.normal(size=(5, 3))), log_softmax(rng.normal(size=(5, 3)))
    full = combine([a, b], [0.3, 0.7], 1.2)
    assert np.allclose(full, log_softmax(1.2 * (0.3 * a + 0.7 * b)))
    b_partial = b.copy()
    b_partial[[1, 3]] = np.nan  # the LLM did not reach rows 1 and 3
    out = combine([a, b_partial], [0.3, 0.7], 1.2)
    assert np.allclose(out[[0, 2, 4]], full[[0, 2, 4]])
    assert np.allclose(out[[1, 3]], log_softmax(1.2 * a[[1, 3]]))  # GBDT alone there
    both = combine([np.full_like(a, np.nan), b_partial], [0.5, 0.5])
    assert np.isnan(both[[1, 3]]).all() and np.isfinite(both[[0, 2, 4]]).all()
    # nested tree
    runs = {
        "top": {"family": "blend", "members": ["x", "y"], "weights": [0.3, 0.7], "temperature": 1.2},
        "x": {"family": "gbdt"},
        "y": {"family": "llm"},
    }
    assert np.allclose(evaluate_tree("top", runs, {"x": a, "y": b_partial}), out, equal_nan=True)


def test_fold_average_ignores_unfinished_folds():
    rng = np.random.default_rng(6)
    f0, f1 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    f1[2:] = np.nan
    out = fold_average_logprobs([f0, f1])
    assert np.allclose(np.exp(out[:2]), (softmax(f0[:2]) + softmax(f1[:2])) / 2)
    assert np.allclose(np.exp(out[2:]), softmax(f0[2:]))
    assert np.isnan(fold_average_logprobs([f1])[2:]).all()


def test_refuses_different_rows_unless_common_rows(two_runs):
    root, ids, y = two_runs
    d = root / "runs" / "m2"
    oof = pd.read_parquet(d / "oof.parquet")
    oof[oof["fold"] == 0].to_parquet(d / "oof.parquet", index=False)  # an LLM run trained on fold 0 only
    with pytest.raises(ValueError, match="different OOF rows.*--common-rows"):
        ensemble_runs(["m1", "m2"], "blend", runs_root=root / "runs", submissions=root / "submissions")
    m = ensemble_runs(
        ["m1", "m2"], "blend", common_rows=True, runs_root=root / "runs", submissions=root / "submissions"
    )
    assert m["rows"] == int((np.arange(N) % 3 == 0).sum()) and set(m["folds"]) == {0}
    cfg = json.loads((root / "runs" / "blend" / "config.json").read_text())
    assert cfg["common_rows"] is True and cfg["extra"]["member_oof_rows"] == {"m1": N, "m2": m["rows"]}


def test_refuses_different_folds_and_test_ids(two_runs):
    root, ids, y = two_runs
    d = root / "runs" / "m2"
    oof = pd.read_parquet(d / "oof.parquet")
    oof.loc[0, "fold"] = (oof.loc[0, "fold"] + 1) % 3
    oof.to_parquet(d / "oof.parquet", index=False)
    with pytest.raises(ValueError, match=r"disagree on fold for id='r0000'"):
        ensemble_runs(["m1", "m2"], "blend", runs_root=root / "runs", common_rows=True)
    oof.loc[0, "fold"] = (oof.loc[0, "fold"] - 1) % 3
    oof.to_parquet(d / "oof.parquet", index=False)
    test = pd.read_parquet(d / "test.parquet")
    test.iloc[1:].to_parquet(d / "test.parquet", index=False)
    with pytest.raises(ValueError, match="test predictions of 'm1' and 'm2' cover different ids"):
        ensemble_runs(["m1", "m2"], "blend", runs_root=root / "runs")
    (d / "test.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="make infer RUN=m2"):
        ensemble_runs(["m1", "m2"], "blend", runs_root=root / "runs")


def test_align_keeps_first_member_order():
    a = pd.DataFrame({"id": ["3", "1", "2"], "fold": [0, 1, 0], "label": [0, 1, 2]})
    b = a.iloc[[2, 0, 1]].reset_index(drop=True)
    assert list(align_oof({"a": a, "b": b})["id"]) == ["3", "1", "2"]


def test_cli_prints_table_and_errors_cleanly(two_runs, capsys):
    main(["ensemble", "--runs", "m1", "m2", "--name", "b", "--space", "prob"])
    out = capsys.readouterr().out
    assert "m1" in out and "m2" in out and "b (T=" in out and "vs best member" in out
    with pytest.raises(SystemExit) as e:
        main(["ensemble", "--runs", "m1", "nope", "--name", "b2"])
    assert e.value.code != 0


def test_oof_only_blend_from_fold_files(two_runs):
    """An LLM run with fold 0 done and no test predictions yet: its fold0/valid.parquet is enough to fit."""
    root, ids, y = two_runs
    d = root / "runs" / "m2"
    oof = pd.read_parquet(d / "oof.parquet")
    (d / "fold0").mkdir()
    oof[oof["fold"] == 0].to_parquet(d / "fold0" / "valid.parquet", index=False)
    (d / "oof.parquet").unlink()
    (d / "test.parquet").unlink()
    m = ensemble_runs(
        ["m1", "m2"], "b0", common_rows=True, oof_only=True, runs_root=root / "runs", submissions=root / "submissions"
    )
    assert m["rows"] == int((np.arange(N) % 3 == 0).sum()) and m["oof_logloss"] < m["best_member_logloss"]
    run = root / "runs" / "b0"
    assert (run / "oof.parquet").exists() and not (run / "test.parquet").exists()
    assert json.loads((run / "config.json").read_text())["extra"]["oof_only"] is True
    assert not (root / "submissions" / "b0.csv").exists()


HO_TRAIN, HO_TEST = 600, 400  # held-out-labels tests


@pytest.fixture
def leaky_and_honest(workdir):
    """``leaky``: OOF close to the truth, test predictions noisy; ``honest``: equally noisy on both. Held-out
    labels for the test rows."""
    z, y = _truth(HO_TRAIN, 0)
    zt, yt = _truth(HO_TEST, 1)
    ids, test_ids = [f"r{i:04d}" for i in range(HO_TRAIN)], [str(1000 + i) for i in range(HO_TEST)]
    rng = np.random.default_rng(3)
    noisy = lambda a, s: a + rng.normal(size=a.shape) * s  # noqa: E731
    _write_run(workdir, "leaky", ids, np.arange(HO_TRAIN) % 3, y, noisy(z, 0.3), test_ids, noisy(zt, 2.0))
    _write_run(workdir, "honest", ids, np.arange(HO_TRAIN) % 3, y, noisy(z, 1.0), test_ids, noisy(zt, 1.0))
    pd.DataFrame({"id": test_ids, "label": yt}).to_csv(workdir / "labels.csv", index=False)
    return workdir, test_ids, yt


def test_labels_file_takes_labels_or_winner_columns_and_names_bad_rows(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("id,label\n007,0\n8,2\n")
    assert read_labels(p).to_dict() == {"007": 0, "8": 2}  # ids stay as written
    p.write_text("id,winner_model_a,winner_model_b,winner_tie\n1,0,1,0\n2,0,0,1\n")
    assert read_labels(p).to_dict() == {"1": 1, "2": 2}
    p.write_text("id,label\n1,0\n2,3\n")
    with pytest.raises(DataError, match=r"labels.csv: row 3 \(id '2'\), column label: not a label"):
        read_labels(p)
    p.write_text("id,winner_model_a,winner_model_b,winner_tie\n1,1,1,0\n")
    with pytest.raises(DataError, match=r"row 2 \(id '1'\), column winner_model_a,winner_model_b,winner_tie"):
        read_labels(p)
    p.write_text("id,label\n1,0\n1,1\n")
    with pytest.raises(DataError, match=r"row 3, column id: duplicate id '1'"):
        read_labels(p)
    p.write_text("id,winner\n1,a\n")
    with pytest.raises(DataError, match="needs a 'label' column"):
        read_labels(p)
    with pytest.raises(FileNotFoundError, match="nope.csv: not found"):
        read_labels(tmp_path / "nope.csv")


def test_score_with_labels_scores_test_predictions_and_keeps_oof_metrics(leaky_and_honest, capsys):
    root, test_ids, yt = leaky_and_honest
    run = Run(root / "runs" / "honest")
    run.write_metrics({"oof_logloss": 0.9})
    got = score_test(run, root / "labels.csv")
    test = pd.read_parquet(run.test_file)
    assert got["rows"] == HO_TEST and got["logloss"] == pytest.approx(log_loss(yt, test[["p_a", "p_b", "p_tie"]]))
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["oof_logloss"] == 0.9 and metrics["holdout"]["logloss"] == got["logloss"]
    main(["score", "--run", "honest", "--labels", "labels.csv"])
    assert f"honest: held-out log loss {got['logloss']:.5f}" in capsys.readouterr().out
    pd.DataFrame({"id": ["elsewhere"], "label": [0]}).to_csv(root / "other.csv", index=False)
    with pytest.raises(ValueError, match=r"run honest: 1 of 1 labelled ids have no test prediction"):
        score_test(run, root / "other.csv")


def test_blend_weights_fit_on_held_out_labels_beat_oof_weights_there(leaky_and_honest, capsys):
    root, test_ids, yt = leaky_and_honest
    kw = {"runs_root": root / "runs", "submissions": root / "submissions"}
    on_oof = ensemble_runs(["leaky", "honest"], "blend-oof", **kw)
    on_labels = ensemble_runs(["leaky", "honest"], "blend-ho", fit_labels=root / "labels.csv", **kw)
    assert on_oof["weights"]["leaky"] > 0.5 > on_labels["weights"]["leaky"]  # the OOF fit trusts the leaky run
    test_loss = {
        n: log_loss(yt, pd.read_parquet(root / "runs" / n / "test.parquet")[["p_a", "p_b", "p_tie"]])
        for n in ("blend-oof", "blend-ho")
    }
    assert test_loss["blend-ho"] < test_loss["blend-oof"] - 0.01
    ho = on_labels["holdout"]
    assert ho["rows"] == HO_TEST and ho["logloss"] == pytest.approx(test_loss["blend-ho"])
    assert set(ho["members"]) == {"leaky", "honest"}
    cfg = json.loads((root / "runs" / "blend-ho" / "config.json").read_text())
    assert cfg["extra"]["fit_labels"] == str(root / "labels.csv") and cfg["weights"][0] < 0.5
    oof = pd.read_parquet(root / "runs" / "blend-ho" / "oof.parquet")  # the OOF blend, with those weights
    assert len(oof) == HO_TRAIN and np.allclose(oof[["p_a", "p_b", "p_tie"]].sum(axis=1), 1)
    with pytest.raises(ValueError, match="drop --oof-only"):
        ensemble_runs(["leaky", "honest"], "b", fit_labels=root / "labels.csv", oof_only=True, **kw)
    main(["ensemble", "--runs", "leaky", "honest", "--name", "cli-ho", "--fit-labels", "labels.csv"])
    assert f"weights fit on {HO_TEST} held-out rows (labels.csv)" in capsys.readouterr().out
