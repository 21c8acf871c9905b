"""``model.kernels`` (fused kernels through liger-kernel): the option validates, an unusable ``liger`` is refused
with one line naming ``model.kernels`` and the reason (here: no CUDA device; the other reasons through a stand-in
liger module), ``none`` leaves the model as it was loaded; and ``benchmarks/llm_speed.py``'s HF Trainer baseline
and T4 inference path run on a CPU at a tiny shape.

    .venv/bin/python -m pytest tests/test_llm_kernels.py
"""

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from lmsys_arena.config import load_config
from lmsys_arena.llm import fused
from lmsys_arena.llm.backbones import ensure_tiny_backbone, load_backbone
from lmsys_arena.llm.config import ModelConfig
from lmsys_arena.llm.fused import apply_kernels
from lmsys_arena.schema import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)  # a device object only: nothing is put on it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return ensure_tiny_backbone(tmp_path_factory.mktemp("models") / "tiny-gemma2")


@pytest.fixture
def decoder(tiny):
    return load_backbone(tiny, ModelConfig(dtype="fp32"), CPU)


# ---------------------------------------------------------------- the option


@pytest.mark.parametrize("value", ["none", "liger"])
def test_kernels_values_are_accepted(value):
    assert load_config("tiny", {"model.kernels": value})["model"]["kernels"] == value


def test_kernels_default_is_none():
    assert ModelConfig().kernels == "none"
    assert load_config("tiny")["model"]["kernels"] == "none"


@pytest.mark.parametrize("value", ["fused", "Liger", True, None])
def test_other_kernels_values_are_config_errors_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"model\.kernels must be one of 'none', 'liger'"):
        load_config("tiny", {"model.kernels": value})


# ---------------------------------------------------------------- refusals


def test_liger_on_cpu_is_refused_by_the_loader_and_the_model_builder(tiny):
    from lmsys_arena.llm.model import build_model

    mcfg = ModelConfig(dtype="fp32", kernels="liger")
    for build in (lambda: load_backbone(tiny, mcfg, CPU), lambda: build_model(tiny, mcfg, CPU, seed=0)):
        with pytest.raises(ConfigError) as e:
            build()
        msg = str(e.value)
        assert msg.startswith("model.kernels: liger needs a CUDA GPU") and "runs on cpu" in msg, msg
        assert "\n" not in msg and "set model.kernels: none" in msg


def test_liger_on_cpu_stops_a_tiny_training_run_with_one_error_line(llm_env, workdir, caplog):
    import logging
    import shutil

    from lmsys_arena.cli import main

    (workdir / "folds").mkdir()
    shutil.copy(llm_env.folds_file, workdir / "folds" / "small.csv")  # where the CLI looks for the data's folds
    argv = ["train", "--data", llm_env.data, "--model", "tiny", "--run", "kern", "--only-folds", "0"]
    argv += ["--set", "model.kernels=liger"]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="lmsys_arena"), pytest.raises(SystemExit) as e:
        main(argv)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert e.value.code == 3 and len(errors) == 1, errors  # a config error (EXIT_BAD_INPUT), one line
    assert "ConfigError: model.kernels: liger needs a CUDA GPU" in errors[0]
    assert not (Path("runs") / "kern").exists()  # refused before the run folder is written


