"""GPU check of the Kaggle kernel: the real entry script in a simulated /kaggle, on 2 GPUs and on 1 GPU.

Builds, in a scratch folder: a small competition folder (the bundled sample's train rows; test = N rows
copied from them with new ids), a LightGBM run (GBDT member and fallback), a random-weight Gemma-2-2B-shape
backbone (26 layers, hidden 2304, vocab 256k; the tiny byte tokenizer) with a LoRA adapter + head trained
for a few steps on fold 0 (the real llm family code), a 50/50 blend, the kernel and its datasets
(our wheel only: the machine's packages stand in for Kaggle's image). Then it runs the entry script with
CUDA_VISIBLE_DEVICES=0,1 and =0 and checks:

* both write a valid submission with every row scored by the LLM (no row filled from the fallback, i.e. no
  NaN/inf on the fp16 path) and agree within 1e-3;
* scoring throughput of the same trained model through the project's inference path (fp16, one GPU) ->
  MFU = (2*N_nonembed*L + attention-score FLOPs) per real sequence / (time * peak), the same count the
  projection uses (the matmul-only MFU is printed too);
* the projected T4 x2 time for 25k test rows x 2 orders for Gemma-2-2B (fp16) and Gemma-2-9B (8-bit), from
  the Gemma-tokenizer token counts in benchmarks/kernel_token_stats.json (made by kernel_projection.py on
  real battles) and FLOPs, scaled to the T4's 65 TFLOP/s fp16 peak at the MFU measured here.

Run (device with 2 GPUs; it has no xgboost/lightgbm/polars: carry wheels, see docs/kaggle.md):

    # here, once: cp312 wheels of what the GPU image lacks, in a git-ignored folder that the device call carries
    echo /.whl-kernel/ >> .git/info/exclude
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl-kernel lightgbm==4.7.0 polars==2.1.0 polars-runtime-32==2.1.0
    # on the 2-GPU machine (carry .whl-kernel):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl-kernel/*.whl && export PYTHONPATH=/tmp/site:$PWD/src || exit
    set -o pipefail; PYTHONUNBUFFERED=1 python3 benchmarks/kernel_gpu_sim.py --out $OUT 2>&1 \\
        | tee $OUT/kernel_gpu_sim.log

    python benchmarks/kernel_gpu_sim.py --small --rows 40 --out /tmp/ksim   # CPU dry run, tiny shape
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

PEAKS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L4": 121e12, "T4": 65e12}  # dense fp16/bf16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_competition(dst: Path, test_rows: int) -> Path:
    import pandas as pd

    src = REPO / "input" / "sample"
    dst.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(src / "train.csv", dtype=str, keep_default_na=False)
    train.to_csv(dst / "train.csv", index=False)
    reps = int(np.ceil(test_rows / len(train)))
    test = pd.concat([train] * reps, ignore_index=True).iloc[:test_rows]
    test = test[["id", "prompt", "response_a", "response_b"]].copy()
    test["id"] = [str(9_000_000 + i) for i in range(len(test))]
    test.to_csv(dst / "test.csv", index=False)
    sub = pd.DataFrame({"id": test["id"], "winner_model_a": 1 / 3, "winner_model_b": 1 / 3, "winner_tie": 1 / 3})
    sub.to_csv(dst / "sample_submission.csv", index=False)
    return dst


def make_backbone(out: Path, small: bool) -> Path:
    """Random-weight Gemma-2-2B shape (or a tiny one) + the tiny byte tokenizer, as an HF folder."""
    import torch
    from transformers import AutoModel

    from lmsys_arena.llm.backbones import tiny_tokenizer

    if (out / "config.json").exists():
        return out
    tok = tiny_tokenizer()
    from speed_shapes import gemma2_2b_config  # the same Gemma-2-2B shape as the speed benchmark

    cfg = gemma2_2b_config(small)
    cfg.pad_token_id = tok.pad_token_id
    if small:
        cfg.vocab_size = len(tok)  # the byte tokenizer's vocabulary
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    with torch.device(dev):
        model = AutoModel.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    log(f"backbone {out}: {n / 1e9:.2f}B params (random, seed 0), built and saved in {time.time() - t0:.0f}s")
    del model
    return out


def train_runs(comp: Path, backbone: Path, max_len: int, train_rows: int, small: bool) -> None:
    from lmsys_arena.config import load_config
    from lmsys_arena.data import Competition
    from lmsys_arena.folds import make_folds, write_folds
    from lmsys_arena.run_inputs import RunSpec
    from lmsys_arena.runner import infer_run, train_run
    from lmsys_arena.runs import Run

    write_folds(make_folds(Competition(comp).train(), k=2, seed=42), Path("folds") / f"{comp.name}.csv")
    t0 = time.time()
    gb = load_config("lgbm", {"num_boost_round": 30, "early_stopping_rounds": 10})
    train_run(gb, Path("runs/gbdt"), RunSpec(data=str(comp), max_rows=600))
    infer_run(Path("runs/gbdt"))
    log(f"GBDT run trained + inferred in {time.time() - t0:.0f}s")
    t0 = time.time()
    llm = load_config(
        "tiny",
        {
            "backbone": str(backbone),
            "format.max_len": max_len,
            "model.dtype": "bf16",
            "train.batch_size": 8,
            "train.micro_batch": 4 if not small else 8,
            "model.grad_ckpt": not small,
            "infer.max_tokens": 32768,
            "infer.max_rows": 64,
        },
    )
    for key in ("search_space", "tune"):  # tuning sections, not training settings
        llm.pop(key, None)
    train_run(llm, Path("runs/llm"), RunSpec(data=str(comp), max_rows=2 * train_rows), only_folds=[0])
    log(f"LLM run (fold 0, {train_rows} rows, LoRA at the backbone's shape) trained in {time.time() - t0:.0f}s")
    Run.named("blend").write_blend_config(
        {
            "family": "blend",
            "name": "blend",
            "members": ["gbdt", "llm"],
            "weights": [0.5, 0.5],
            "temperature": 1.0,
            "space": "logprob",
        }
    )


def run_kernel(comp: Path, devices: str, out: Path) -> dict:
    from lmsys_arena import kernels as K

    problems, report = K.simulate_kernel(
        Path("kernels/gpusim"),
        comp,
        Path("kernels/datasets"),
        timeout=900,
        env_extra={"CUDA_VISIBLE_DEVICES": devices},
        copy_to=out,
    )
    if problems:
        raise SystemExit(f"kernel on GPUs {devices!r} failed: {problems}")
    log(
        f"kernel on CUDA_VISIBLE_DEVICES={devices}: {report['wall_seconds']}s, {report['cuda_devices']} GPU(s), "
        f"runs {report['runs']}, rows filled {report['rows_filled']}"
    )
    return report


def measure_mfu(comp: Path, backbone: Path, peak: float) -> dict:
    """The trained fold-0 model through the project's inference path on one GPU, fp16, swap-TTA sequences."""
    import torch

    from kernel_projection import SHAPES, non_embedding_params, seq_flops
    from lmsys_arena.config import apply_overrides
    from lmsys_arena.data import Competition
    from lmsys_arena.llm.backbones import DTYPES, load_tokenizer
    from lmsys_arena.llm.family import _model_cfg, options
    from lmsys_arena.llm.format import BattleEncoder, lengths
    from lmsys_arena.llm.infer import score_local
    from lmsys_arena.llm.side_inputs import aux_matrix
    from lmsys_arena.llm.trained import load_trained
    from lmsys_arena.runs import Run

    cfg, _spec = Run.named("llm").model_config()
    lc = options(apply_overrides(cfg, {"infer.dtype": "fp16"}))
    device = torch.device("cuda", 0)
    mcfg = _model_cfg(lc, device, for_infer=True)
    model = load_trained(backbone, mcfg, Run.named("llm").fold_dir(0), device)
    enc = BattleEncoder(load_tokenizer(backbone), lc.format)
    test = Competition(comp).test()
    fwd, rev = enc.encode(test, both=True)
    seqs = fwd + rev
    aux = aux_matrix(mcfg, test)  # the side-input rows of both orders (None without an aux head)
    side = None if aux is None else np.concatenate(aux)
    L = lengths(seqs)
    pad = enc.tok.pad_token_id
    score_local(
        model, seqs[:64], pad, lc.infer, device, DTYPES["fp16"], desc="warmup", aux=None if side is None else side[:64]
    )
    torch.cuda.synchronize()
    t0 = time.time()
    logits = score_local(model, seqs, pad, lc.infer, device, DTYPES["fp16"], desc="mfu", aux=side)
    torch.cuda.synchronize()
    secs = time.time() - t0
    n = non_embedding_params(SHAPES["gemma2-2b-it"])
    flops = seq_flops(SHAPES["gemma2-2b-it"], L)  # 2*N*L + attention scores, as in the projection
    res = {
        "sequences": len(seqs),
        "real_tokens": int(L.sum()),
        "mean_len": float(L.mean()),
        "seconds": secs,
        "seq_per_s": len(seqs) / secs,
        "tok_per_s": L.sum() / secs,
        "mfu": flops / secs / peak,
        "mfu_matmul_only": 2.0 * n * L.sum() / secs / peak,
        "finite": bool(np.isfinite(logits).all()),
    }
    log(
        f"one GPU, fp16: {len(seqs)} sequences (mean {L.mean():.0f} tokens) in {secs:.1f}s = "
        f"{res['tok_per_s']:.0f} tok/s, MFU {res['mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s counting 2*N*L + "
        f"attention scores (N={n / 1e9:.2f}B non-embedding; {res['mfu_matmul_only']:.1%} counting 2*N*L only), "
        f"finite={res['finite']}"
    )
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=600, help="test rows (x2 orders) the kernel scores")
    ap.add_argument("--train-rows", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=1536, help="format.max_len (gemma2-2b-it uses 1536)")
    ap.add_argument("--small", action="store_true", help="tiny shape (CPU dry run of this script)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default="runs/kernel_gpu_sim", help="where results, logs and submissions go")
    ap.add_argument("--peak", type=float, default=None, help="GPU dense fp16 peak FLOP/s (default: by name)")
    args = ap.parse_args(argv)

    import torch

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="kernel_gpu_sim_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ["LMSYS_MODELS_DIR"] = str(work / "models")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    n_gpu = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0) if n_gpu else "cpu"
    peak = args.peak or next((v for k, v in PEAKS.items() if k in name), 989.4e12)
    log(f"{n_gpu} GPU(s): {name}; torch {torch.__version__}; work {work}")
    if not args.small and n_gpu < 2:
        raise SystemExit("needs 2 GPUs (or --small for a CPU dry run)")

    from lmsys_arena import kernels as K
    from lmsys_arena.llm.backbones import ensure_tiny_backbone  # noqa: F401  (fails early if the family is absent)

    comp = make_competition(work / "lmsys-chatbot-arena", args.rows)
    backbone = make_backbone(
        work / "models" / ("gemma2-small-random" if args.small else "gemma2-2b-random"), args.small
    )
    train_runs(comp, backbone, args.max_len, args.train_rows, args.small)
    # the backbone as a Kaggle model source (the simulation links the local folder in; no 5 GB copy)
    K.build_kernel(
        "blend",
        "gpusim",
        K.KernelOptions(
            user="gpusim", fallback="gbdt", model_sources={"llm": "gpusim/gemma-2/transformers/random-2b/1"}
        ),
    )
    K.build_datasets(["gpusim"], wheels="minimal")

    results = {"device": name, "gpus": n_gpu, "rows": args.rows, "max_len": args.max_len}
    if n_gpu >= 2:
        r2 = run_kernel(comp, "0,1", out / "k2")
        r1 = run_kernel(comp, "0", out / "k1")
    else:
        r2 = r1 = run_kernel(comp, "", out / "k1")
    results["kernel_2gpu"], results["kernel_1gpu"] = r2, r1
    import pandas as pd

    cols = ["winner_model_a", "winner_model_b", "winner_tie"]
    s2 = pd.read_csv(out / ("k2" if n_gpu >= 2 else "k1") / "submission.csv", dtype={"id": str}).set_index("id")
    s1 = pd.read_csv(out / "k1" / "submission.csv", dtype={"id": str}).set_index("id")
    diff = float(np.abs(s2.loc[s1.index, cols].to_numpy() - s1[cols].to_numpy()).max())
    ok_rows = r2["runs"]["llm"]["rows_done"] == args.rows and r1["runs"]["llm"]["rows_done"] == args.rows
    results.update(
        {
            "max_abs_diff_1v2": diff,
            "all_rows_llm_scored": ok_rows,
            "no_fallback_fill": r2["rows_filled"] == 0 and r1["rows_filled"] == 0,
        }
    )
    log(
        f"2 GPUs vs 1 GPU: max |dp| = {diff:.2e} (bar 1e-3); every row scored by the LLM in both: {ok_rows}; "
        f"kernel wall {r2['wall_seconds']}s (2 GPUs) vs {r1['wall_seconds']}s (1 GPU), LLM step "
        f"{r2['runs']['llm']['seconds']}s vs {r1['runs']['llm']['seconds']}s"
    )

    if n_gpu:
        from kernel_projection import STATS_FILE, print_projection

        m = measure_mfu(comp, backbone, peak)
        results["mfu"] = m
        if STATS_FILE.exists():
            stats, source = json.loads(STATS_FILE.read_text()), f"Gemma-tokenizer counts from {STATS_FILE.name}"
        else:
            from lmsys_arena.llm.format import lengths  # noqa: F401

            stats = {
                "configs": {
                    "gemma2-2b-it": {"max_len": args.max_len, "lengths": [m["mean_len"]]},
                    "gemma2-9b-it": {"max_len": args.max_len, "lengths": [m["mean_len"]]},
                }
            }
            source = "byte-tokenizer counts of this run (no kernel_token_stats.json)"
        log(f"token counts: {source}")
        results["projection"] = print_projection(stats, m["mfu"], f"measured here on {name}, fp16, one GPU")
        nine = [p for p in results["projection"] if p["config"] == "gemma2-9b-it"]
        if nine:
            log(
                f"bar: projected Gemma-2-9B swap-TTA on 25k rows <= 4.5 h: {nine[0]['hours']:.2f} h -> "
                f"{'PASS' if nine[0]['hours'] <= 4.5 else 'FAIL'} (projection at the measured MFU, not a T4 run)"
            )
    passed = diff <= 1e-3 and ok_rows and results["no_fallback_fill"]
    results["pass"] = passed
    (out / "kernel_gpu_sim.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    log(f"{'PASS' if passed else 'FAIL'}: results in {out / 'kernel_gpu_sim.json'}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    if not passed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
