"""The llm family through the runner with the tiny backbone on CPU: 2-fold train -> OOF -> infer,
resume after a killed run, exact swap-TTA symmetry, deadline NaNs.

    .venv/bin/python -m pytest tests/test_llm_family.py
"""

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_arena.config import load_config, set_dotted
from lmsys_arena.data import Competition
from lmsys_arena.llm.config import aux_feature_names
from lmsys_arena.metrics import softmax
from lmsys_arena.predictions import PROB_COLS
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.runner import infer_run, train_run
from lmsys_arena.swap import swap_battles

SMALL = {
    "format.max_len": 192,
    "train.batch_size": 16,
    "train.micro_batch": 8,
    "train.checkpoint_every": 2,
    "train.log_every": 2,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory, llm_inputs):
    """120 real sample rows, 2 folds, plus the official test file."""
    return llm_inputs(tmp_path_factory.mktemp("llmdata"), 120)


@pytest.fixture
def env(llm_env):
    return llm_env


def cfg(**over):
    return load_config("tiny", {**SMALL, **over})


def bad_cfg(key: str, value) -> dict:
    """A resolved config with ``key`` set to ``value`` past the loader's checks (what ``family.options`` sees
    of a hand-edited config.json)."""
    c = copy.deepcopy(cfg())
    set_dotted(c, key, value)
    return c


def test_two_fold_round_trip_then_infer(env, workdir):
    m = train_run(cfg(), "runs/tiny", env)
    oof = pd.read_parquet("runs/tiny/oof.parquet")
    assert len(oof) == 120 and set(oof["fold"]) == {0, 1}
    assert np.isfinite(oof[PROB_COLS].to_numpy()).all() and 0 < m["oof_logloss"] < 2
    for f in (0, 1):
        assert (workdir / f"runs/tiny/fold{f}/adapter/adapter_config.json").exists()
        assert (workdir / f"runs/tiny/fold{f}/head.pt").exists()
        assert not (workdir / f"runs/tiny/fold{f}/ckpt.pt").exists()
    test = infer_run("runs/tiny")
    assert len(test) == 3 and (workdir / "submissions/tiny.csv").exists()
    # the reloaded (merged) adapter reproduces the in-memory validation logits
    from lmsys_arena.llm import family

    valid = Competition(Path(env.data)).train()
    folds = pd.read_csv(env.folds_file, dtype={"id": str})
    va = valid[valid["id"].isin(folds.loc[folds.fold == 0, "id"])].reset_index(drop=True)
    again = family.predict(cfg(), va, workdir / "runs/tiny/fold0")
    got = oof[oof.fold == 0].set_index("id").loc[va["id"], PROB_COLS].to_numpy()
    np.testing.assert_allclose(softmax(again), got, atol=1e-5)


def test_resume_after_kill_gives_same_oof(env, workdir, monkeypatch):
    from lmsys_arena.llm.train import Trainer

    train_run(cfg(), "runs/ref", env, only_folds=[0])
    ref = pd.read_parquet("runs/ref/oof.parquet")

    real_save = Trainer.save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die(self, step, sched):
        real_save(self, step, sched)
        raise Killed(step)

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train_run(cfg(), "runs/killed", env, only_folds=[0])
    assert (workdir / "runs/killed/fold0/ckpt.pt").exists()
    assert not (workdir / "runs/killed/fold0/valid.parquet").exists()
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    train_run(cfg(), "runs/killed", env, only_folds=[0])
    got = pd.read_parquet("runs/killed/oof.parquet")
    np.testing.assert_allclose(got[PROB_COLS].to_numpy(), ref[PROB_COLS].to_numpy(), atol=1e-6)


AUX = {
    "model.aux.features": ["lr_*", "diff_chars", "a_refusal*", "b_refusal*", "turns"],
    "model.aux.source_bias": True,
    "model.aux.source_input": True,
    "train.text_loss": 0.5,
}


