"""Fold merging (mean / svd / concat; fold heads kept or averaged) and export (adapter merged into the
backbone's weights) with the tiny backbone on CPU; fold folders are built from random LoRA weights and heads
(no training).

    .venv/bin/python -m pytest tests/test_llm_merge.py
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lmsys_arena.config import load_config
from lmsys_arena.llm import export as E
from lmsys_arena.llm import merge as M
from lmsys_arena.llm.backbones import resolve_backbone
from lmsys_arena.llm.family import options
from lmsys_arena.llm.model import build_model
from lmsys_arena.llm.trained import load_trained, save_trained, write_meta

CPU = torch.device("cpu")
K = 3


def _cfg(**over):
    return load_config("tiny", over)


def make_fold(d: Path, path: Path, cfg: dict, seed: int) -> Path:
    """A finished fold folder with random LoRA weights, head and aux head (statistics buffers too)."""
    mcfg = options(cfg).model
    model = build_model(path, mcfg, CPU, seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for n, p in model.backbone.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for p in [*model.head.parameters(), *model.aux.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.aux.mean.copy_(torch.randn(model.aux.mean.shape, generator=g))
        model.aux.std.copy_(torch.rand(model.aux.std.shape, generator=g) + 0.5)
    save_trained(model, d)
    write_meta(d, {"backbone": "tiny", "backbone_dir": str(path), "rows": 10, "aux_features": mcfg.aux_features})
    (d / "train_done").write_text("ok\n")
    return d


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMSYS_MODELS_DIR", str(root / "models"))
        cfg = _cfg()
        path = resolve_backbone("tiny")
        folds = [make_fold(root / f"fold{f}", path, cfg, seed=f) for f in range(K)]
        yield {"root": root, "cfg": cfg, "path": path, "folds": folds, "mcfg": options(cfg).model}


def _weights(path, mcfg, d) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in load_trained(path, mcfg, d, CPU).backbone.state_dict().items()}


@pytest.fixture(scope="module")
def deltas(setup):
    """Per weight: the folds' mean merged update (base + mean dW) and the base weights."""
    s = setup
    from lmsys_arena.llm.backbones import load_backbone

    base = {k: v.double() for k, v in load_backbone(s["path"], s["mcfg"], CPU).state_dict().items()}
    fold_w = [_weights(s["path"], s["mcfg"], d) for d in s["folds"]]
    mean_dw = {k: sum(w[k] for w in fold_w) / K - base[k] for k in base}
    return base, mean_dw


def _merged_dw(setup, out, base):
    w = _weights(setup["path"], setup["mcfg"], out)
    return {k: w[k] - base[k] for k in base}


def test_concat_is_the_exact_mean_of_the_updates(setup, deltas):
    base, mean_dw = deltas
    out = setup["root"] / "concat"
    info = M.merge_folds(setup["folds"], out, method="concat")
    cfg = json.loads((out / "adapter/adapter_config.json").read_text())
    assert cfg["r"] == 8 * K and info["rank"] == 8 * K and cfg["lora_alpha"] == 16 * K
    got = _merged_dw(setup, out, base)
    assert sum(v.abs().max() > 0 for v in mean_dw.values()) == 10  # 5 modules x 2 layers have updates
    for k in base:
        torch.testing.assert_close(got[k], mean_dw[k], atol=1e-5, rtol=0)
    meta = json.loads((out / "llm_meta.json").read_text())
    assert meta["merge"]["method"] == "concat" and len(meta["merge"]["folds"]) == K
    assert (out / "train_done").exists()


