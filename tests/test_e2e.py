"""The fold loop and the CLI end to end: resume, config-change refusal, extra rows, infer, score, check.

Runner tests use a tiny deterministic "toy" family defined here (fast, counts its fits); the
last tests run the real CLI (folds -> train xgb -> infer -> score -> check) on 300 sample rows.

    .venv/bin/python -m pytest tests/test_e2e.py
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_arena import families, predictions, run_inputs, runner, runs
from lmsys_arena.cli import main
from lmsys_arena.data import Competition
from lmsys_arena.metrics import log_loss, softmax, validate_submission

ROOT = Path(__file__).resolve().parents[1]

# ---- the toy family: class prior of the train rows + a response-length signal ----------------------

FITS: list[dict] = []  # one entry per fit_fold call
FAIL_AT: list[int] = []  # fit_fold raises for these folds (a simulated kill)


def _length_logit(df):
    la = df["response_a"].map(lambda t: sum(map(len, t))).to_numpy(dtype=float)
    lb = df["response_b"].map(lambda t: sum(map(len, t))).to_numpy(dtype=float)
    return np.tanh((la - lb) / 1000.0)


def fit_fold(cfg, train, valid, fold_dir, seed):
    fold = int(Path(fold_dir).name[4:])
    if fold in FAIL_AT:
        raise KeyboardInterrupt(f"killed in fold {fold}")
    FITS.append({"fold": fold, "train_ids": set(train["id"]), "valid_ids": set(valid["id"])})
    prior = (np.bincount(train["label"], minlength=3) + 1.0) / (len(train) + 3.0)
    (Path(fold_dir) / "toy.json").write_text(json.dumps({"prior": prior.tolist()}))
    return predict(cfg, valid, fold_dir)


def predict(cfg, df, fold_dir):
    prior = np.array(json.loads((Path(fold_dir) / "toy.json").read_text())["prior"])
    s = _length_logit(df) * cfg["w"]
    return np.log(prior)[None, :] + np.stack([s, -s, np.zeros_like(s)], axis=1)


TOY = {"family": "toy", "name": "toy", "w": 0.5}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "toy", families.FamilyInfo("toy", schema="", module=__name__))
    FITS.clear()
    FAIL_AT.clear()
    yield
    FAIL_AT.clear()


@pytest.fixture
def mini(workdir, sample_dir):
    """input/mini: the first 300 sample train rows + the official test rows, folds/mini.csv (3 folds)."""
    data = workdir / "input" / "mini"
    data.mkdir(parents=True)
    pd.read_csv(sample_dir / "train.csv", dtype=str, keep_default_na=False).head(300).to_csv(
        data / "train.csv", index=False
    )
    for name in ("test.csv", "sample_submission.csv"):
        shutil.copy(sample_dir / name, data / name)
    main(["folds", "--data", str(data), "--folds", "3", "--seed", "42"])
    return data


def spec(data, **kw):
    return run_inputs.RunSpec(data=str(data), **kw)


def fits_of(fold):
    return [f for f in FITS if f["fold"] == fold]


# ---- runner ---------------------------------------------------------------------------------------


def test_resume_after_kill_gives_same_oof(toy, mini, workdir):
    clean = runner.train_run(TOY, workdir / "runs" / "clean", spec(mini))
    FITS.clear()
    FAIL_AT.append(2)
    with pytest.raises(KeyboardInterrupt):
        runner.train_run(TOY, workdir / "runs" / "killed", spec(mini))
    killed = workdir / "runs" / "killed"
    assert (killed / "fold0" / "valid.parquet").exists() and (killed / "fold1" / "valid.parquet").exists()
    assert not (killed / "fold2" / "valid.parquet").exists() and not (killed / "oof.parquet").exists()
    FAIL_AT.clear()
    FITS.clear()
    resumed = runner.train_run(TOY, killed, spec(mini))
    assert [f["fold"] for f in FITS] == [2]  # done folds were not retrained
    a = pd.read_parquet(workdir / "runs" / "clean" / "oof.parquet")
    b = pd.read_parquet(killed / "oof.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert resumed["oof_logloss"] == clean["oof_logloss"]
    assert sorted(a["id"]) == sorted(pd.read_csv(mini / "train.csv", dtype=str)["id"])
    assert list(a.columns) == ["id", "fold", "label", *predictions.PROB_COLS, *predictions.LOGIT_COLS]
    assert np.allclose(a[predictions.PROB_COLS].sum(axis=1), 1)
    assert log_loss(a["label"], a[predictions.PROB_COLS].to_numpy()) == pytest.approx(clean["oof_logloss"])


def test_only_folds_then_rest(toy, mini, workdir):
    run = workdir / "runs" / "toy"
    m0 = runner.train_run(TOY, run, spec(mini), only_folds=[1])
    assert m0["rows"] == len(pd.read_parquet(run / "fold1" / "valid.parquet")) and list(m0["folds"]) == [1]
    FITS.clear()
    runner.train_run(TOY, run, spec(mini))
    assert [f["fold"] for f in FITS] == [0, 2]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["rows"] == 300 and set(saved["folds"]) == {"0", "1", "2"}


def test_config_change_refused_until_fresh(toy, mini, workdir):
    run = workdir / "runs" / "toy"
    runner.train_run(TOY, run, spec(mini))
    with pytest.raises(RuntimeError, match=r"different config.*FRESH=1.*w: 0.5 -> 0.25"):
        runner.train_run({**TOY, "w": 0.25}, run, spec(mini))
    with pytest.raises(RuntimeError, match=r"run.seed: 42 -> 7"):
        runner.train_run(TOY, run, spec(mini, seed=7))
    FITS.clear()
    runner.train_run({**TOY, "w": 0.25}, run, spec(mini), fresh=True)
    assert [f["fold"] for f in FITS] == [0, 1, 2]
    assert json.loads((run / "config.json").read_text())["w"] == 0.25


def test_new_folds_file_refused(toy, mini, workdir):
    run = workdir / "runs" / "toy"
    runner.train_run(TOY, run, spec(mini))
    main(["folds", "--data", str(mini), "--folds", "3", "--seed", "43"])
    with pytest.raises(RuntimeError, match="folds_sha1"):
        runner.train_run(TOY, run, spec(mini))


def test_extra_rows_train_only_and_no_prompt_leak(toy, mini, workdir, sample_dir):
    extra = pd.read_csv(sample_dir / "extra.csv", dtype=str, keep_default_na=False).head(40)
    train = pd.read_csv(mini / "train.csv", dtype=str, keep_default_na=False)
    extra.loc[0, "prompt"] = train.loc[0, "prompt"]  # an extra battle on a train prompt
    extra.to_csv(workdir / "extra.csv", index=False)
    runner.train_run(TOY, workdir / "runs" / "toy", spec(mini, extra="extra.csv"))
    folds = pd.read_csv(workdir / "folds" / "mini.csv", dtype={"id": str})
    leak_fold = int(folds.loc[folds["id"] == train.loc[0, "id"], "fold"].iloc[0])
    extra_ids = set(extra["id"])
    for fit in FITS:
        assert not fit["valid_ids"] & extra_ids
        expect = extra_ids - {extra.loc[0, "id"]} if fit["fold"] == leak_fold else extra_ids
        assert fit["train_ids"] & extra_ids == expect
    oof = pd.read_parquet(workdir / "runs" / "toy" / "oof.parquet")
    assert set(oof["id"]) == set(train["id"])


def test_infer_averages_folds_and_writes_valid_submission(toy, mini, workdir):
    run = workdir / "runs" / "toy"
    runner.train_run(TOY, run, spec(mini))
    frame = runner.infer_run(run)
    test = pd.read_csv(mini / "test.csv", dtype=str)
    tdf = Competition(mini).test()
    expect = np.mean([softmax(predict(TOY, tdf, run / f"fold{f}")) for f in range(3)], axis=0)
    assert np.allclose(frame[predictions.PROB_COLS].to_numpy(), expect)
    sub = pd.read_csv(workdir / "submissions" / "toy.csv", dtype={"id": str})
    validate_submission(sub, test["id"])
    assert sub["id"].tolist() == test["id"].tolist()
    assert (run / "test.parquet").exists()


# ---- the real CLI ---------------------------------------------------------------------------------


def test_cli_end_to_end_xgb(mini, workdir, capsys):
    common = [
        "--data",
        str(mini),
        "--model",
        "xgb",
        "--run",
        "x",
        "--set",
        "num_boost_round=25",
        "--set",
        "early_stopping_rounds=10",
        "--set",
        "params.max_depth=3",
        "--set",
        "threads=1",
    ]
    main(["train", *common])
    run = workdir / "runs" / "x"
    for f in range(3):
        assert (run / f"fold{f}" / "valid.parquet").exists()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["num_boost_round"] == 25 and cfg["run"]["data"] == mini.as_posix()
    main(["infer", "--run", "x"])
    capsys.readouterr()
    main(["score", "--run", "x"])
    out = capsys.readouterr().out
    oof = pd.read_parquet(run / "oof.parquet")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["oof_logloss"] == pytest.approx(log_loss(oof["label"], oof[predictions.PROB_COLS].to_numpy()))
    assert 0.5 < metrics["oof_logloss"] < 1.2 and len(oof) == 300
    assert f"OOF log loss {metrics['oof_logloss']:.5f}" in out and out.count("  fold ") == 3
    main(["check", "--sub", "submissions/x.csv", "--data", str(mini)])
    assert "valid submission (3 rows)" in capsys.readouterr().out
    sub = pd.read_csv(workdir / "submissions" / "x.csv", dtype={"id": str})
    assert sub["id"].tolist() == ["136060", "211333", "1233961"]
    # a second `train` resumes: nothing retrained, same OOF
    main(["train", *common])
    pd.testing.assert_frame_equal(pd.read_parquet(run / "oof.parquet"), oof)
    # a bad submission fails `check` with exit code 3 (bad input)
    sub.iloc[:2].to_csv(workdir / "bad.csv", index=False)
    with pytest.raises(SystemExit) as e:
        main(["check", "--sub", "bad.csv", "--data", str(mini)])
    assert e.value.code == 3


def test_cli_bad_input_is_one_line_error(workdir, sample_dir):
    data = workdir / "input" / "bad"
    data.mkdir(parents=True)
    raw = pd.read_csv(sample_dir / "train.csv", dtype=str, keep_default_na=False).head(20)
    raw.loc[7, "winner_tie"] = "1"  # two winners
    raw.to_csv(data / "train.csv", index=False)
    proc = subprocess.run(
        [sys.executable, "-m", "lmsys_arena", "folds", "--data", str(data)], capture_output=True, text=True, cwd=workdir
    )
    assert proc.returncode == 3  # bad data
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert str(data / "train.csv") in errors[0] and f"id={raw.loc[7, 'id']!r}" in errors[0]
    assert "winner_model_a/winner_model_b/winner_tie" in errors[0] and "not one-hot" in errors[0]
    proc = subprocess.run(
        [sys.executable, "-m", "lmsys_arena", "folds", "--data", str(data), "--skip-bad", "--folds", "3"],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr
    assert "kept 19, skipped 1 bad rows" in proc.stderr
    assert len(pd.read_csv(workdir / "folds" / "bad.csv")) == 19


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_makefile_passes_variables():
    out = subprocess.run(
        [
            "make",
            "-n",
            "-C",
            str(ROOT),
            "folds",
            "train",
            "infer",
            "check",
            "MODEL=lgbm",
            "EXTRA=e.csv",
            "SEED=3",
            "FOLDS=4",
            "SKIP_BAD=1",
            "DATA=input/x",
            "ONLY_FOLDS=0,1",
            "FRESH=1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if "-m lmsys_arena" in line]
    folds, train, infer, check = lines
    assert "folds --data input/x --folds 4 --seed 3 --skip-bad" in folds
    for flag in ("--data input/x", "--extra e.csv", "--skip-bad", "--model lgbm", "--run lgbm-x", "--seed 3"):
        assert flag in train
    assert "--only-folds 0,1" in out and "--fresh" in out
    assert "infer --run lgbm-x --data input/x" in infer
    assert "check --sub submissions/lgbm-x.csv --data input/x --skip-bad" in check
    default = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "infer"], capture_output=True, text=True, check=True
    ).stdout
    assert "infer --run xgb-sample" in default  # runs.default_run_name: <model>-<data> off the competition data
    assert "--data" not in default.split("infer --run xgb-sample")[1].splitlines()[0]
    real = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "infer", "DATA=/x/lmsys-chatbot-arena", "LOG_LEVEL=DEBUG"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--log-level DEBUG infer --run xgb --data /x/lmsys-chatbot-arena" in real


def test_atomic_write_keeps_old_file_on_error_and_normal_mode(tmp_path):
    import os

    from lmsys_arena.io import FILE_MODE, atomic_path, write_json

    path = tmp_path / "out" / "m.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp file left
    assert os.stat(path).st_mode & 0o777 == FILE_MODE


def test_run_log_file_and_warnings_once_per_run(toy, mini, workdir):
    import logging

    from lmsys_arena.io import setup_logging

    setup_logging("INFO")
    logging.getLogger().setLevel(logging.INFO)  # under pytest basicConfig leaves the root at WARNING
    orig = fit_fold

    def noisy(cfg, train, valid, fold_dir, seed):
        logging.getLogger("lmsys_arena.toy").warning("the same advice from every fold")
        logging.getLogger("lmsys_arena.toy").warning(
            "%s: a fold-specific value", Path(fold_dir).name, extra={"once": True}
        )
        return orig(cfg, train, valid, fold_dir, seed)

    globals()["fit_fold"] = noisy
    try:
        runner.train_run(TOY, workdir / "runs" / "toy", spec(mini))
    finally:
        globals()["fit_fold"] = orig
    log_text = (workdir / "runs" / "toy" / "run.log").read_text()
    assert log_text.count("the same advice from every fold") == 1  # 3 folds, shown once
    assert log_text.count("a fold-specific value") == 1 and "fold0: a fold-specific value" in log_text
    assert "OOF log loss" in log_text
    cfg = json.loads((workdir / "runs" / "toy" / "config.json").read_text())
    prov = cfg["provenance"]
    assert prov["package"] and "numpy" in prov["libraries"] and prov["data_sha1"]["train"]
    assert set(prov["data_sha1"]) == {"train", "test", "extra", "folds"}


# ---- a run never loses, mixes or silently reuses work ----------------------------------------------


def _snapshot(run: Path) -> dict:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_fresh_with_bad_data_or_config_keeps_the_finished_run(toy, mini, workdir, caplog):
    run = workdir / "runs" / "toy"
    runner.train_run(TOY, run, spec(mini))
    before = _snapshot(run)
    # a config typo through the CLI: refused before anything is touched
    with pytest.raises(SystemExit) as e:
        main(
            ["train", "--data", str(mini), "--model", "xgb", "--run", "toy", "--fresh", "--set", "params.max_depth=abc"]
        )
    assert e.value.code == 3 and _snapshot(run) == before
    # a duplicate id in train.csv: the data is read before the old run is replaced
    raw = pd.read_csv(mini / "train.csv", dtype=str, keep_default_na=False)
    pd.concat([raw, raw.iloc[[4]]]).to_csv(mini / "train.csv", index=False)
    from lmsys_arena.data import DataError

    with pytest.raises(DataError, match="duplicate id"):
        runner.train_run(TOY, run, spec(mini), fresh=True)
    assert _snapshot(run) == before
    raw.to_csv(mini / "train.csv", index=False)
    runner.train_run({**TOY, "w": 0.25}, run, spec(mini), fresh=True)  # a clean start replaces it
    assert json.loads((run / "config.json").read_text())["w"] == 0.25
    assert not (workdir / "runs" / ".toy.replaced").exists()


def test_an_in_place_change_of_train_csv_is_refused(toy, mini, workdir):
    run = workdir / "runs" / "toy"
    runner.train_run(TOY, run, spec(mini))
    raw = pd.read_csv(mini / "train.csv", dtype=str, keep_default_na=False)
    raw[["winner_model_a", "winner_model_b"]] = raw[["winner_model_b", "winner_model_a"]].to_numpy()  # same ids
    raw.to_csv(mini / "train.csv", index=False)
    with pytest.raises(RuntimeError, match="run.train_sha1"):
        runner.train_run(TOY, run, spec(mini))
    with pytest.raises(RuntimeError, match="run.train_sha1"):
        runner.train_run(TOY, run, spec(mini), only_folds=[0])


def _hold(path: Path, holder: str, seconds: float = 60) -> subprocess.Popen:
    """Another process holding the exclusive lock ``path`` for ``seconds`` (as a train command on another GPU
    would)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                             "fcntl.flock(f, fcntl.LOCK_EX); f.seek(0); f.truncate(); f.write(sys.argv[2]); f.flush(); "
                             "print('locked', flush=True); time.sleep(float(sys.argv[3]))", str(path), holder,
                             str(seconds)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_command_on_a_busy_run_is_refused(toy, mini, workdir, monkeypatch):
    from lmsys_arena.io import Busy

    monkeypatch.setattr(runs, "TRAIN_STEP_WAIT_S", 0.3)  # a train's short steps wait this long before refusing
    run = workdir / "runs" / "toy"
    with runs.Run(run).lock("train"):
        with pytest.raises(Busy, match=r"train toy: refused, .*\.toy\.lock is held by pid \d+ on .* \(train toy"):
            runner.train_run(TOY, run, spec(mini), only_folds=[2])
    assert not (run / "fold2").exists()
    runner.train_run(TOY, run, spec(mini), only_folds=[2])  # released: the same command now runs
    proc = _hold(workdir / "runs" / ".toy.lock", "pid 1 on elsewhere (train toy)", 30)
    try:
        with pytest.raises(Busy, match="held by pid 1 on elsewhere"):
            runner.infer_run(run)
    finally:
        proc.kill()


