"""LLM inference and LoRA-training speed at Gemma-2-2B shape (random weights, built in code).

    python benchmarks/llm_speed.py --out runs/llm_speed.json            # one GPU (H100: the reported numbers)
    python benchmarks/llm_speed.py --small --rows 64 --train-steps 3     # CPU dry run at a tiny shape

Rows have lognormal token lengths (mean ~720, clipped to [32, 2048]). Measured in the same run:

* naive:   HF AutoModelForSequenceClassification, default Gemma-2 config (soft-capping on -> eager
           attention), every batch padded to 2048, arrival order, batch 8;
* project: lmsys_arena.llm inference path (PreferenceModel, sdpa, soft-capping off, length-sorted
           token-budget batches with dynamic padding);
* LoRA training: lmsys_arena.llm.train.Trainer (r=16 on q,k,v,o,gate, bf16, length-grouped batches).

MFU counts matrix-multiply FLOPs of the non-embedding weights N only (attention score FLOPs are
reported separately, not counted): inference 2*N per real (non-pad) token; LoRA training with a
frozen base 4*N per real token (forward 2N + input-gradient backward 2N; no weight gradients for
frozen weights; LoRA's own FLOPs and activation-checkpoint recompute are not counted).
Peak: H100 SXM dense fp16/bf16 989.4 TFLOP/s (``--peak`` to change).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def gemma2_2b_config(small: bool):
    from transformers import Gemma2Config

    if small:
        return Gemma2Config(vocab_size=1024, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=32, pad_token_id=0)
    return Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
                        sliding_window=4096, pad_token_id=0)


def lognormal_lengths(n: int, mean: float, max_len: int, seed: int = 0) -> np.ndarray:
    sigma = 0.8
    mu = np.log(mean) - sigma ** 2 / 2
    return np.clip(np.random.default_rng(seed).lognormal(mu, sigma, n), 32, max_len).astype(np.int64)


def make_seqs(lengths, vocab: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=int(n)).astype(np.int32) for n in lengths]


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" in n)
    return sum(p.numel() for p in model.parameters()) - emb


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def bench_naive(cfg, seqs, device, dtype, max_len: int, batch: int) -> dict:
    from transformers import AutoModelForSequenceClassification

    cfg = type(cfg)(**{**cfg.to_dict(), "num_labels": 3})
    cfg._attn_implementation = "eager"  # what HF picks for Gemma-2 with soft-capping on
    torch.manual_seed(0)
    with device:
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype).eval()
    ids = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
    mask = (ids != 0).astype(np.int64)
    run = lambda a, b: model(input_ids=torch.from_numpy(ids[a:b]).to(device),  # noqa: E731
                             attention_mask=torch.from_numpy(mask[a:b]).to(device)).logits
    run(0, batch)  # warm-up
    sync(device)
    t0 = time.time()
    for a in range(0, len(seqs), batch):
        run(a, a + batch)
    sync(device)
    dt = time.time() - t0
    del model
    return {"seconds": dt, "rows_s": len(seqs) / dt}


def build_project_model(cfg, device, dtype, lora: bool):
    from transformers import AutoModel

    from lmsys_arena.llm.model import PreferenceModel, make_head

    cfg = type(cfg)(**{**cfg.to_dict(), "attn_logit_softcapping": None})
    cfg._attn_implementation = "eager"  # Gemma-2 refuses sdpa at init; fine once soft-capping is off
    torch.manual_seed(0)
    with device:
        backbone = AutoModel.from_config(cfg, dtype=dtype)
    backbone.config._attn_implementation = "sdpa"
    if lora:
        from peft import LoraConfig, get_peft_model

        backbone = get_peft_model(backbone, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                       "gate_proj"]))
    return PreferenceModel(backbone, make_head(cfg.hidden_size).to(device))


def bench_project_infer(cfg, seqs, device, dtype, max_tokens: int) -> dict:
    from lmsys_arena.llm.infer import InferConfig, score_local

    model = build_project_model(cfg, device, dtype, lora=False).eval()
    icfg = InferConfig(max_tokens=max_tokens, max_rows=512)
    score_local(model, seqs[:16], 0, icfg, device, dtype, progress=False)  # warm-up
    sync(device)
    t0 = time.time()
    score_local(model, seqs, 0, icfg, device, dtype, progress=False)
    sync(device)
    dt = time.time() - t0
    n = non_embedding_params(model.backbone)
    del model
    return {"seconds": dt, "rows_s": len(seqs) / dt, "params_nonembed": n}


def bench_train(cfg, seqs, device, dtype, steps: int, batch: int, micro: int, tmp: Path) -> dict:
    from lmsys_arena.llm.train import TrainConfig, Trainer

    model = build_project_model(cfg, device, dtype, lora=True)
    model.train()
    labels = np.random.default_rng(0).integers(0, 3, len(seqs))
    tcfg = TrainConfig(epochs=1, batch_size=batch, micro_batch=micro, swap="none", checkpoint_every=10 ** 9,
                       log_every=10 ** 9)
    warm = 3
    tr = Trainer(model, tcfg, device, dtype, 0, tmp, seed=0)
    tr.fit(seqs, seqs, labels, stop_after=warm)
    sync(device)
    # the same rows the timed steps see: rebuild the plan and count their real tokens
    from lmsys_arena.llm.train import plan_epoch

    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64)
    plan = plan_epoch(lengths, batch, 0, 0, True)
    tokens = int(sum(lengths[b].sum() for b in plan[warm:warm + steps]))
    t0 = time.time()  # the next steps of the same plan on the warmed-up model
    for b in plan[warm:warm + steps]:
        tr._step(b, seqs, seqs, labels, np.zeros(len(seqs), dtype=bool))
    sync(device)
    dt = time.time() - t0
    mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
    del model, tr
    return {"seconds": dt, "steps": steps, "tokens": tokens, "tokens_s": tokens / dt, "max_mem_gib": mem}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--mean-len", type=float, default=720)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--naive-batch", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=65536, help="project inference token budget per batch")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--peak", type=float, default=989.4e12)
    ap.add_argument("--small", action="store_true", help="tiny shape (CPU dry run)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: naive,infer,train")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cfg = gemma2_2b_config(a.small)
    max_len = min(a.max_len, 256) if a.small else a.max_len
    lengths = lognormal_lengths(a.rows, min(a.mean_len, max_len / 3), max_len)
    seqs = make_seqs(lengths, cfg.vocab_size)
    skip = set(filter(None, a.skip.split(",")))
    res = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "rows": a.rows,
           "mean_len": float(lengths.mean()), "max_len": int(lengths.max()), "dtype": str(dtype)}
    print(json.dumps(res), flush=True)
    if "infer" not in skip:
        res["project_infer"] = bench_project_infer(cfg, seqs, device, dtype, a.max_tokens)
        n = res["project_infer"]["params_nonembed"]
        flops = 2 * n * lengths.sum()
        res["project_infer"]["mfu"] = flops / res["project_infer"]["seconds"] / a.peak
        print("project inference", json.dumps(res["project_infer"]), flush=True)
    if "naive" not in skip:
        res["naive_infer"] = bench_naive(cfg, seqs, device, dtype, max_len, a.naive_batch)
        print("naive inference", json.dumps(res["naive_infer"]), flush=True)
        if "project_infer" in res:
            res["infer_speedup"] = res["project_infer"]["rows_s"] / res["naive_infer"]["rows_s"]
    if "train" not in skip:
        import tempfile

        tlen = lognormal_lengths(a.train_batch * (a.train_steps + 3), min(a.mean_len, max_len / 3), max_len, seed=2)
        with tempfile.TemporaryDirectory() as tmp:
            res["lora_train"] = bench_train(cfg, make_seqs(tlen, cfg.vocab_size, 3), device,
                                            torch.bfloat16 if device.type == "cuda" else torch.float32,
                                            a.train_steps, a.train_batch, a.micro_batch, Path(tmp))
        n = res.get("project_infer", {}).get("params_nonembed") or 0
        if n:
            res["lora_train"]["mfu"] = 4 * n * res["lora_train"]["tokens_s"] / a.peak
        print("lora training", json.dumps(res["lora_train"]), flush=True)
    print(json.dumps(res, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