@pytest.mark.parametrize("side", [{}, AUX], ids=["text", "text+aux"])
def test_swap_tta_is_exactly_symmetric_and_deadline_gives_nan(env, workdir, monkeypatch, side):
    from lmsys_arena.llm import family

    c = cfg(**{"train.swap": "both", "train.lr": 0.02, "train.head_lr": 0.02, **side})
    train_run(c, "runs/sym", env, only_folds=[0])
    # any weights must give exact symmetry: use a random head so p_a and p_b clearly differ
    import torch

    head = workdir / "runs/sym/fold0/head.pt"
    g = torch.Generator().manual_seed(0)
    torch.save(
        {
            k: v if k.endswith(("mean", "std")) else v + 0.2 * torch.randn(v.shape, generator=g)
            for k, v in torch.load(head).items()
        },
        head,
    )
    df = Competition(Path(env.data)).train().head(24)
    p = softmax(family.predict(c, df, workdir / "runs/sym/fold0"))
    q = softmax(family.predict(c, swap_battles(df), workdir / "runs/sym/fold0"))
    np.testing.assert_allclose(p[:, 0], q[:, 1], atol=1e-6)
    np.testing.assert_allclose(p[:, 1], q[:, 0], atol=1e-6)
    np.testing.assert_allclose(p[:, 2], q[:, 2], atol=1e-6)
    assert np.abs(p[:, 0] - p[:, 1]).max() > 1e-3  # not trivially symmetric
    monkeypatch.setenv("LMSYS_DEADLINE", "1")  # long past
    assert np.isnan(family.predict(c, df, workdir / "runs/sym/fold0")).all()


@pytest.fixture
def env_extra(env, workdir, sample_dir):
    """The same rows plus 60 other sample rows as EXTRA (train-only), all relabelled tie."""
    sample = pd.read_csv(sample_dir / "train.csv").iloc[200:260].copy()
    sample[["winner_model_a", "winner_model_b", "winner_tie"]] = [0, 0, 1]
    sample.to_csv(workdir / "extra.csv", index=False)
    return RunSpec(data=env.data, folds_file=env.folds_file, seed=42, extra=str(workdir / "extra.csv"))


def test_aux_head_features_and_source_bias_round_trip(env_extra, workdir):
    """Side inputs: battle features + a bias for extra rows (which learns their ties); the stats and
    weights are saved with the head, and reloading reproduces the OOF."""
    import json

    import torch

    from lmsys_arena.llm import family

    c = cfg(**AUX, **{"train.head_lr": 0.05})
    train_run(c, "runs/aux", env_extra, only_folds=[0])
    fold = workdir / "runs/aux/fold0"
    meta = json.loads((fold / "llm_meta.json").read_text())
    assert meta["aux_features"] == aux_feature_names(AUX["model.aux.features"]) and len(meta["aux_features"]) > 10
    state = torch.load(fold / "head.pt")
    bias = state["aux.source"]
    assert bias[2] > bias[0] and bias[2] > bias[1]  # extra rows: all ties -> their offset favours tie
    assert (state["aux.std"] > 0).all() and state["aux.mean"].shape == (len(meta["aux_features"]),)
    assert state["aux.net.0.weight"].shape[1] == len(meta["aux_features"]) + 1  # source_input: is_extra feeds the MLP
    oof = pd.read_parquet("runs/aux/oof.parquet")
    train = Competition(Path(env_extra.data)).train()
    folds = pd.read_csv(env_extra.folds_file, dtype={"id": str})
    va = train[train["id"].isin(folds.loc[folds.fold == 0, "id"])].reset_index(drop=True)
    again = softmax(family.predict(c, va, fold))
    np.testing.assert_allclose(again, oof.set_index("id").loc[va["id"], PROB_COLS].to_numpy(), atol=1e-5)
    raw = np.load(fold / "valid_raw.npz")  # the aux head's share, so the text head's logits can be told apart
    assert raw["aux_ab"].shape == raw["ab"].shape == (len(va), 3) and np.isfinite(raw["aux_ba"]).all()
    assert np.abs(raw["aux_ab"]).max() > 1e-3
    with pytest.raises(ValueError, match="match no feature"):
        aux_feature_names(["nope_*"])
    with pytest.raises(ValueError, match="unknown key 'model.aux.hiden'; did you mean 'model.aux.hidden'"):
        family.options(bad_cfg("model.aux.hiden", 3))


