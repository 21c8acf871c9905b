"""Kaggle log loss (vs sklearn and by hand) and the submission validator's checks.

.venv/bin/python -m pytest tests/test_metrics.py
"""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from lmsys_arena.metrics import (
    EPS,
    SubmissionError,
    accuracy,
    log_loss,
    log_softmax,
    order_consistency,
    read_submission,
    softmax,
    validate_submission,
)
from lmsys_arena.swap import unswap_average

COLS = ["winner_model_a", "winner_model_b", "winner_tie"]


def sklearn_ll(y, p):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return sk_log_loss(y, y_proba=p, labels=[0, 1, 2])
        except TypeError:  # sklearn < 1.9 names it y_pred
            return sk_log_loss(y, p, labels=[0, 1, 2])


def kaggle_reference(y, p):
    """sklearn <= 1.4's log_loss(eps='auto'), which Kaggle scored with: clip, renormalise, mean -log."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    p = p / p.sum(axis=1)[:, None]
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def test_equals_sklearn_on_probabilities():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 0.3], size=2000)
    p[:50, 0] = 0.0  # exact zeros (clipped at eps)
    p[:50] /= p[:50].sum(axis=1, keepdims=True)
    y = rng.integers(0, 3, size=2000)
    assert log_loss(y, p) == pytest.approx(sklearn_ll(y, p), rel=1e-12)
    assert log_loss(y, p) == pytest.approx(kaggle_reference(y, p), rel=1e-15)


def test_unnormalised_rows_match_kaggle_reference():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, size=(500, 3))  # rows do not sum to 1
    y = rng.integers(0, 3, size=500)
    assert log_loss(y, p) == pytest.approx(kaggle_reference(y, p), rel=1e-15)
    assert log_loss(y, p * 0.37) == pytest.approx(log_loss(y, p), rel=1e-12)  # scale-free below 1


def test_hand_computed():
    y = np.array([0, 2, 1, 0])
    p = np.array(
        [
            [0.2, 0.2, 0.1],  # renormalised: 0.4
            [0.0, 0.0, 0.0],  # all zero: clipped to eps each -> uniform 1/3
            [0.5, 0.0, 0.5],  # true class 0: eps / (1 + eps)
            [0.7, 0.2, 0.1],
        ]
    )
    expect = -(math.log(0.4) + math.log(1 / 3) + math.log(EPS / (1 + EPS)) + math.log(0.7)) / 4
    assert log_loss(y, p) == pytest.approx(expect, rel=1e-12)
    assert log_loss([2], [[1 / 3, 1 / 3, 1 / 3]]) == pytest.approx(math.log(3), rel=1e-15)
    assert log_loss([0], [[1.0, 0.0, 0.0]]) == pytest.approx(-math.log((1 - EPS) / (1 - EPS + 2 * EPS)), abs=1e-18)


def test_log_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        log_loss([0, 1], [[1, 0, 0]])
    with pytest.raises(ValueError, match="NaN"):
        log_loss([0], [[np.nan, 0.5, 0.5]])
    with pytest.raises(ValueError, match="labels"):
        log_loss([3], [[0.2, 0.3, 0.5]])


def test_accuracy_softmax_unswap():
    assert accuracy([0, 1, 2], [[0.5, 0.2, 0.3], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8]]) == pytest.approx(2 / 3)
    z = np.array([[1000.0, 0.0, -5.0], [1.0, 2.0, 3.0]])
    assert np.allclose(softmax(z).sum(axis=1), 1) and np.isfinite(log_softmax(z)).all()
    assert np.allclose(np.exp(log_softmax(z)), softmax(z))
    logits = np.log([[0.6, 0.3, 0.1]])
    swapped = np.log([[0.2, 0.7, 0.1]])  # seen as (B wins, A wins, tie): A wins 0.7
    assert np.allclose(np.exp(unswap_average(logits, swapped)), [[0.65, 0.25, 0.1]])


def test_order_consistency():
    rng = np.random.default_rng(0)
    ab = rng.normal(size=(200, 3))
    follows = ab[:, [1, 0, 2]] + 0.01 * rng.normal(size=(200, 3))  # B|A sees the same battle mirrored
    ignores = ab.copy()  # same a - b margin whichever response comes first (a collapsed text model)
    assert order_consistency(ab, follows) > 0.99
    assert order_consistency(ab, ignores) < -0.99
    assert order_consistency(np.zeros((5, 3)), ab[:5]) == 0.0


# ---- validator ------------------------------------------------------------------------------------

IDS = ["007", "136060", "abc"]


def good_sub():
    return pd.DataFrame(
        {"id": IDS, COLS[0]: [0.2, 0.5, 1 / 3], COLS[1]: [0.3, 0.25, 1 / 3], COLS[2]: [0.5, 0.25, 1 / 3]}
    )


def test_validator_accepts_good():
    validate_submission(good_sub(), IDS)
    sub = good_sub()
    sub.loc[0, COLS[0]] += 5e-7  # within 1e-6
    validate_submission(sub.iloc[[2, 0, 1]], IDS)  # any row order


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s[["id", COLS[1], COLS[0], COLS[2]]], "columns"),
        (lambda s: s.drop(columns=[COLS[2]]), "columns"),
        (lambda s: s.rename(columns={"id": "ID"}), "columns"),
        (lambda s: s.iloc[:2], r"1 missing \(e.g. \['abc'\]\)"),
        (lambda s: s.assign(id=["7", "136060", "abc"]), r"1 missing \(e.g. \['007'\]\), 1 unexpected"),
        (lambda s: s.assign(id=["007", "007", "abc"]), "duplicate id '007'"),
        (
            lambda s: s.assign(**{COLS[1]: [0.3, np.nan, 1 / 3]}),
            r"row id='136060' column 'winner_model_b' is not a finite",
        ),
        (lambda s: s.assign(**{COLS[2]: [0.5, 0.25, np.inf]}), r"row id='abc' column 'winner_tie' is not a finite"),
        (
            lambda s: s.assign(**{COLS[0]: ["0.2", "x", "0.3"]}),
            r"row id='136060' column 'winner_model_a' is not a finite",
        ),
        (
            lambda s: s.assign(**{COLS[0]: [-0.1, 0.5, 1 / 3], COLS[2]: [0.8, 0.25, 1 / 3]}),
            "row id='007' column 'winner_model_a' is negative",
        ),
        (lambda s: s.assign(**{COLS[2]: [0.5, 0.25 + 2e-6, 1 / 3]}), r"row id='136060': probabilities sum to 1.000002"),
    ],
)
def test_validator_rejects(mutate, match):
    with pytest.raises(SubmissionError, match=match):
        validate_submission(mutate(good_sub()), IDS, name="sub.csv")


def test_validator_rejects_nan_ids_and_empty():
    sub = good_sub().assign(id=[np.nan, "136060", "abc"])  # what pd.read_csv makes of the id 'NA'
    with pytest.raises(SubmissionError, match=r"sub.csv: row 0 .*has no id \(NaN; 1 such rows\).*read_submission"):
        validate_submission(sub, ["NA", "136060", "abc"], name="sub.csv")
    with pytest.raises(SubmissionError, match=r"sub.csv: no rows \(only a header\)"):
        validate_submission(good_sub().iloc[:0], IDS, name="sub.csv")
    with pytest.raises(ValueError, match="test ids contain a missing value"):
        validate_submission(good_sub(), ["007", np.nan, "abc"])


# ---- read_submission ------------------------------------------------------------------------------

HEADER = "id,winner_model_a,winner_model_b,winner_tie\n"


def test_read_submission_keeps_na_like_ids(tmp_path):
    """infer writes an id 'NA' as NA; check must read it back as the id, not a missing value."""
    from lmsys_arena.predictions import PROB_COLS
    from lmsys_arena.runner import write_submission

    ids = ["NA", "null", "nan", "007", "N/A", "#N/A"]
    frame = pd.DataFrame({"id": ids})
    frame[PROB_COLS] = [[0.2, 0.3, 0.5]] * len(ids)
    path = tmp_path / "sub.csv"
    write_submission(frame, path, ids)
    sub = read_submission(path)
    assert sub["id"].tolist() == ids
    assert [sub[c].dtype for c in COLS] == [np.float64] * 3
    validate_submission(sub, ids, name=str(path))
    with pytest.raises(SubmissionError, match="has no id"):  # the old way of reading it
        validate_submission(pd.read_csv(path, dtype={"id": str}), ids, name=str(path))


def test_read_submission_odd_but_valid(tmp_path):
    path = tmp_path / "sub.csv"
    rows = "\ufeff" + HEADER.replace("\n", "\r\n") + "007, 0.2 ,0.3,0.5\r\n\r\n136060,1e-1,0.4,0.5\r\n"
    path.write_text(rows, newline="")  # BOM, CRLF, a blank line, spaces around a number
    sub = read_submission(path)
    assert sub["id"].tolist() == ["007", "136060"]
    assert sub[COLS[0]].tolist() == [0.2, 0.1]
    validate_submission(sub, ["007", "136060"])


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", r"empty file \(0 bytes\)"),
        (b"\n\n", r"no header \(blank file\)"),
        (b"PK\x03\x04\x00\x00binary", r"binary file \(NUL bytes\)"),
        (HEADER.encode() + b"caf\xe9,0.2,0.3,0.5\n", r"not UTF-8 text \(byte 47: b'\\xe9'\)"),
        (HEADER.encode() + b'"NA,0.2,0.3,0.5\n', r"not a readable CSV: line 2: unexpected end of data"),
        (HEADER.encode() + b'"NA"x,0.2,0.3,0.5\n', r"not a readable CSV: line 2"),
        (HEADER.encode() + b"NA,0.2,0.3,0.5,9\n", r"line 2 has 5 fields, the header .* has 4"),
        (HEADER.encode() + b"NA,0.2,0.3,0.5\n007,0.5,0.5\n", r"line 3 has 3 fields"),
        (
            b"id,winner_model_a,winner_model_a,winner_tie\nNA,1,0,0\n",
            r"duplicate column name\(s\) \['winner_model_a'\]",
        ),
    ],
)
def test_read_submission_rejects_unreadable(tmp_path, content, match):
    path = tmp_path / "sub.csv"
    path.write_bytes(content)
    with pytest.raises(SubmissionError, match=match) as e:
        read_submission(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_read_submission_missing_file(tmp_path):
    with pytest.raises(SubmissionError, match="nope.csv: file not found"):
        read_submission(tmp_path / "nope.csv")
    with pytest.raises(SubmissionError, match="is a folder"):
        read_submission(tmp_path)


@pytest.mark.parametrize(
    "cells, match",
    [
        ("0.2,x,0.5", r"row id='NA' column 'winner_model_b' is not a finite number \('x'; 1 such rows\)"),
        ("0.2,0.3,", r"row id='NA' column 'winner_tie' is not a finite number \(''; 1 such rows\)"),
        ("nan,0.3,0.7", r"row id='NA' column 'winner_model_a' is not a finite number \('nan'"),
        ("inf,0.3,0.7", r"row id='NA' column 'winner_model_a' is not a finite number \('inf'"),
        ("-0.5,0.8,0.7", r"row id='NA' column 'winner_model_a' is negative \(-0.5;"),
        ("0.2,0.3,0.6", r"row id='NA': probabilities sum to 1.100000000"),
    ],
)
def test_read_submission_then_validate_names_row_and_column(tmp_path, cells, match):
    path = tmp_path / "sub.csv"
    path.write_text(HEADER + f"NA,{cells}\n007,0.1,0.1,0.8\n")
    with pytest.raises(SubmissionError, match=match):
        validate_submission(read_submission(path), ["NA", "007"], name=str(path))


def test_read_submission_header_only(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text(HEADER)
    sub = read_submission(path)
    assert list(sub.columns) == ["id", *COLS] and len(sub) == 0
    with pytest.raises(SubmissionError, match=r"sub.csv: no rows \(only a header\)"):
        validate_submission(sub, IDS, name=str(path))
