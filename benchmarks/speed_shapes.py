"""The speed benchmarks' workload and its accounting: model shapes (random weights, built in code), the LoRA they
train, lognormal row lengths, the FLOPs counted for MFU, and the stock model configs the baselines run.
Imported by ``llm_speed.py`` (and ``kernel_gpu_sim.py``); see its docstring for what is measured."""

from __future__ import annotations

import contextlib
import gc
import sys

import numpy as np
import torch


def gemma3_270m_config(small: bool):
    """Gemma 3 270M's text shape (the gemma3-270m config's backbone): 18 layers, hidden 640, 5 of 6 layers
    with 512-token sliding windows."""
    from transformers import Gemma3TextConfig

    if small:
        return Gemma3TextConfig(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=32,
            sliding_window=64,
            pad_token_id=0,
        )
    return Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=512,
        pad_token_id=0,
    )


# LoRA as in each shape's project config: gemma2-2b-it r=16 on q,k,v,o,gate; gemma3-270m r=32 on all linear layers
LORA = {
    "gemma2-2b": {
        "r": 16,
        "alpha": 32,
        "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"],
    },
    "gemma3-270m": {"r": 32, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
}


def gemma2_2b_config(small: bool):
    from transformers import Gemma2Config

    if small:
        return Gemma2Config(
            vocab_size=1024,
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            pad_token_id=0,
        )
    return Gemma2Config(
        vocab_size=256000,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=4096,
        pad_token_id=0,
    )


SHAPES = {"gemma2-2b": gemma2_2b_config, "gemma3-270m": gemma3_270m_config}  # shape -> config(small)


def lognormal_lengths(n: int, mean: float, max_len: int, seed: int = 0, match_mean: bool = True) -> np.ndarray:
    """Row lengths: lognormal (sigma 0.8) clipped to [32, max_len]. ``match_mean``: mu is solved so that
    the clipped lengths average ``mean``; otherwise mu = log(mean) - sigma^2/2, the mean before clipping
    (clipping at 2,048 then leaves ~650 for mean 720: what the earlier GPU runs in docs/results.md used,
    --raw-lognormal)."""
    sigma = 0.8
    z = np.random.default_rng(seed).standard_normal(n)
    draw = lambda mu: np.clip(np.exp(mu + sigma * z), 32, max_len)  # noqa: E731
    mu = np.log(mean) - sigma**2 / 2
    if match_mean:
        lo, hi = mu - 2, mu + 2
        for _ in range(60):
            mu = (lo + hi) / 2
            lo, hi = (mu, hi) if draw(mu).mean() < mean else (lo, mu)
    return draw(mu).astype(np.int64)


def make_seqs(lengths, vocab: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=int(n)).astype(np.int32) for n in lengths]


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" in n)
    return sum(p.numel() for p in model.parameters()) - emb


def nonembed_count(cfg) -> int:
    """Non-embedding weights of the Gemma-2 shape (q,k,v,o + gate,up,down + 4 norms per layer + final norm)."""
    h, i, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    return L * (h * q + 2 * h * kv + q * h + 3 * h * i + 4 * h) + h


def attention_flops(cfg, lengths: np.ndarray, passes: int) -> float:
    """FLOPs of the attention scores (QK^T and AV, causal: half the square) of rows of ``lengths``:
    2 * s^2 * heads * head_dim per layer and forward pass; ``passes`` = 1 forward, 3 forward + backward.
    Sliding-window layers count only the window."""
    L, d = cfg.num_hidden_layers, cfg.num_attention_heads * cfg.head_dim
    window = getattr(cfg, "sliding_window", None) or 10**9
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * L
    s = lengths.astype(np.float64)
    full = 2 * (s**2).sum() * d  # 2 matmuls x 2 FLOPs x s^2/2 pairs x d
    w = np.minimum(s, window)
    slide = 4 * (s * w - w**2 / 2).sum() * d  # s*w - w^2/2 (query, key) pairs: at most `window` keys each
    return passes * sum(slide if t == "sliding_attention" else full for t in types)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def modeling_module(cfg):
    """The transformers modeling module of ``cfg``'s model type (where liger-kernel swaps classes and the
    rotary function for the whole process)."""
    from transformers import AutoModel

    return sys.modules[AutoModel._model_mapping[type(cfg)].__module__]


@contextlib.contextmanager
def stock_modeling(saved: dict | None, module):
    """The modeling module's own classes and functions (``saved``: its namespace before any patch) while the
    stock baselines (naive loop, HF Trainer) are built and run; the patched ones again afterwards."""
    patched = {k: v for k, v in vars(module).items() if saved and k in saved and v is not saved[k]}
    vars(module).update({k: saved[k] for k in patched})
    try:
        yield
    finally:
        vars(module).update(patched)


def stock_config(cfg, **kw):
    """``cfg`` as the project loads it (llm.backbones.load_backbone): attention soft-capping off, so sdpa runs."""
    d = {k: v for k, v in cfg.to_dict().items() if not ("num_labels" in kw and k in ("id2label", "label2id"))}
    cfg = type(cfg)(**{**d, **kw})
    if hasattr(cfg, "attn_logit_softcapping"):
        cfg.attn_logit_softcapping = None
    cfg._attn_implementation = "eager"  # Gemma-2 refuses sdpa at init; fine once soft-capping is off
    return cfg