def test_collapsed_text_path_is_flagged_even_when_the_aux_head_follows_the_order(caplog):
    """Seen on real data (gemma3-270m, LoRA lr >= 5e-4): the text head's A/B margin became a constant
    while the aux head kept the fold's loss unchanged. The check looks at the text head alone."""
    from lmsys_arena.llm import family

    rng = np.random.default_rng(0)
    n = 300
    aux_ab = rng.normal(size=(n, 3))
    aux_ba = aux_ab[:, [1, 0, 2]]  # features are swapped exactly with the responses
    text = np.column_stack([0.3 + 0.01 * rng.normal(size=n), 0.3 + 0.01 * rng.normal(size=n), rng.normal(size=n)])
    raw = {"ab": text + aux_ab, "ba": text + aux_ba, "aux_ab": aux_ab, "aux_ba": aux_ba}
    with caplog.at_level("WARNING"):
        assert family._check_text_path(raw, "fold0") < family.TEXT_COLLAPSED
    assert "learned no A/B preference" in caplog.text and "set train.text_loss" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # text_loss already on: the advice says so
        family._check_text_path(raw, "fold0", text_loss=1.0)
    assert "train.text_loss is already 1" in caplog.text
    caplog.clear()
    healthy = rng.normal(size=(n, 3))
    raw = {"ab": healthy + aux_ab, "ba": healthy[:, [1, 0, 2]] + aux_ba, "aux_ab": aux_ab, "aux_ba": aux_ba}
    with caplog.at_level("WARNING"):
        assert family._check_text_path(raw, "fold0") > 0.99
    assert "no A/B preference" not in caplog.text


def test_bad_config_is_a_clear_error():
    from lmsys_arena.llm.family import options

    with pytest.raises(ValueError, match="unknown key 'train.lrr'; did you mean 'train.lr'"):
        options(bad_cfg("train.lrr", 1))
    with pytest.raises(ValueError, match="--set: unknown key 'train.lrr'; did you mean 'train.lr'"):
        cfg(**{"train.lrr": 1})  # the loader refuses it too, naming where it came from
    assert options(bad_cfg("train.lr", "4e-4")).train.lr == 4e-4  # YAML 1.1 string
    assert options(cfg(**{"train.lr": "4e-4"})).train.lr == 4e-4
    with pytest.raises(ValueError, match="train.text_loss: must be >= 0"):
        options(bad_cfg("train.text_loss", -1))
    with pytest.raises(ValueError, match="backbone must be a string"):
        options({**cfg(), "backbone": None})
    with pytest.raises(ValueError, match="backbone: an llm config needs a backbone"):
        options({**cfg(), "backbone": ""})


KILL_AFTER_CHECKPOINT = """import sys
from lmsys_arena.cli import main
from lmsys_arena.llm.train import Trainer

save = Trainer.save_checkpoint

def save_then_die(self, step, sched):  # every rank: the checkpoint is written, then the job dies
    save(self, step, sched)
    raise SystemExit(f"killed after the checkpoint at step {step}")

Trainer.save_checkpoint = save_then_die
main(sys.argv[1:])
"""


def torchrun_train(env, data, workdir, run: str, strategy: str, script: str | None = None, **extra):
    """``lmsys_arena train`` (or ``script`` with the same arguments) in 2 CPU processes (gloo)."""
    import os
    import subprocess
    import sys

    sets = [a for k, v in {**SMALL, "train.strategy": strategy, **extra}.items() for a in ("--set", f"{k}={v}")]
    entry = [script, "--"] if script else ["-m", "lmsys_arena", "--"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *entry,
        "train",
        "--data",
        env.data,
        "--model",
        "tiny",
        "--run",
        run,
        "--only-folds",
        "0",
        *sets,
    ]
    env_vars = {**os.environ, "LMSYS_MODELS_DIR": data["models"], "OMP_NUM_THREADS": "1"}
    # the CLI finds folds by data name: write them where it looks
    (workdir / "folds").mkdir(exist_ok=True)
    shutil.copy(env.folds_file, workdir / "folds" / "small.csv")
    return subprocess.run(cmd, env=env_vars, cwd=workdir, capture_output=True, text=True, timeout=300)