def test_8bit_weights_on_cpu_are_refused_before_the_run_folder(llm_env, workdir, caplog):
    import shutil

    from lmsys_arena.cli import main

    (workdir / "folds").mkdir()
    shutil.copy(llm_env.folds_file, workdir / "folds" / "small.csv")
    argv = ["train", "--data", llm_env.data, "--model", "tiny", "--run", "q8", "--only-folds", "0"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--set", "model.quant=8bit"])
    assert e.value.code != 0 and "model.quant=8bit needs a CUDA GPU" in caplog.text
    assert not (Path("runs") / "q8").exists()


@pytest.fixture
def data(llm_inputs, tmp_path_factory):
    return llm_inputs(tmp_path_factory.mktemp("kernels"), 40)


def test_liger_without_triton_is_refused(decoder, monkeypatch):
    monkeypatch.setattr(fused, "_have", lambda m: m != "triton")
    with pytest.raises(ConfigError, match=r"^model\.kernels: liger needs Triton, which is not installed"):
        apply_kernels(decoder, "liger", CUDA)


def test_liger_not_installed_is_refused_naming_the_extra(decoder, monkeypatch):
    monkeypatch.setattr(fused, "_have", lambda m: m != "liger_kernel")
    with pytest.raises(ConfigError, match=r"needs liger-kernel.*pip install 'lmsys-arena\[kernels\]'"):
        apply_kernels(decoder, "liger", CUDA)


def fake_liger(monkeypatch, table: dict) -> None:
    """A stand-in ``liger_kernel.transformers.monkey_patch`` with ``MODEL_TYPE_TO_APPLY_LIGER_FN = table``."""
    pkg, sub, mp = (types.ModuleType(n) for n in ("liger_kernel", "liger_kernel.transformers", "x"))
    mp.__name__ = "liger_kernel.transformers.monkey_patch"
    mp.MODEL_TYPE_TO_APPLY_LIGER_FN = table
    sub.monkey_patch, pkg.transformers = mp, sub
    for name, mod in (("liger_kernel", pkg), ("liger_kernel.transformers", sub), (mp.__name__, mp)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(fused, "_have", lambda m: True)


def test_liger_patches_rmsnorm_glu_and_rotary_only(decoder, monkeypatch):
    calls = []

    def apply_liger_kernel_to_gemma2(
        rope=True, cross_entropy=False, fused_linear_cross_entropy=True, rms_norm=True, geglu=True, model=None
    ):
        calls.append({"model": model, "rope": rope, "rms_norm": rms_norm, "geglu": geglu, "ce": cross_entropy,
                      "flce": fused_linear_cross_entropy})  # fmt: skip

    fake_liger(monkeypatch, {"gemma2": apply_liger_kernel_to_gemma2})
    assert apply_kernels(decoder, "liger", CUDA) is decoder
    assert calls == [{"model": decoder, "rope": True, "rms_norm": True, "geglu": True, "ce": False, "flce": False}]


def test_a_multimodal_wrapper_is_patched_through_its_language_model(decoder, monkeypatch):
    seen = []
    fake_liger(monkeypatch, {"gemma2": lambda rope=True, rms_norm=True, geglu=True, model=None: seen.append(model)})
    wrapper = nn.Module()
    wrapper.config = types.SimpleNamespace(model_type="gemma3")
    wrapper.language_model = decoder
    apply_kernels(wrapper, "liger", CUDA)
    assert seen == [decoder]


def test_a_model_type_liger_does_not_patch_is_refused(decoder, monkeypatch):
    fake_liger(monkeypatch, {"llama": lambda model=None: None, "qwen2": lambda model=None: None})
    with pytest.raises(ConfigError) as e:
        apply_kernels(decoder, "liger", CUDA)
    msg = str(e.value)
    assert msg.startswith("model.kernels: liger has no patch for model type 'gemma2' (Gemma2Model)"), msg
    assert "patches llama, qwen2" in msg


def test_a_patch_that_rejects_the_instance_is_refused(decoder, monkeypatch):
    def apply(rms_norm=True, model=None):
        raise TypeError("The model must be Gemma3ForConditionalGeneration.")

    fake_liger(monkeypatch, {"gemma2": apply})
    with pytest.raises(ConfigError, match=r"cannot patch Gemma2Model \(gemma2\): The model must be"):
        apply_kernels(decoder, "liger", CUDA)


def test_an_unimportable_liger_is_refused(decoder, monkeypatch):
    monkeypatch.setattr(fused, "_have", lambda m: True)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"could not import liger-kernel \(ModuleNotFoundError"):
        apply_kernels(decoder, "liger", CUDA)


# ---------------------------------------------------------------- none


def _snapshot(model: nn.Module) -> dict:
    return {
        "classes": [type(m) for m in model.modules()],
        "instance_attrs": [sorted(k for k in vars(m) if not k.startswith("_")) for m in model.modules()],
        "forwards": [m for m in model.modules() if "forward" in vars(m)],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def test_none_leaves_the_model_unchanged(tiny, decoder):
    from transformers.models.gemma2 import modeling_gemma2

    module_before = dict(vars(modeling_gemma2))
    before = _snapshot(decoder)
    ids = torch.randint(3, 200, (2, 11))
    with torch.no_grad():
        out_before = decoder(input_ids=ids).last_hidden_state
    for device in (CPU, CUDA):  # none touches nothing, whatever the device
        assert apply_kernels(decoder, "none", device) is decoder
    after = _snapshot(decoder)
    assert after["classes"] == before["classes"] and after["instance_attrs"] == before["instance_attrs"]
    assert after["forwards"] == [] == before["forwards"]  # no module's forward was rebound
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    with torch.no_grad():
        assert torch.equal(decoder(input_ids=ids).last_hidden_state, out_before)
    assert dict(vars(modeling_gemma2)) == module_before  # no class or rotary function swapped


# ---------------------------------------------------------------- the benchmark on a CPU


@pytest.fixture(scope="module")
def llm_speed():
    spec = importlib.util.spec_from_file_location("llm_speed", ROOT / "benchmarks" / "llm_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SMALL = ["--small", "--rows", "16", "--warm-steps", "1", "--train-steps", "2", "--train-batch", "4"]


def test_benchmark_times_the_hf_trainer_baseline_beside_the_project_loop(llm_speed, capsys):
    res = llm_speed.main([*SMALL, "--micro-batch", "2", "--skip", "naive,infer"])  # about 10 s on 2 CPU cores
    hf, tr = res["hf_trainer"], res["lora_train"]
    assert hf["tokens_s"] > 0 and hf["steps"] == tr["steps"] == 2
    assert hf["micro_batch"] == 2 and hf["grad_accum"] == 2  # the project's rows per pass and per step
    assert 0 < hf["tokens"] <= hf["padded_tokens"] and hf["mfu"] > 0
    assert res["train_speedup_vs_trainer"] == pytest.approx(tr["tokens_s"] / hf["tokens_s"])
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith("SUMMARY") and "| trainer " in summary and " tok/s mfu " in summary


def test_hf_trainer_baseline_halves_its_pass_until_it_fits(llm_speed, monkeypatch):
    tried = []

    def fake(cfg, seqs, labels, device, dtype, a, max_len, tmp, micro=0):
        tried.append(micro)
        if micro > 4:  # stock HF modules keep more activations than the project's loop
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"micro_batch": micro, "grad_accum": a.train_batch // micro}

    baselines = sys.modules["speed_baselines"]  # llm_speed's sibling module, imported with it
    monkeypatch.setattr(baselines, "bench_hf_trainer", fake)
    a = argparse.Namespace(trainer_micro_batch=0, micro_batch=32, micro_tokens=32768, train_batch=24)
    hf = baselines.bench_hf_trainer_fitting(None, [], [], torch.device("cpu"), torch.float32, a, 2048)
    assert tried == [12, 6, 3] and hf == {"micro_batch": 3, "grad_accum": 8, "oom_rows_per_pass": [12, 6]}


def test_benchmark_t4_path_is_a_separate_row(llm_speed):
    res = llm_speed.main([*SMALL, "--skip", "naive,train", "--t4"])
    t4, best = res["infer_t4_path"], res["project_infer"]
    assert t4["rows_s"] > 0 and t4["dtype"] == "fp32" and t4["flash_sdp"] is False  # a CPU runs fp32
    assert set(best) <= set(t4) and "dtype" not in best  # the existing keys stay as they were
    assert torch.backends.cuda.flash_sdp_enabled()  # the attention flags are restored


def test_benchmark_parity_compares_logits_and_gradients(llm_speed):
    res = llm_speed.main([*SMALL, "--skip", "naive,infer,train", "--parity", "--parity-rows", "4"])
    pa = res["kernels_parity"]  # none against none here (a GPU run compares --kernels liger)
    assert pa["rows"] == 4 and pa["logits_rel_diff"] == 0.0 and pa["grads_rel_diff"] == 0.0


def test_benchmark_kernels_liger_goes_through_the_project_refusal(llm_speed):
    with pytest.raises(ConfigError, match=r"^model\.kernels: liger needs a CUDA GPU"):
        llm_speed.main([*SMALL, "--skip", "naive,train", "--kernels", "liger"])


def test_a_liger_trained_run_is_served_without_liger_in_a_kaggle_kernel(tmp_path):
    """Fused kernels are a training-speed choice: the kernel's config drops them (its wheelhouse has none)."""
    from lmsys_arena.config import load_config
    from lmsys_arena.llm.kaggle import prepare_for_kernel

    cfg = load_config("tiny", {"model.kernels": "liger"})
    out = prepare_for_kernel(cfg, {"precision": {"dtype": "fp16"}}, tmp_path, tmp_path, {"infer.quant": "8bit"})
    assert out["model"]["kernels"] == "none" and out["infer"]["dtype"] == "fp16" and out["infer"]["quant"] == "8bit"
