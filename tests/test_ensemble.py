"""Blends: simplex weights, temperature, alignment refusals, partial rows, nested blends, the CLI.

Synthetic runs with known structure (fast); the real-data blend runs in tests/test_kernels.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmsys_arena.cli import main
from lmsys_arena.ensemble import align_oof, combine, ensemble_runs, evaluate_tree, fit_blend, fold_average_logprobs
from lmsys_arena.metrics import log_loss, log_softmax, softmax

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