def one_process_oof(env) -> pd.DataFrame:
    if not Path("runs/one/oof.parquet").exists():
        train_run(cfg(), "runs/one", env, only_folds=[0])
    return pd.read_parquet("runs/one/oof.parquet")


def test_rows_per_pass_do_not_change_the_trajectory(env, workdir):
    """A 16-row step as one pass or as two passes of 8 (gradient accumulation, what a smaller card takes)
    ends at the same model."""
    two_passes = one_process_oof(env)
    train_run(cfg(**{"train.micro_batch": 16}), "runs/one-pass", env, only_folds=[0])
    one_pass = pd.read_parquet("runs/one-pass/oof.parquet")
    np.testing.assert_allclose(one_pass[PROB_COLS].to_numpy(), two_passes[PROB_COLS].to_numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "strategy,compiled", [("ddp", False), ("fsdp", False), ("fsdp", True)], ids=["ddp", "fsdp", "fsdp-compiled"]
)
def test_two_processes_match_one(env, data, workdir, strategy, compiled):
    """torchrun with 2 CPU processes (gloo) follows the 1-process trajectory: same OOF, with DDP and
    with FSDP (sharded weights gathered into the saved adapter, then scored by whole copies), and with
    FSDP over compiled layers (inductor's fused kernels: a looser tolerance)."""
    one = one_process_oof(env)
    p = torchrun_train(env, data, workdir, "two", strategy, **({"model.compile": "true"} if compiled else {}))
    assert p.returncode == 0, p.stderr[-3000:]
    if compiled:
        assert "FSDP: 2 decoder layers compiled around their forward" in p.stderr, p.stderr[-3000:]
    two = pd.read_parquet("runs/two/oof.parquet")
    np.testing.assert_allclose(two[PROB_COLS].to_numpy(), one[PROB_COLS].to_numpy(), atol=1e-4 if compiled else 1e-5)


def test_fsdp_run_killed_after_a_checkpoint_resumes_to_the_same_oof(env, data, workdir):
    """2 FSDP processes die right after writing the (gathered, full-state) checkpoint; the rerun loads
    it into the sharded model and optimizer and ends with the uninterrupted run's OOF."""
    one = one_process_oof(env)
    (workdir / "kill.py").write_text(KILL_AFTER_CHECKPOINT)
    p = torchrun_train(env, data, workdir, "fsdp", "fsdp", script=str(workdir / "kill.py"))
    assert p.returncode != 0 and "killed after the checkpoint at step 2" in p.stderr, p.stderr[-3000:]
    assert (workdir / "runs/fsdp/fold0/ckpt.pt").exists()
    assert not (workdir / "runs/fsdp/oof.parquet").exists()
    p = torchrun_train(env, data, workdir, "fsdp", "fsdp")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from" in p.stderr and "at step 2/" in p.stderr, p.stderr[-3000:]
    got = pd.read_parquet("runs/fsdp/oof.parquet")
    np.testing.assert_allclose(got[PROB_COLS].to_numpy(), one[PROB_COLS].to_numpy(), atol=1e-5)


def test_pissa_ema_rdrop_adapters_reload_to_the_same_logits(env, workdir):
    """PiSSA changes the base weights during training; the saved adapter is converted to plain LoRA,
    so the stock backbone + adapter reproduces the in-memory validation logits."""
    from lmsys_arena.llm import family

    c = cfg(
        **{
            "model.lora.init": "pissa",
            "model.lora.dropout": 0.1,
            "train.ema": 0.9,
            "train.rdrop": 0.5,
            "train.lr": 0.01,
        }
    )
    train_run(c, "runs/pissa", env, only_folds=[0])
    oof = pd.read_parquet("runs/pissa/oof.parquet")
    valid = Competition(Path(env.data)).train()
    folds = pd.read_csv(env.folds_file, dtype={"id": str})
    va = valid[valid["id"].isin(folds.loc[folds.fold == 0, "id"])].reset_index(drop=True)
    again = softmax(family.predict(c, va, workdir / "runs/pissa/fold0"))
    got = oof.set_index("id").loc[va["id"], PROB_COLS].to_numpy()
    np.testing.assert_allclose(again, got, atol=1e-4)
