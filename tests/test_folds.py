"""Folds: prompt-grouped, stratified, seeded, byte-identical on re-run; extra rows get no fold. The held-out split
(`make holdout`): no prompt on both sides, EXTRA rows sharing a held-out prompt dropped, a data folder like any other.

.venv/bin/python -m pytest tests/test_folds.py
"""

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_arena.cli import main
from lmsys_arena.data import Competition, prompt_key
from lmsys_arena.folds import make_folds, read_folds, write_folds

SAMPLE = Path(__file__).resolve().parents[1] / "input" / "sample"


@pytest.fixture(scope="module")
def train():
    df = Competition(SAMPLE).train()
    # make prompt groups matter: 300 rows share 30 prompts (the sample alone has only 8 repeated prompts)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(df), 300, replace=False)
    df.loc[rows, "prompt"] = pd.Series([df.at[rows[i % 30], "prompt"] for i in range(300)], index=rows)
    return df


def test_no_prompt_straddles_folds(train):
    folds = make_folds(train, k=5, seed=42)
    assert folds["id"].tolist() == train["id"].tolist()
    assert set(folds["fold"]) == set(range(5))
    per_prompt = folds.groupby(prompt_key(train).to_numpy())["fold"].nunique()
    assert per_prompt.max() == 1
    assert (prompt_key(train).value_counts() >= 10).sum() == 30  # the shared prompts exist


def test_label_proportions_per_fold(train):
    folds = make_folds(train, k=5, seed=42)
    overall = np.bincount(train["label"], minlength=3) / len(train)
    for f in range(5):
        labels = train["label"][folds["fold"] == f]
        share = np.bincount(labels, minlength=3) / len(labels)
        assert np.abs(share - overall).max() <= 0.02, (f, share, overall)
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 0.05 * len(train)


def test_seeded_and_deterministic_bytes(train, tmp_path):
    write_folds(make_folds(train, k=5, seed=7), tmp_path / "a.csv")
    write_folds(make_folds(train, k=5, seed=7), tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    write_folds(make_folds(train, k=5, seed=8), tmp_path / "c.csv")
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    back = pd.read_csv(tmp_path / "a.csv", dtype={"id": str})
    assert list(back.columns) == ["id", "fold"] and back["id"].tolist() == train["id"].tolist()


def test_cli_folds_rerun_identical_and_extra_gets_no_fold(workdir, sample_dir):
    data = workdir / "input" / "mini"
    data.mkdir(parents=True)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        shutil.copy(sample_dir / name, data / name)
    main(["folds", "--data", str(data), "--folds", "4", "--seed", "3"])
    first = (workdir / "folds" / "mini.csv").read_bytes()
    main(["folds", "--data", str(data), "--folds", "4", "--seed", "3"])
    assert (workdir / "folds" / "mini.csv").read_bytes() == first
    folds = pd.read_csv(workdir / "folds" / "mini.csv", dtype={"id": str})
    train_ids = pd.read_csv(data / "train.csv", dtype=str)["id"]
    extra_ids = pd.read_csv(sample_dir / "extra.csv", dtype=str)["id"]
    assert folds["id"].tolist() == train_ids.tolist()
    assert not set(extra_ids) & set(folds["id"])
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3]


def test_read_folds_refuses_stale_file(train, tmp_path):
    write_folds(make_folds(train.iloc[:-5], k=3, seed=1), tmp_path / "f.csv")
    with pytest.raises(ValueError, match="5 train ids have no fold.*re-run"):
        read_folds(tmp_path / "f.csv", train)
    with pytest.raises(FileNotFoundError, match="make folds"):
        read_folds(tmp_path / "missing.csv", train)
    fold_of = read_folds(tmp_path / "f.csv", train.iloc[:-5])
    assert fold_of.between(0, 2).all()


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda f: f.assign(fold=f["fold"].where(f.index != 3, -1)), "negative fold numbers [-1]"),
        (lambda f: pd.concat([f, f.iloc[[5]].assign(fold=0)]), "appears 2 times"),
        (lambda f: f.assign(fold=f["fold"].where(f["fold"] != 1, 2)), "folds [1] have no rows"),
        (lambda f: f.assign(fold=0), "only 1 fold"),
        (lambda f: f.assign(fold=f["fold"].astype(str).where(f.index != 2, "x")), "line 4 (id="),
        (lambda f: f.rename(columns={"fold": "k"}), "expected the columns id,fold"),
        (lambda f: f.iloc[:0], "only 0 fold"),
    ],
)
def test_read_folds_checks_ids_and_fold_numbers(train, tmp_path, edit, words):
    from lmsys_arena.data import DataError

    edit(make_folds(train, k=3, seed=1)).to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(DataError, match=re.escape(words)) as e:
        read_folds(tmp_path / "f.csv", train)
    assert str(tmp_path / "f.csv") in str(e.value)


def test_read_folds_refuses_another_dataset_and_empty_file(train, tmp_path):
    from lmsys_arena.data import DataError

    f = make_folds(train, k=3, seed=1)
    f["fold"] = np.arange(len(f)) % 3  # same ids, but not grouped by this data's prompts
    dup = train.assign(prompt=[["same prompt"]] * len(train))
    f.to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(DataError, match="prompts straddle folds"):
        read_folds(tmp_path / "f.csv", dup)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: not a readable folds file"):
        read_folds(tmp_path / "empty.csv", train)


def test_too_few_prompts():
    df = pd.DataFrame({"id": ["1", "2"], "prompt": [["a"], ["a"]], "label": [0, 1]})
    with pytest.raises(ValueError, match="at least 3 distinct prompts"):
        make_folds(df, k=3)


def test_holdout_split_keeps_prompts_out_and_is_a_data_folder(tmp_path, capsys, caplog):
    from lmsys_arena.data import load_extra
    from lmsys_arena.holdout import read_labels

    data = tmp_path / "sample"
    shutil.copytree(SAMPLE, data)
    args = ["holdout", "--data", str(data), "--extra", str(data / "extra.csv"), "--frac", "0.2", "--seed", "7"]
    main(args)
    out = tmp_path / "sample-holdout"
    assert f"DATA={out}" in capsys.readouterr().out
    kept, held = Competition(out).train(), Competition(out).test()
    whole = Competition(data).train()
    assert len(kept) + len(held) == len(whole) and abs(len(held) / len(whole) - 0.2) < 0.05
    assert not set(prompt_key(kept)) & set(prompt_key(whole.set_index("id").loc[held["id"]].reset_index()))
    labels = read_labels(tmp_path / "sample-holdout_labels.csv")
    assert (
        list(labels.index) == list(held["id"])
        and (labels.values == whole.set_index("id").loc[held["id"], "label"]).all()
    )
    extra = load_extra(str(tmp_path / "sample-holdout_extra.csv"), kept)
    held_prompts = set(prompt_key(whole[whole["id"].isin(held["id"])]))
    assert not prompt_key(extra).isin(held_prompts).any()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    main(args)  # the same split again: nothing rewritten
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(SystemExit):
        main([*args[:-2], "--seed", "8"])
    assert "holds another split" in caplog.text and "delete it" in caplog.text
    main(["folds", "--data", str(out), "--folds", "3"])  # a data folder like any other