def test_svd_full_rank_is_exact_and_lower_rank_is_best_rank_k(setup, deltas):
    base, mean_dw = deltas
    full = setup["root"] / "svd-full"
    info = M.merge_folds(setup["folds"], full, method="svd", rank=8 * K)
    assert info["max_rel_error"] < 1e-6 and len(info["rel_error"]) == 10
    got = _merged_dw(setup, full, base)
    for k in base:
        torch.testing.assert_close(got[k], mean_dw[k], atol=1e-5, rtol=0)

    low = setup["root"] / "svd-low"
    info = M.merge_folds(setup["folds"], low, method="svd")  # default rank: the folds' r
    assert info["rank"] == 8 and json.loads((low / "adapter/adapter_config.json").read_text())["r"] == 8
    got = _merged_dw(setup, low, base)
    for module, err in info["rel_error"].items():
        k = module.removeprefix("base_model.model.") + ".weight"
        dw = mean_dw[k]
        U, S, Vh = torch.linalg.svd(dw)
        tail = float(S[8:].square().sum().sqrt() / S.square().sum().sqrt())
        assert err == pytest.approx(tail, rel=1e-4, abs=1e-7)
        assert 0.01 < err < 1
        best = (U[:, :8] * S[:8]) @ Vh[:8]  # Eckart-Young: the truncated SVD
        torch.testing.assert_close(got[k], best, atol=1e-5, rtol=0)
        assert float((got[k] - dw).norm() / dw.norm()) == pytest.approx(tail, rel=1e-3)


