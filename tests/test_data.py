"""Loader: odd-but-valid cells decode right, each bad input names file/row id/column, --skip-bad counts.

.venv/bin/python -m pytest tests/test_data.py
"""

import csv
import json
import logging

import numpy as np
import pandas as pd
import pytest

from lmsys_arena.data import Competition, DataError, JSONValueCell, load_battles, load_extra, parse_turns
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


TEST_HEADER = ["id", "prompt", "response_a", "response_b"]
SUB_HEADER = ["id", "winner_model_a", "winner_model_b", "winner_tie"]


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


# ---- ids that pandas would read as missing values stay strings ----------------------------------


def test_na_like_ids_stay_strings(tmp_path):
    ids = ["NA", "null", "nan", "None", "N/A", "#N/A", "007"]
    df = load_battles(write(tmp_path / "t.csv", [row(i) for i in ids]))
    assert df["id"].tolist() == ids
    write(tmp_path / "test.csv", [[i, '["p"]', '["a"]', '["b"]'] for i in ids], header=TEST_HEADER)
    write(tmp_path / "sample_submission.csv", [[i, "0.3", "0.3", "0.4"] for i in ids], header=SUB_HEADER)
    comp = Competition(tmp_path)
    assert comp.test(check_sample="raise")["id"].tolist() == ids
    assert comp.check_sample_submission() is None


# ---- sample_submission.csv -----------------------------------------------------------------------


def write_test_dir(root, ids=("1", "2", "3"), sample_ids=None, sample_header=SUB_HEADER):
    write(root / "test.csv", [[i, '["p"]', '["a"]', '["b"]'] for i in ids], header=TEST_HEADER)
    if sample_ids is not False:
        rows = [[i, "0.3333", "0.3333", "0.3334"][: len(sample_header)] for i in (sample_ids or ids)]
        write(root / "sample_submission.csv", rows, header=sample_header)
    return Competition(root)


def test_sample_submission_matches(tmp_path, sample_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="lmsys_arena.data"):
        assert Competition(sample_dir).check_sample_submission() is None
        Competition(sample_dir).test(check_sample="raise")
        comp = write_test_dir(tmp_path, sample_ids=["3", "1", "2"])  # any row order
        assert comp.check_sample_submission() is None
    assert caplog.text == ""


@pytest.mark.parametrize(
    "setup, match",
    [
        (dict(sample_ids=False), r"sample_submission.csv: file not found"),
        (dict(sample_ids=["1", "2"]), r"ids differ from .*test.csv: 1 test ids missing \(e.g. \['3'\]\), 0 ids not in"),
        (dict(sample_ids=["1", "2", "3", "4"]), r"0 test ids missing .*1 ids not in test.csv \(e.g. \['4'\]\)"),
        (dict(sample_ids=["1", "2", "3", "2"]), r"duplicate id '2' at CSV record 5 \(first at CSV record 3\)"),
        (dict(sample_header=["id", "winner_model_a", "winner_model_b"]), r"columns \['id', 'winner_model_a', 'winn"),
        (dict(sample_header=["ID", "winner_model_a", "winner_model_b", "winner_tie"]), r"columns \['ID'"),
    ],
)
def test_sample_submission_problems(tmp_path, caplog, setup, match):
    comp = write_test_dir(tmp_path, **setup)
    with pytest.raises(DataError, match=match) as e:
        comp.check_sample_submission()
    assert str(comp.sample_submission_csv) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match=match):
        comp.test(check_sample="raise")
    with caplog.at_level(logging.WARNING, logger="lmsys_arena.data"):  # the Kaggle path: a warning, never a failure
        df = comp.test()
        assert comp.check_sample_submission(strict=False) is not None
    assert df["id"].tolist() == ["1", "2", "3"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and str(comp.sample_submission_csv) in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmsys_arena.data"):
        comp.test(check_sample="skip")
    assert caplog.text == ""


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary file"),
        (b'id,winner_model_a\n"1,2\n', "not a readable"),
    ],
)
def test_unreadable_sample_submission(tmp_path, caplog, content, match):
    comp = write_test_dir(tmp_path)
    comp.sample_submission_csv.write_bytes(content)
    with pytest.raises(DataError, match=f"sample_submission.csv: {match}"):
        comp.check_sample_submission()
    with caplog.at_level(logging.WARNING, logger="lmsys_arena.data"):
        assert len(comp.test()) == 3
    assert match in caplog.text


def test_check_sample_rejects_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="check_sample"):
        write_test_dir(tmp_path).test(check_sample="ignore")


# ---- files with no rows ----------------------------------------------------------------------------


def test_header_only_files(tmp_path):
    (tmp_path / "train.csv").write_text(",".join(HEADER) + "\n")
    (tmp_path / "test.csv").write_text(",".join(TEST_HEADER) + "\n")
    comp = Competition(tmp_path)
    with pytest.raises(DataError, match=r"train.csv: no rows \(only a header\)"):
        comp.train()
    with pytest.raises(DataError, match=r"test.csv: no rows \(only a header\)"):
        comp.test()
    with pytest.raises(DataError, match=r"extra.csv: no rows"):
        load_extra(write(tmp_path / "extra.csv", []), pd.DataFrame())


def test_tiny_train_loads(tmp_path):
    """3 rows are fine for the loader (too few for K folds is make_folds' error)."""
    write(tmp_path / "train.csv", [row("1"), row("2", label=(0, 1, 0)), row("3", label=(0, 0, 1))])
    assert Competition(tmp_path).train()["label"].tolist() == [0, 1, 2]


