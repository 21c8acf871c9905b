"""Loader: odd-but-valid cells decode right, each bad input names file/row id/column, --skip-bad counts.

.venv/bin/python -m pytest tests/test_data.py
"""

import csv
import json
import logging

import numpy as np
import pandas as pd
import pytest

from lmsys_arena.data import Competition, DataError, load_battles, load_extra, parse_turns
from lmsys_arena.swap import swap_battles

HEADER = [
    "id",
    "model_a",
    "model_b",
    "prompt",
    "response_a",
    "response_b",
    "winner_model_a",
    "winner_model_b",
    "winner_tie",
]


def row(id_, prompt='["hi"]', a='["A"]', b='["B"]', label=(1, 0, 0), models=("m1", "m2")):
    return [id_, *models, prompt, a, b, *map(str, label)]


def write(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---- odd but valid --------------------------------------------------------------------------------


def test_ids_kept_as_written(tmp_path):
    df = load_battles(write(tmp_path / "t.csv", [row("007"), row("123"), row("a1b2c3d4e5"), row(" 42 ")]))
    assert df["id"].tolist() == ["007", "123", "a1b2c3d4e5", "42"]
    assert all(isinstance(i, str) for i in df["id"])


def test_labels_to_class_index(tmp_path):
    rows = [
        row("1", label=(1, 0, 0)),
        row("2", label=(0, 1, 0)),
        row("3", label=(0, 0, 1)),
        row("4", label=("0.0", "1.0", "0.0")),
    ]
    df = load_battles(write(tmp_path / "t.csv", rows))
    assert df["label"].tolist() == [0, 1, 2, 1]
    assert df["label"].dtype == np.int8


def test_odd_cells_decode(tmp_path):
    long_turn = "x" * 200_000  # > 131072, the csv module's default field limit
    rows = [
        row("nulls", prompt='["q1", null]', a='[null, "a2"]', b='["", ""]'),
        row("plain", prompt="just text, not JSON", a='["A"]', b='["B"]'),
        row("pair", prompt=json.dumps(["smile \U0001f600"]), a='["\\ud83d\\ude00 ok"]', b='["B"]'),
        row("lone", prompt='["broken \\ud83d here"]', a='["\\udc00"]', b='["B"]'),
        row("long", prompt=json.dumps([long_turn]), a='["A"]', b='["B"]'),
        row("turns", prompt='["q1", "q2", "q3"]', a='["a1"]', b='["b1", "b2", "b3"]'),
        row("spaces", prompt='  ["padded"]  ', a='["A"]', b='["B"]'),
    ]
    df = load_battles(write(tmp_path / "odd.csv", rows)).set_index("id")
    assert df.loc["nulls", "prompt"] == ["q1", ""]
    assert df.loc["nulls", "response_a"] == ["", "a2"]
    assert df.loc["nulls", "response_b"] == ["", ""]
    assert df.loc["plain", "prompt"] == ["just text, not JSON"]
    assert df.loc["pair", "prompt"] == ["smile \U0001f600"]
    assert df.loc["pair", "response_a"] == ["\U0001f600 ok"]
    assert df.loc["lone", "prompt"] == ["broken \ufffd here"]
    assert df.loc["lone", "response_a"] == ["\ufffd"]
    for col in ("prompt", "response_a", "response_b"):  # every decoded text is valid UTF-8
        for turns in df[col]:
            for t in turns:
                t.encode("utf-8")
    assert df.loc["long", "prompt"] == [long_turn]
    assert df.loc["turns", "response_a"] == ["a1", "", ""]  # padded to the longest side
    assert df.loc["turns", "response_b"] == ["b1", "b2", "b3"]
    assert df.loc["spaces", "prompt"] == ["padded"]
    report = df.attrs["load_report"]
    assert (report.rows_read, report.rows_kept) == (7, 7)
    assert report.plain_text_cells == 1
    assert report.padded_turns == 1


def test_parse_turns_unit():
    assert parse_turns('["a", null]') == (["a", ""], False)
    assert parse_turns("hello [world]") == (["hello [world]"], True)
    for cell, reason in [
        ("", "empty cell"),
        ("[]", "empty JSON list"),
        ('["a"', "unparsable"),
        ("[1]", "turn 0 is a int"),
        ('["a"] x', "extra data"),
        ('[{"a": 1}]', "turn 0 is a dict"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_turns(cell)


def test_test_file_without_labels(sample_dir):
    df = Competition(sample_dir).test()
    assert df["id"].tolist() == ["136060", "211333", "1233961"]
    assert (df["label"] == -1).all() and (df["model_a"] == "").all()
    assert df["source"].eq("test").all()


def test_test_file_is_lenient(tmp_path):
    write(
        tmp_path / "test.csv",
        [["1", '["ok"]', '["a"]', '["b"]'], ["2", '["truncated', "", '["b"]']],
        header=["id", "prompt", "response_a", "response_b"],
    )
    df = Competition(tmp_path).test()
    assert df["prompt"].tolist() == [["ok"], ['["truncated']]
    assert df["response_a"].tolist()[1] == [""]
    assert df.attrs["load_report"].plain_text_cells == 2
    with pytest.raises(DataError):  # the same file read strictly fails
        load_battles(tmp_path / "test.csv")


def test_real_sample_train(sample_dir):
    df = Competition(sample_dir).train()
    assert len(df) == 1600 and df["id"].is_unique
    assert set(df["label"]) == {0, 1, 2}
    assert df["prompt"].map(len).eq(df["response_a"].map(len)).all()
    assert all(isinstance(t, str) for turns in df["response_b"] for t in turns)
    raw = pd.read_csv(sample_dir / "train.csv", dtype=str)
    assert df["id"].tolist() == raw["id"].tolist()
    onehot = raw[["winner_model_a", "winner_model_b", "winner_tie"]].astype(int).to_numpy()
    assert (onehot.argmax(axis=1) == df["label"].to_numpy()).all()


def test_swap_ab_swaps_labels(sample_dir):
    df = load_battles(sample_dir / "train.csv").head(50)
    sw = swap_battles(df)
    assert (sw["response_a"] == df["response_b"]).all() and (sw["model_b"] == df["model_a"]).all()
    expect = np.array([1, 0, 2])[df["label"].to_numpy()]
    assert (sw["label"].to_numpy() == expect).all()


# ---- bad input -> DataError naming file, row id, column ----------------------------------------------


@pytest.mark.parametrize(
    "bad_row, column, reason",
    [
        (row("X1", prompt='["unterminated'), "prompt", "unparsable JSON list"),
        (row("X1", a="[1, 2]"), "response_a", "turn 0 is a int"),
        (row("X1", b=""), "response_b", "empty cell"),
        (row("X1", b="[]"), "response_b", "empty JSON list"),
        (row("X1", label=(1, 1, 0)), "winner_model_a/winner_model_b/winner_tie", "not one-hot"),
        (row("X1", label=(0, 0, 0)), "winner_model_a/winner_model_b/winner_tie", "not one-hot"),
        (row("X1", label=(2, 0, 0)), "winner_model_a/winner_model_b/winner_tie", "not one-hot"),
        (row("X1", label=(1, "yes", 0)), "winner_model_b", "'yes' is not a number"),
        (row("X1", label=(1, "", 0)), "winner_model_b", "is not a number"),
        (row("", label=(1, 0, 0)), "id", "empty id"),
    ],
)
def test_bad_cell_names_file_row_column(tmp_path, bad_row, column, reason):
    path = write(tmp_path / "bad.csv", [row("ok1"), bad_row, row("ok2")])
    with pytest.raises(DataError) as e:
        load_battles(path)
    msg = str(e.value)
    assert str(path) in msg
    assert f"id={bad_row[0]!r}" in msg and "CSV record 3" in msg
    assert f"column '{column}'" in msg and reason in msg


def test_duplicate_id(tmp_path):
    path = write(tmp_path / "dup.csv", [row("5"), row("6"), row("5", prompt='["other"]')])
    with pytest.raises(
        DataError, match=r"row id='5' \(CSV record 4\) column 'id': duplicate id \(first at CSV record 2\)"
    ):
        load_battles(path)


def test_missing_column(tmp_path):
    path = write(
        tmp_path / "nocol.csv",
        [[r[0], *r[3:6]] for r in [row("1")]],
        header=["id", "prompt", "response_a", "response_b"],
    )
    with pytest.raises(DataError, match=r"nocol.csv: missing column\(s\) \['winner_model_a'"):
        load_battles(path, require_labels=True)
    path = write(tmp_path / "noresp.csv", [["1", '["p"]', '["a"]']], header=["id", "prompt", "response_a"])
    with pytest.raises(DataError, match=r"missing column\(s\) \['response_b'\]"):
        load_battles(path)


def test_missing_file_and_garbage(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_battles(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="not a readable CSV"):
        load_battles(tmp_path / "empty.csv")


def test_first_bad_row_reported_with_count(tmp_path):
    path = write(tmp_path / "many.csv", [row("1"), row("2", a="[3]"), row("3", label=(0, 0, 0)), row("1")])
    with pytest.raises(DataError, match=r"id='2'.*and 2 more bad rows"):
        load_battles(path)


def test_skip_bad_counts_and_reports(tmp_path, caplog):
    rows = [row("1"), row("2", a="[3]"), row("3", label=(0, 0, 0)), row("1"), row("4", prompt=""), row("5")]
    with caplog.at_level(logging.INFO, logger="lmsys_arena.data"):
        df = load_battles(write(tmp_path / "skip.csv", rows), skip_bad=True)
    assert df["id"].tolist() == ["1", "5"]
    report = df.attrs["load_report"]
    assert (report.rows_read, report.rows_kept, len(report.skipped)) == (6, 2, 4)
    assert "id='2'" in report.skipped[0] and "response_a" in report.skipped[0]
    assert "duplicate id" in report.skipped[2]
    assert "skipped 4 bad rows" in caplog.text
    assert caplog.text.count("skipped: ") == 4


def test_load_extra_drops_train_copies_and_renames_id_clashes(tmp_path, sample_dir):
    train = load_battles(sample_dir / "train.csv").head(20)
    t0 = train.iloc[0]
    copy = [
        t0["id"] + "x",
        "m",
        "n",
        json.dumps(t0["prompt"]),
        json.dumps(t0["response_a"]),
        json.dumps(t0["response_b"]),
        "0",
        "1",
        "0",
    ]
    clash = row(train["id"].iloc[1], prompt='["a fresh prompt"]')
    extra = load_extra(write(tmp_path / "extra.csv", [copy, clash, row("new")]), train)
    assert extra["id"].tolist() == ["extra-" + train["id"].iloc[1], "new"]
    assert extra["source"].eq("extra").all()