def test_factor_mean_update_with_rslora_scale_and_small_modules():
    g = torch.Generator().manual_seed(0)
    As = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(2)]  # in = 6 < rK = 8
    Bs = [torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    scale = M.lora_scale(8, 4, rslora=True)
    assert scale == 4.0
    want = scale * sum(b @ a for a, b in zip(As, Bs)) / 2
    B, A, err = M.factor_mean_update(As, Bs, scale, rank=10)  # more than the update can have: zero-padded
    assert B.shape == (5, 10) and A.shape == (10, 6) and err == 0.0
    torch.testing.assert_close(B @ A, want)
    assert M._alpha_for(1.0, 10, rslora=True) == pytest.approx(10**0.5) and M._alpha_for(2.0, 8, False) == 16


def test_mean_is_the_elementwise_mean_and_heads_are_averaged(setup):
    from safetensors.torch import load_file

    out = setup["root"] / "mean"
    info = M.merge_folds(setup["folds"], out, method="mean", heads="mean")
    assert info["rank"] == 8 and "rel_error" not in info
    cfg = json.loads((out / "adapter/adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"]) == (8, 16)
    got = load_file(str(out / "adapter/adapter_model.safetensors"))
    folds = [load_file(str(d / "adapter/adapter_model.safetensors")) for d in setup["folds"]]
    assert set(got) == set(folds[0]) and len(got) == 20
    for k in got:
        torch.testing.assert_close(got[k], sum(f[k] for f in folds) / K)
    head = torch.load(out / "head.pt", weights_only=True)
    heads = [torch.load(d / "head.pt", weights_only=True) for d in setup["folds"]]
    assert set(head) == set(heads[0]) and {"aux.mean", "aux.std", "aux.source", "1.weight"} <= set(head)
    for k in head:
        torch.testing.assert_close(head[k], sum(h[k] for h in heads) / K)
    with pytest.raises(ValueError, match="method mean keeps the folds' rank 8"):
        M.merge_folds(setup["folds"], setup["root"] / "bad", method="mean", rank=4)


def test_kept_heads_score_as_the_mean_of_the_fold_logits(setup, tmp_path, monkeypatch):
    """Folds with one adapter and different heads: with ``heads=keep`` the merged model's logits are the mean of
    the folds' (one order: swap-TTA averages probabilities), which the element-wise mean of the heads
    (LayerNorm, GELU) is not."""
    from lmsys_arena.data import Competition
    from lmsys_arena.llm.family import predict
    from lmsys_arena.llm.heads import MeanOf

    monkeypatch.setenv("LMSYS_MODELS_DIR", str(setup["root"] / "models"))
    folds = []
    for k, d in enumerate(setup["folds"]):
        folds.append(shutil.copytree(d, tmp_path / f"fold{k}"))
        shutil.rmtree(folds[-1] / "adapter")
        shutil.copytree(setup["folds"][0] / "adapter", folds[-1] / "adapter")
    df = Competition(Path(__file__).resolve().parents[1] / "input" / "sample").train().head(6)
    cfg = {**setup["cfg"], "tta": False}
    fold_logits = np.mean([predict(cfg, df, d) for d in folds], axis=0)

    info = M.merge_folds(folds, tmp_path / "keep", method="concat")
    assert info["heads"] == "keep"
    assert json.loads((tmp_path / "keep/llm_meta.json").read_text())["head_members"] == K
    head = torch.load(tmp_path / "keep/head.pt", weights_only=True)
    fold0 = torch.load(folds[0] / "head.pt", weights_only=True)
    assert set(head) == {f"members.{k}.{key}" for k in range(K) for key in fold0}
    model = load_trained(setup["path"], setup["mcfg"], tmp_path / "keep", CPU)
    assert isinstance(model.head, MeanOf) and isinstance(model.aux, MeanOf) and len(model.aux.members) == K
    np.testing.assert_allclose(predict(cfg, df, tmp_path / "keep"), fold_logits, atol=1e-5)

    M.merge_folds(folds, tmp_path / "mean", method="concat", heads="mean")
    averaged = predict(cfg, df, tmp_path / "mean")
    assert np.abs(averaged - fold_logits).max() > 1e-3

    torch.save({**head, "1.weight": fold0["1.weight"]}, tmp_path / "keep/head.pt")
    with pytest.raises(ValueError, match=r"keep/head.pt: keys \['1.weight'\] are outside the 3 head members"):
        load_trained(setup["path"], setup["mcfg"], tmp_path / "keep", CPU)
    with pytest.raises(M.MergeError, match="merge heads 'median': one of keep, mean"):
        M.merge_folds(folds, tmp_path / "bad", heads="median")


def test_merged_folder_loads_and_predicts(setup, monkeypatch):
    from lmsys_arena.data import Competition
    from lmsys_arena.llm.family import predict

    monkeypatch.setenv("LMSYS_MODELS_DIR", str(setup["root"] / "models"))
    out = setup["root"] / "predict"
    M.merge_folds(setup["folds"], out, method="svd", rank=4)
    df = Competition(Path(__file__).resolve().parents[1] / "input" / "sample").train().head(5)
    logits = predict(setup["cfg"], df, out)
    assert logits.shape == (5, 3) and np.isfinite(logits).all() and np.abs(logits).max() > 0


def test_mismatched_folds_are_refused_naming_fold_and_key(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("LMSYS_MODELS_DIR", str(setup["root"] / "models"))
    path, folds = setup["path"], setup["folds"]
    other_r = make_fold(tmp_path / "r4", path, _cfg(**{"model.lora.r": 4}), seed=7)
    with pytest.raises(M.MergeError, match=r"r4: adapter config 'r' is 4, .*fold0 has 8"):
        M.merge_folds([folds[0], other_r], tmp_path / "out")
    other_t = make_fold(tmp_path / "qv", path, _cfg(**{"model.lora.target_modules": ["q_proj", "v_proj"]}), seed=7)
    with pytest.raises(M.MergeError, match=r"qv: adapter config 'target_modules'"):
        M.merge_folds([folds[0], other_t], tmp_path / "out", method="concat")
    other_l = tmp_path / "layer1"  # (peft matches layers_to_transform on "model.layers.N": a bare decoder has none)
    shutil.copytree(folds[1], other_l)
    ac = json.loads((other_l / "adapter/adapter_config.json").read_text())
    (other_l / "adapter/adapter_config.json").write_text(json.dumps({**ac, "layers_to_transform": [0, 1]}))
    with pytest.raises(M.MergeError, match=r"layer1: adapter config 'layers_to_transform'"):
        M.merge_folds([folds[0], other_l], tmp_path / "out")
    other_h = make_fold(tmp_path / "head16", path, _cfg(**{"model.head.hidden": 16}), seed=7)
    with pytest.raises(M.MergeError, match=r"head16: head key '1.weight' has shape \(16, 64\), .*\(32, 64\)"):
        M.merge_folds([folds[0], other_h], tmp_path / "out")
    other_a = make_fold(tmp_path / "aux", path, _cfg(**{"model.aux.features": ["a_chars", "a_words"]}), seed=7)
    with pytest.raises(M.MergeError, match=r"aux"):
        M.merge_folds([folds[0], other_a], tmp_path / "out")
    (unfinished := tmp_path / "unfinished").mkdir()
    with pytest.raises(M.MergeError, match=r"unfinished: not a finished fold \(no train_done\)"):
        M.merge_folds([folds[0], unfinished], tmp_path / "out")
    with pytest.raises(M.MergeError, match="one of mean, svd, concat"):
        M.merge_folds(folds, tmp_path / "out", method="ties")
    assert not (tmp_path / "out").exists()


def test_export_loads_without_peft_and_gives_the_same_logits(setup, monkeypatch):
    from lmsys_arena.llm.batching import collate
    from lmsys_arena.llm.family import exported_config

    monkeypatch.setenv("LMSYS_MODELS_DIR", str(setup["root"] / "models"))
    s = setup
    merged = s["root"] / "export-src"
    M.merge_folds(s["folds"], merged, method="concat")
    rng = np.random.default_rng(0)
    seqs = [rng.integers(10, 200, size=n).astype(np.int32) for n in (7, 23, 15)]
    aux = torch.from_numpy(rng.normal(size=(3, len(s["mcfg"].aux_features) + 1)).astype(np.float32))

    def logits(path, d):
        with torch.no_grad():
            return load_trained(path, s["mcfg"], d, CPU)(*collate(seqs, 0, "right"), aux=aux)

    ref = logits(s["path"], merged)
    assert ref.abs().max() > 0
    for dtype, tol in (("fp32", 1e-4), ("fp16", 2e-2)):
        out = s["root"] / f"export-{dtype}"
        info = E.export_merged(s["cfg"], merged, out, dtype=dtype)
        bb = out / "backbone"
        assert info["dtype"] == dtype and not (out / "adapter").exists() and (out / "train_done").exists()
        meta = json.loads((out / "llm_meta.json").read_text())
        assert meta["merged_backbone"] is True and meta["backbone_dir"] == str(bb)
        assert meta["aux_features"] == s["mcfg"].aux_features
        assert {"tokenizer.json", "tokenizer_config.json", E.MERGED_MARKER} <= {p.name for p in bb.iterdir()}
        from safetensors import safe_open

        with safe_open(str(bb / "model.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {dtype.replace("fp", "F")}
        model = load_trained(bb, s["mcfg"], out, CPU)
        assert not any("lora" in n for n, _ in model.named_modules())
        assert "peft" not in type(model.backbone).__module__
        torch.testing.assert_close(logits(bb, out), ref, atol=tol, rtol=tol)
    with pytest.raises(ValueError, match="not an export.*set backbone to the exported folder"):
        load_trained(s["path"], s["mcfg"], out, CPU)  # the stock backbone would score without the adapter
    from lmsys_arena.data import Competition
    from lmsys_arena.llm.family import predict

    df = Competition(Path(__file__).resolve().parents[1] / "input" / "sample").train().head(4)
    got = predict(exported_config(s["cfg"], s["root"] / "export-fp32", "fp32", None), df, s["root"] / "export-fp32")
    np.testing.assert_allclose(got, predict(s["cfg"], df, merged), atol=1e-4)


def test_rslora_folds_concat_and_full_rank_svd_are_exact(setup, tmp_path, monkeypatch):
    """With rslora (scale alpha / sqrt(r)) the merged alpha keeps the scale: alpha sqrt(K) for concat (tiny: alpha 16),
    sqrt(rank) (scale 1) for svd."""
    from lmsys_arena.llm.backbones import load_backbone

    monkeypatch.setenv("LMSYS_MODELS_DIR", str(setup["root"] / "models"))
    cfg = _cfg(**{"model.lora.rslora": True, "model.lora.r": 4})
    mcfg = options(cfg).model
    folds = [make_fold(tmp_path / f"fold{f}", setup["path"], cfg, seed=10 + f) for f in range(2)]
    base = {k: v.double() for k, v in load_backbone(setup["path"], mcfg, CPU).state_dict().items()}
    fold_w = [_weights(setup["path"], mcfg, d) for d in folds]
    for method, rank, alpha in (("concat", None, 16 * 2**0.5), ("svd", 8, 8**0.5)):
        info = M.merge_folds(folds, tmp_path / method, method=method, rank=rank)
        assert info["rank"] == 8 and info["alpha"] == pytest.approx(alpha) and info["rslora"] is True
        got = _weights(setup["path"], mcfg, tmp_path / method)
        for k in base:
            torch.testing.assert_close(got[k], (fold_w[0][k] + fold_w[1][k]) / 2, atol=1e-5, rtol=0)