def test_train_commands_share_a_run_fold_by_fold(toy, mini, workdir):
    from lmsys_arena.io import Busy

    clean = runner.train_run(TOY, workdir / "runs" / "clean", spec(mini))
    run = workdir / "runs" / "toy"
    runner.train_run(TOY, run, spec(mini), only_folds=[0])
    (run / "fold1").mkdir()
    (run / "fold1" / ".adapter.x1").mkdir()  # the other command's write in progress
    (run / "fold0" / ".valid.parquet.x2.tmp").write_text("half")  # left by a killed write
    other = _hold(runs.Run(run).fold_lock_file(1), "pid 7 on gpu-box (train toy fold 1)")
    lone = workdir / "runs" / "lone"
    third = _hold(runs.Run(lone).fold_lock_file(1), "pid 8 on gpu-box (train lone fold 1)")
    try:
        FITS.clear()
        m = runner.train_run(TOY, run, spec(mini))  # folds 0 done, 1 held by the other command: trains 2
        assert [f["fold"] for f in FITS] == [2] and set(m["folds"]) == {0, 2}
        assert (run / "fold1" / ".adapter.x1").is_dir() and not (run / "fold0" / ".valid.parquet.x2.tmp").exists()
        assert set(pd.read_parquet(run / "oof.parquet")["fold"]) == {0, 2}
        assert runs.Run(run).busy_folds() == {1: "pid 7 on gpu-box (train toy fold 1)"}
        with pytest.raises(Busy, match=r"infer toy: refused, fold 1 is being trained by pid 7 on gpu-box"):
            runner.infer_run(run)
        with pytest.raises(Busy, match="fold 1 is being trained"):
            runner.train_run(TOY, run, spec(mini), fresh=True)
        with pytest.raises(Busy, match="no fold is done yet .* nothing is left for this one"):
            runner.train_run(TOY, lone, spec(mini), only_folds=[1])
        with pytest.raises(RuntimeError, match="lone is being trained with a different config"):
            runner.train_run({**TOY, "w": 9}, lone, spec(mini))  # nothing done there yet, but fold 1 is training
    finally:
        for proc in (other, third):
            proc.kill()
            proc.wait()
    FITS.clear()
    m = runner.train_run(TOY, run, spec(mini))  # the lock is free: fold 1 is trained here, OOF covers every fold
    assert [f["fold"] for f in FITS] == [1]
    pd.testing.assert_frame_equal(
        pd.read_parquet(run / "oof.parquet"), pd.read_parquet(workdir / "runs" / "clean" / "oof.parquet")
    )
    assert m["oof_logloss"] == clean["oof_logloss"] and runs.Run(run).busy_folds() == {}


