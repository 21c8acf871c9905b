"""The judge format's model side with the tiny backbone on CPU: ``model.head.init: verdict`` (the untrained head's
logits are the LM's next-token logits of A, B, C at the last token; swap-TTA stays exact; a trained verdict head
reloads) and the zero-shot judge (``zero_shot``, ``make judge``): a run like any other, OOF for every train row,
exactly symmetric swap-averaging.

    .venv/bin/python -m pytest -q tests/test_llm_judge.py
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmsys_arena.config import load_config
from lmsys_arena.data import Competition
from lmsys_arena.metrics import softmax
from lmsys_arena.predictions import PROB_COLS
from lmsys_arena.schema import ConfigError
from lmsys_arena.swap import combine_tta, swap_battles

CPU = torch.device("cpu")
JUDGE = {  # the judge template with room for text under the byte tokenizer; no aux head
    "format.template": "judge",
    "format.max_len": 768,
    "model.aux.features": None,
    "model.aux.source_bias": False,
    "infer.max_tokens": 65536,
}
VERDICT = {**JUDGE, "model.head.init": "verdict", "model.head.layers": 1, "model.head.norm": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory, llm_inputs):
    """60 real sample rows, 2 folds, the official test file, and a models folder."""
    return llm_inputs(tmp_path_factory.mktemp("judgedata"), 60)


@pytest.fixture
def env(llm_env):
    return llm_env


def rows(env, n=None) -> pd.DataFrame:
    df = Competition(Path(env.data)).train()
    return df if n is None else df.head(n)


def capped_tiny(models: Path, cap: float) -> Path:
    """A copy of the tiny backbone folder whose final logit soft-cap is ``cap`` (tiny's 30 hardly bends its small
    logits; a small cap makes the head's SoftCap matter)."""
    from lmsys_arena.llm.backbones import resolve_backbone

    out = models / f"tiny-cap{cap:g}"
    if not out.exists():
        shutil.copytree(resolve_backbone("tiny"), out)
        c = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**c, "final_logit_softcapping": cap}))
    return out


