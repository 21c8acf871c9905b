"""Hand-built features: stable names, exact A/B swap, hand-checked counts, the on-disk cache.

.venv/bin/python -m pytest tests/test_features.py -q
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd
import pytest

from lmsys_arena import bow
from lmsys_arena import features as F
from lmsys_arena.data import load_battles
from lmsys_arena.swap import swap_battles as swap_ab
from lmsys_arena.swap import swap_features

# Changing features on purpose? Update this hash AND bump features.FEATURE_VERSION (trained
# fold models refuse features they were not trained on).


@pytest.fixture(scope="module")
def sample_rows(request) -> pd.DataFrame:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "input" / "sample"
    return load_battles(root / "train.csv").iloc[:300].reset_index(drop=True)


def battles(rows: list[tuple[list[str], list[str], list[str]]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [str(i) for i in range(len(rows))],
            "model_a": "",
            "model_b": "",
            "prompt": [r[0] for r in rows],
            "response_a": [r[1] for r in rows],
            "response_b": [r[2] for r in rows],
            "label": np.zeros(len(rows), dtype=np.int8),
        }
    )


def test_feature_names_are_stable():
    names = F.feature_names()
    assert names == F.FEATURE_NAMES and len(names) == len(set(names)) == 194
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()
    assert digest == EXPECTED_NAMES_SHA1, (
        f"feature names changed (sha1 {digest}): bump FEATURE_VERSION, update the test"
    )
    # every a_ column has its b_ twin; every pair feature is a_/b_ based
    for n in names:
        if n.startswith("a_"):
            assert "b_" + n[2:] in names
        if n.startswith(("diff_", "lr_")):
            assert "a_" + n.split("_", 1)[1] in names


EXPECTED_NAMES_SHA1 = "79dabedf5a5656818193cdef3f72bb7e43caf601"


def test_build_shape_dtype_and_consistency(sample_rows):
    X = F.build_features(sample_rows, use_cache=False, progress=False)
    assert list(X.columns) == F.FEATURE_NAMES and len(X) == len(sample_rows)
    assert (X.dtypes == np.float32).all() and np.isfinite(X.to_numpy()).all()
    np.testing.assert_array_equal(X["diff_chars"], X["a_chars"] - X["b_chars"])
    np.testing.assert_allclose(X["lr_words"], np.log1p(X["a_words"]) - np.log1p(X["b_words"]), rtol=1e-6)
    chars = sample_rows["response_a"].map(lambda t: len("\n\n".join(t))).to_numpy()
    np.testing.assert_array_equal(X["a_chars"].to_numpy(), chars)
    assert (X["turns"].to_numpy() == sample_rows["prompt"].map(len).to_numpy()).all()
    assert X["a_sim_prompt"].between(0, 1).all() and X["sim_ab"].between(0, 1).all()


def test_swap_features_equals_features_of_swapped_battles(sample_rows):
    X = F.build_features(sample_rows, use_cache=False, progress=False)
    Xs = F.build_features(swap_ab(sample_rows), use_cache=False, progress=False)
    got = swap_features(X)
    assert list(got.columns) == list(Xs.columns)
    np.testing.assert_allclose(got.to_numpy(), Xs.to_numpy(), rtol=1e-6, atol=1e-7)
    exact = [c for c in X.columns if "sim" not in c]  # regex counts etc. must match bit for bit
    assert (got[exact].to_numpy() == Xs[exact].to_numpy()).all()
    # swapping twice is the identity; a symmetric feature is untouched
    pd.testing.assert_frame_equal(swap_features(got), X)
    assert (got["sim_ab"] == X["sim_ab"]).all() and not (got["a_chars"] == X["a_chars"]).all()


def test_hand_checked_counts():
    md = (
        "# Title\n\nSome **bold** text with `code` and a link https://x.org.\n\n"
        "- one\n- two\n1. first\n2. second\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```py\nprint(1)\n```\n"
    )
    df = battles(
        [
            (["Why is the sky blue?"], [md], ["I'm sorry, but I cannot help with that."]),
            (["hi", "again"], ["", ""], ["", ""]),
            (["same"], ["Same answer."], ["Same answer."]),
        ]
    )
    X = F.build_features(df, use_cache=False, progress=False)
    a = X.iloc[0]
    assert (a.a_headers, a.a_bold, a.a_bullets, a.a_numbered, a.a_table_rows) == (1, 1, 2, 2, 3)
    assert (a.a_code_fences, a.a_inline_code, a.a_links, a.a_has_code, a.a_has_table) == (2, 1, 1, 1, 1)
    assert a.b_refusal >= 1 and a.b_apology == 1 and a.b_starts_refusal == 1 and a.a_starts_refusal == 0
    assert a.p_questions == 1 and a.turns == 1 and a.identical == 0 and a.n_empty == 0
    e = X.iloc[1]
    assert e.turns == 2 and e.n_empty == 2 and e.a_chars == 2 and e.identical == 1 and e.sim_ab == 0
    s = X.iloc[2]
    assert s.identical == 1 and s.sim_ab == pytest.approx(1.0) and s.diff_chars == 0


def test_cache_hit_miss_and_invalidation(sample_rows, tmp_path, caplog):
    rows = sample_rows.iloc[:60].reset_index(drop=True)
    caplog.set_level(logging.INFO, logger="lmsys_arena.features")

    def build(df):
        caplog.clear()
        X = F.build_features(df, cache_dir=tmp_path, progress=False)
        msg = [r.getMessage() for r in caplog.records if r.getMessage().startswith("features:")][-1]
        return X, msg

    X1, msg = build(rows)
    assert "0 from cache" in msg and "60 computed (miss)" in msg
    X2, msg = build(rows)
    assert "60 from cache" in msg and "0 computed (miss)" in msg
    pd.testing.assert_frame_equal(X1, X2)
    pd.testing.assert_frame_equal(X1, F.build_features(rows, use_cache=False, progress=False))

    # a subset and a reordering are served from the cache, row-aligned
    sub = rows.iloc[[5, 3, 40]].reset_index(drop=True)
    X3, msg = build(sub)
    assert "3 from cache" in msg
    pd.testing.assert_frame_equal(X3, X1.iloc[[5, 3, 40]].reset_index(drop=True))

    # one changed text -> exactly that row is recomputed, with the new value
    changed = rows.copy()
    changed.at[7, "response_b"] = ["A brand new answer."]
    X4, msg = build(changed)
    assert "59 from cache" in msg and "1 computed (miss)" in msg
    assert X4.at[7, "b_chars"] == len("A brand new answer.") and X4.at[8, "b_chars"] == X1.at[8, "b_chars"]


def test_cache_invalidated_when_feature_spec_changes(sample_rows, tmp_path, monkeypatch, caplog):
    rows = sample_rows.iloc[:20].reset_index(drop=True)
    F.build_features(rows, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(F, "FEATURE_VERSION", F.FEATURE_VERSION + "-test")
    caplog.set_level(logging.INFO, logger="lmsys_arena.features")
    F.build_features(rows, cache_dir=tmp_path, progress=False)
    assert any("20 computed (miss)" in r.getMessage() for r in caplog.records)
    assert len(list(tmp_path.iterdir())) == 2  # one folder per feature spec


def test_bag_of_words_cache_and_alignment(sample_rows, tmp_path, caplog):
    rows = sample_rows.iloc[:40].reset_index(drop=True)
    caplog.set_level(logging.INFO, logger="lmsys_arena.bow")
    A, B = bow.build_bow(rows, cache_dir=tmp_path, progress=False)
    assert A.shape == (40, bow.BOW_FEATURES) and B.shape == (40, bow.BOW_FEATURES)
    np.testing.assert_allclose(np.asarray(A.multiply(A).sum(axis=1)).ravel(), 1, rtol=1e-5)  # L2 rows
    order = [39, 0, 17, 17]
    A2, B2 = bow.build_bow(rows.iloc[order].reset_index(drop=True), cache_dir=tmp_path, progress=False)
    assert "4 from cache" in caplog.records[-1].getMessage()
    assert abs(A2 - A[order]).sum() == 0 and abs(B2 - B[order]).sum() == 0
    # swapping A/B swaps the matrices
    As, Bs = bow.build_bow(swap_ab(rows), cache_dir=tmp_path, progress=False)
    assert abs(As - B).sum() == 0 and abs(Bs - A).sum() == 0