def test_train_commands_started_or_finishing_together_wait_for_each_other(toy, mini, workdir):
    """Preparing the run and writing its OOF take the run's lock for a moment: another train command's short
    step is waited for, not refused (two commands started together once failed here)."""
    run = workdir / "runs" / "toy"
    proc = _hold(workdir / "runs" / ".toy.lock", "pid 9 on box (train toy)", 0.5)
    try:
        FITS.clear()
        t0 = time.time()
        m = runner.train_run(TOY, run, spec(mini), only_folds=[0])
        assert [f["fold"] for f in FITS] == [0] and m["folds"] and time.time() - t0 > 0.2
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_probe_does_not_make_a_free_fold_look_busy(workdir):
    """``lock_holder`` takes a free lock for a moment to see that it is free; a command taking that lock then
    tries again instead of skipping the fold as another command's."""
    import fcntl
    import threading

    from lmsys_arena.io import exclusive_lock, lock_holder

    path = workdir / ".x.fold0.lock"
    path.touch()
    probe = open(path, "a+")  # a probe holds it, with no holder line
    fcntl.flock(probe, fcntl.LOCK_EX)
    threading.Timer(0.1, probe.close).start()
    with exclusive_lock(path, "train x fold 0"):
        assert "train x fold 0" in lock_holder(path)
    assert lock_holder(path) is None