def test_no_rows_left_after_skipping(tmp_path):
    path = write(tmp_path / "t.csv", [row("1", a="[1]"), row("2", label=(0, 0, 0))])
    with pytest.raises(DataError, match=r"t.csv: no rows left of 2: 2 bad rows skipped \(first: .*id='1'"):
        load_battles(path, skip_bad=True)


@pytest.mark.parametrize(
    "content, match",
    [(b"", r"empty file \(0 bytes\)"), (b"\x00\x01\x02binary", "binary file"), (b"id,prompt\n\xff\xfe,x\n", "codec")],
)
def test_unreadable_train_file(tmp_path, content, match):
    (tmp_path / "train.csv").write_bytes(content)
    with pytest.raises(DataError, match=f"train.csv: not a readable CSV: .*{match}"):
        Competition(tmp_path).train()
    with pytest.raises(DataError, match="is a folder"):
        load_battles(tmp_path)


# ---- JSON objects / numbers where a JSON list of strings belongs -----------------------------------


def test_parse_turns_json_values():
    for cell, kind in [('{"a": 1}', "object"), ("5", "number"), (" -1.5e3 ", "number"), ("true", "boolean")]:
        with pytest.raises(JSONValueCell, match=f"a JSON {kind}"):
            parse_turns(cell)
    with pytest.raises(JSONValueCell, match="a JSON null"):
        parse_turns("null")
    for cell in ["5 apples", "{not json}", "null and void", '"a quoted answer"', "1, 2, 3", "NaNny", "-"]:
        assert parse_turns(cell) == ([cell], True)


@pytest.mark.parametrize("cell, kind", [('{"a": 1}', "object"), ("5", "number")])
def test_json_value_cell_is_a_bad_row_in_train(tmp_path, cell, kind):
    path = write(tmp_path / "train.csv", [row("1"), row("2", b=cell), row("3")])
    with pytest.raises(DataError) as e:
        load_battles(path)
    msg = str(e.value)
    assert str(path) in msg and "id='2' (CSV record 3) column 'response_b'" in msg and f"a JSON {kind}" in msg
    df = load_battles(path, skip_bad=True)
    assert df["id"].tolist() == ["1", "3"] and len(df.attrs["load_report"].skipped) == 1


def test_json_value_cells_in_test_warn(tmp_path, caplog):
    rows = [
        ["1", '["ok"]', '["a"]', '["b"]'],
        ["2", '["p"]', '{"a": 1}', '["b"]'],
        ["3", "7", '["a"]', "just text"],
    ]
    write(tmp_path / "test.csv", rows, header=TEST_HEADER)
    with caplog.at_level(logging.WARNING, logger="lmsys_arena.data"):
        df = Competition(tmp_path).test(check_sample="skip")
    assert df["response_a"].tolist()[1] == ['{"a": 1}'] and df["prompt"].tolist()[2] == ["7"]
    report = df.attrs["load_report"]
    assert report.json_value_cells == 2 and report.plain_text_cells == 3
    assert report.json_value_first == "row id='2' (CSV record 3) column 'response_a'"
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "2 text cells are a JSON object/number" in warning[0]
    assert "row id='2' (CSV record 3) column 'response_a'" in warning[0] and "test.csv" in warning[0]


# ---- rows with nothing in them ---------------------------------------------------------------------


def test_all_empty_rows_dropped_from_train(tmp_path, caplog):
    rows = [
        row("1"),
        row("e1", prompt="[null]", a='[""]', b="[null]"),
        row("e2", prompt='["", "  "]', a="[null, null]", b='["\\n"]'),  # whitespace is empty too
        row("half", prompt="[null]", a='[""]', b='["B"]'),  # one non-empty response: kept
        row("2"),
    ]
    with caplog.at_level(logging.WARNING, logger="lmsys_arena.data"):
        df = load_battles(write(tmp_path / "train.csv", rows))
    assert df["id"].tolist() == ["1", "half", "2"]
    report = df.attrs["load_report"]
    assert report.empty_rows == ["e1", "e2"] and report.empty_rows_dropped
    assert (report.rows_read, report.rows_kept) == (5, 3)
    assert "dropped 2 rows whose prompt and both responses are empty in every turn" in caplog.text
    assert "['e1', 'e2']" in caplog.text and "train.csv" in caplog.text
    assert "dropped 2 rows with all texts empty" in report.summary()
    extra = load_extra(write(tmp_path / "extra.csv", [row("x1", prompt='["new"]'), rows[1]]), df)
    assert extra["id"].tolist() == ["x1"]


def test_all_empty_rows_kept_in_test(tmp_path):
    rows = [["1", '["p"]', '["a"]', '["b"]'], ["e", "[null]", '[""]', "[null]"]]
    write(tmp_path / "test.csv", rows, header=TEST_HEADER)
    df = Competition(tmp_path).test(check_sample="skip")
    assert df["id"].tolist() == ["1", "e"] and df["prompt"].tolist()[1] == [""]
    report = df.attrs["load_report"]
    assert report.empty_rows == ["e"] and not report.empty_rows_dropped
    assert "kept 1 rows with all texts empty" in report.summary()


def test_only_empty_rows_is_an_error(tmp_path):
    path = write(tmp_path / "train.csv", [row("e1", prompt="[null]", a='[""]', b="[null]")])
    with pytest.raises(
        DataError, match=r"no rows left of 1: 1 rows with all texts empty dropped \(first ids: \['e1'\]"
    ):
        load_battles(path)