def lm_next_token_logits(path: Path, seqs, pad_id: int) -> torch.Tensor:
    """The causal LM's (lm_head + final soft-cap) logits of the verdict tokens after each sequence's last token."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmsys_arena.llm.backbones import load_tokenizer
    from lmsys_arena.llm.batching import collate
    from lmsys_arena.llm.format import verdict_token_ids

    config = AutoConfig.from_pretrained(path)
    config.attn_logit_softcapping = None  # as load_backbone runs it (model.softcap: false)
    lm = AutoModelForCausalLM.from_pretrained(path, config=config).eval()
    ids, mask = collate(seqs, pad_id, device=CPU)
    with torch.no_grad():
        out = lm(input_ids=ids, attention_mask=mask).logits
    last = mask.sum(1) - 1
    return out[torch.arange(len(seqs)), last][:, verdict_token_ids(load_tokenizer(path))]


def model_logits(model, seqs, pad_id: int) -> torch.Tensor:
    from lmsys_arena.llm.batching import collate

    ids, mask = collate(seqs, pad_id, device=CPU)
    with torch.no_grad():
        return model(ids, mask, right_padded=True)


# ---------------------------------------------------------------- model.head.init: verdict


def test_verdict_head_starts_at_the_lms_next_token_logits_and_swap_tta_is_exact(env, data):
    from lmsys_arena.llm.backbones import load_tokenizer
    from lmsys_arena.llm.family import options
    from lmsys_arena.llm.format import BattleEncoder
    from lmsys_arena.llm.heads import SoftCap
    from lmsys_arena.llm.model import build_model

    lc = options(load_config("tiny", VERDICT))
    path = capped_tiny(Path(data["models"]), 0.25)
    tok = load_tokenizer(path)
    enc = BattleEncoder(tok, lc.format)
    df = rows(env, 12)
    fwd, rev = enc.encode(df, both=True)
    model = build_model(path, lc.model, CPU, seed=0).eval()  # LoRA adapters at their (zero) start
    assert isinstance(model.head[-1], SoftCap) and model.head[-1].cap == 0.25
    ab, ba = model_logits(model, fwd, tok.pad_token_id), model_logits(model, rev, tok.pad_token_id)
    torch.testing.assert_close(ab, lm_next_token_logits(path, fwd, tok.pad_token_id), atol=1e-5, rtol=0)
    torch.testing.assert_close(ba, lm_next_token_logits(path, rev, tok.pad_token_id), atol=1e-5, rtol=0)
    assert ab.abs().max() > 0.2 and (ab.abs().max() - 0.25).abs() < 0.05  # the soft-cap bends these logits
    # swap-TTA: the battle's B|A sequence is the swapped battle's A|B one, so the TTA logits mirror exactly
    fs, rs = enc.encode(swap_battles(df), both=True)
    abs_, bas = model_logits(model, fs, tok.pad_token_id), model_logits(model, rs, tok.pad_token_id)
    assert torch.equal(abs_, ba) and torch.equal(bas, ab)
    p = softmax(combine_tta(ab.double().numpy(), ba.double().numpy()))
    q = softmax(combine_tta(abs_.double().numpy(), bas.double().numpy()))
    np.testing.assert_array_equal(p[:, [1, 0, 2]], q)
    assert np.abs(p[:, 0] - p[:, 1]).max() > 1e-4  # not trivially symmetric


def test_verdict_head_options_are_checked():
    with pytest.raises(ConfigError, match=r"model\.head\.init.*layers: 1 and model\.head\.norm: false.*layers: 2"):
        load_config("tiny", {"model.head.init": "verdict"})  # tiny's head has 2 layers and a LayerNorm
    with pytest.raises(ConfigError, match=r"model\.head\.init.*norm: true"):
        load_config("tiny", {"model.head.init": "verdict", "model.head.layers": 1})
    with pytest.raises(ConfigError, match=r"zero_shot.*format\.template: judge"):
        load_config("tiny", {"zero_shot": True})
    load_config("tiny", VERDICT)


def test_trained_verdict_head_reloads_to_its_validation_logits(env, workdir):
    from lmsys_arena.llm import family
    from lmsys_arena.runner import train_run

    cfg = load_config("tiny", {**VERDICT, "train.epochs": 0.5, "train.batch_size": 16, "train.micro_batch": 16})
    train_run(cfg, "runs/verdict", env, only_folds=[0])
    frame = pd.read_parquet("runs/verdict/fold0/valid.parquet")
    head = torch.load("runs/verdict/fold0/head.pt")
    assert sorted(head) == ["0.bias", "0.weight"]  # the SoftCap has no parameters
    valid = rows(env).set_index("id").loc[frame["id"]].reset_index()
    again = family.predict(cfg, valid, workdir / "runs/verdict/fold0")
    np.testing.assert_allclose(softmax(again), frame[PROB_COLS].to_numpy(), atol=1e-5)


# ---------------------------------------------------------------- zero_shot: the untrained judge


def test_zero_shot_judge_is_a_run_with_oof_for_every_row(env, workdir):
    from lmsys_arena.llm import family, judge
    from lmsys_arena.runner import infer_run, score_run, train_run

    cfg = load_config("tiny", {**JUDGE, **judge.OVERRIDES})
    metrics = train_run(cfg, "runs/tiny-judge", env)
    train = rows(env)
    oof = pd.read_parquet("runs/tiny-judge/oof.parquet")
    assert len(oof) == len(train) and set(oof["id"]) == set(train["id"]) and sorted(oof["fold"].unique()) == [0, 1]
    np.testing.assert_allclose(oof[PROB_COLS].sum(axis=1), 1, atol=1e-9)
    assert json.loads(Path("runs/tiny-judge/metrics.json").read_text())["rows"] == len(train) == metrics["rows"]
    assert score_run("runs/tiny-judge")["oof_logloss"] == pytest.approx(metrics["oof_logloss"])
    for f in (0, 1):
        fold = Path(f"runs/tiny-judge/fold{f}")
        meta = json.loads((fold / "llm_meta.json").read_text())
        assert meta["zero_shot"] and meta["verdict_tokens"] == {"A": 38, "B": 39, "C": 40}  # bytes, after 6 specials
        assert 0 < meta["verdict_mass"] < 1 and -1 <= meta["order_consistency"] <= 1
        assert not (fold / "adapter").exists() and not (fold / "head.pt").exists()  # nothing trained
        raw = np.load(fold / "valid_raw.npz")
        assert (raw["ab"] < 0).all() and (np.exp(raw["ab"]).sum(1) < 1).all()  # log-probabilities of 3 tokens

    # swap-averaging: P(A | x) = P(B | swap(x)) exactly, and the OOF is the swap-average of both orders
    fold0 = Path("runs/tiny-judge/fold0")
    p = softmax(family.predict(cfg, train, fold0))
    q = softmax(family.predict(cfg, swap_battles(train), fold0))
    np.testing.assert_array_equal(p[:, [1, 0, 2]], q)
    assert np.abs(p[:, 0] - p[:, 1]).max() > 1e-4
    by_id = oof.set_index("id").loc[train["id"], PROB_COLS].to_numpy()
    np.testing.assert_allclose(by_id, p, atol=1e-6)  # the fold does not matter

    # the judge's probabilities are the verdict-initialised head's before training (both renormalise A, B, C)
    from lmsys_arena.llm.backbones import load_tokenizer, resolve_backbone
    from lmsys_arena.llm.format import BattleEncoder
    from lmsys_arena.llm.model import build_model

    lc = family.options(load_config("tiny", VERDICT))
    path = resolve_backbone("tiny")
    tok = load_tokenizer(path)
    fwd, rev = BattleEncoder(tok, lc.format).encode(train.head(8), both=True)
    model = build_model(path, lc.model, CPU, seed=0).eval()
    ab, ba = (model_logits(model, s, tok.pad_token_id).double().numpy() for s in (fwd, rev))
    np.testing.assert_allclose(softmax(combine_tta(ab, ba)), p[:8], atol=1e-6)

    # make infer takes it: the test rows scored once for both folds (the second fold reuses the first's)
    test = infer_run("runs/tiny-judge")
    assert len(test) == len(Competition(Path(env.data)).test()) and Path("runs/tiny-judge/test.parquet").exists()


def test_judge_command_writes_the_run(env, workdir, data):
    from lmsys_arena.cli import main

    small = Path(env.data)
    main(["folds", "--data", str(small), "--folds", "2"])
    main(["judge", "--model", "tiny", "--data", str(small), "--set", "format.max_len=640", "--only-folds", "0"])
    run = workdir / "runs" / f"tiny-judge-{small.name}"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["zero_shot"] and cfg["format"]["template"] == "judge" and cfg["format"]["max_len"] == 640
    assert cfg["model"]["aux"]["features"] is None and not cfg["model"]["aux"]["source_bias"]
    assert (run / "fold0" / "valid.parquet").exists() and (run / "oof.parquet").exists()
    with pytest.raises(SystemExit) as e:
        main(["judge", "--model", "xgb", "--data", str(small)])
    assert e.value.code == 2