def test_a_failed_start_leaves_nothing_to_guard_and_temp_files_are_cleaned(toy, mini, workdir):
    run = workdir / "runs" / "toy"
    (workdir / "folds" / "mini.csv").rename(workdir / "folds.bak")
    with pytest.raises(FileNotFoundError, match="make folds"):
        runner.train_run(TOY, run, spec(mini))
    assert not (run / "config.json").exists()
    (workdir / "folds.bak").rename(workdir / "folds" / "mini.csv")
    # a config.json with nothing trained under it does not refuse another config
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"family": "toy", "w": 9}))
    FAIL_AT.append(1)
    with pytest.raises(KeyboardInterrupt):
        runner.train_run(TOY, run, spec(mini))
    FAIL_AT.clear()
    (run / "fold1" / ".valid.parquet.x1.tmp").write_text("half")  # left by a killed write
    (run / "fold1" / ".adapter.x2").mkdir()
    runner.train_run(TOY, run, spec(mini))
    assert not list(run.rglob(".*")) and len(pd.read_parquet(run / "oof.parquet")) == 300


def test_corrupt_files_and_a_passed_deadline_are_one_line_errors(mini, workdir, caplog, monkeypatch):
    common = ["--data", str(mini), "--model", "xgb", "--run", "x", "--set", "num_boost_round=5", "--set", "threads=1"]
    main(["train", *common])
    run = workdir / "runs" / "x"
    model = run / "fold0" / "model.json"
    good = model.read_bytes()
    model.write_text("{not a model")
    with pytest.raises(SystemExit) as e:
        main(["infer", "--run", "x"])
    assert e.value.code == 1 and "runs/x/fold0/model.json: not a readable xgboost model" in caplog.text
    model.write_bytes(good)
    monkeypatch.setenv("LMSYS_DEADLINE", "1")  # long past
    caplog.clear()
    with pytest.raises(SystemExit):
        main(["infer", "--run", "x"])
    assert "LMSYS_DEADLINE has passed" in caplog.text and not (run / "test.parquet").exists()
    monkeypatch.delenv("LMSYS_DEADLINE")
    (run / "config.json").write_text('{"family": ')
    caplog.clear()
    with pytest.raises(SystemExit):
        main(["infer", "--run", "x"])
    assert "runs/x/config.json: corrupt JSON" in caplog.text
    bad_yaml = workdir / "bad.yaml"
    bad_yaml.write_text("family: gbdt\nparams: {max_depth: 3\n")
    for argv, words in (
        (["train", "--data", str(mini), "--model", str(bad_yaml)], f"{bad_yaml}: not valid YAML"),
        (["train", "--data", str(mini), "--model", "xgb", "--set", "params=5"], "params must be a mapping"),
    ):
        caplog.clear()
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 3 and words in caplog.text and "Traceback" not in caplog.text
