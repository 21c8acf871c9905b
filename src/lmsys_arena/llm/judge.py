"""The zero-shot judge (``zero_shot: true``, ``make judge MODEL=<llm config>``): the untrained backbone reads
the battle in the judge template (``format.template: judge``) and its next-token log-probabilities of the
verdict tokens A, B and C (``format.VERDICT_TOKENS``) at the last token are the three logits; with ``tta``
both orders are scored and averaged (``swap.combine_tta``: exactly symmetric).

    make judge MODEL=gemma3-270m DATA=...        # runs/gemma3-270m-judge/: OOF for every train row, metrics
    make infer RUN=gemma3-270m-judge             # test predictions, like any run

Nothing is trained: the llm family's ``fit_fold`` and ``predict`` hand a ``zero_shot`` config to this module, so
``runner.train_run`` writes the run as it writes any other (fold folders with ``valid.parquet``, ``oof.parquet``
with a prediction for every train row, ``metrics.json``), and ``make score`` / ``make ensemble`` / ``make infer``
take it. A fold folder holds ``llm_meta.json`` (``zero_shot: true``, the verdict token ids, the mean probability
mass the model puts on them, the judge's order consistency) and ``valid_raw.npz`` (both orders' logits).
The predictions do not depend on the fold: ``predict`` keeps the last result, so ``make infer`` scores the test
rows once for all folds. Options used: ``backbone``, ``tta``, ``format``, ``model.dtype`` / ``quant`` / ``attn`` /
``compile``, ``infer``; LoRA, head, aux head and ``train`` are not.

The logits are log-probabilities over the whole vocabulary: the three verdict logits (after the LM's final
soft-cap) are computed in fp32, the normaliser (log-sum-exp over the vocabulary) in the model's dtype; softmax
over the three renormalises, as the frame's probabilities do.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lmsys_arena import dist
from lmsys_arena.llm.backbones import DTYPES, load_backbone, load_tokenizer
from lmsys_arena.llm.compile import compile_layers, compile_mode
from lmsys_arena.llm.config import ModelConfig
from lmsys_arena.llm.format import VERDICT_TOKENS, BattleEncoder, verdict_token_ids
from lmsys_arena.llm.heads import head_softcap, output_embedding
from lmsys_arena.llm.infer import score_ddp, score_local, score_multi_gpu
from lmsys_arena.llm.model import PreferenceModel
from lmsys_arena.llm.trained import write_meta

log = logging.getLogger(__name__)

# what `make judge` sets on top of an llm config (the user's --set come after and may change the rest)
OVERRIDES = {"zero_shot": True, "format.template": "judge", "model.aux.features": None, "model.aux.source_bias": False}


class VerdictLogProbs(nn.Module):
    """Pooled final-norm state -> log p(verdict token) for A, B, C under the LM head ``weight`` (vocab, hidden),
    soft-capped as the LM caps its logits. ``weight`` is the backbone's own tensor (not copied)."""

    def __init__(self, weight: torch.Tensor, ids: list[int], softcap: float | None = None):
        super().__init__()
        self.weight, self.softcap = weight.detach(), softcap  # a plain tensor: not a parameter of the head
        self.register_buffer("rows", weight.detach()[torch.as_tensor(ids, device=weight.device)].float().clone())

    def _cap(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.softcap) * self.softcap if self.softcap else x

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        with torch.autocast(pooled.device.type, enabled=False):
            x = pooled.float()
            verdict = self._cap(x @ self.rows.T)
            w = self.weight.detach()
            full = self._cap((x.to(w.dtype) @ w.T).float())
            return verdict - torch.logsumexp(full, dim=1, keepdim=True)


def judge_model(path: Path, mcfg: ModelConfig, device: torch.device) -> PreferenceModel:
    """The backbone (no adapter) with :class:`VerdictLogProbs` as its head, eval mode."""
    backbone = load_backbone(path, mcfg, device).eval()
    ids = verdict_token_ids(load_tokenizer(path))
    head = VerdictLogProbs(output_embedding(backbone, path).to(device), ids, head_softcap(backbone, "verdict"))
    model = PreferenceModel(backbone, head).eval()
    if compile_mode(mcfg.compile, device, training=False):
        compile_layers(model)
    return model


def _load_for_worker(path: str, mcfg: ModelConfig, device: torch.device):
    model = judge_model(Path(path), mcfg, device)
    return model, load_tokenizer(Path(path)).pad_token_id, DTYPES[mcfg.dtype]


def score(cfg: dict, df: pd.DataFrame, desc: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """``(logits (n, 3) swap-averaged where cfg['tta'], {"ab", "ba"} both orders' log-probabilities, info)`` of
    ``df`` by the untrained judge; NaN rows where ``LMSYS_DEADLINE`` stopped it (as the llm family)."""
    from lmsys_arena.llm.family import _backbone, _combine, _inputs, _model_cfg, options

    lc = options(cfg)
    rank, world, local = dist.init()
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    path = _backbone(lc, rank)
    tok = load_tokenizer(path)
    enc, mcfg = BattleEncoder(tok, lc.format), _model_cfg(lc, device, for_infer=True)
    seqs, _ = _inputs(enc, df, lc.tta, desc, None)
    order = canonical_order(seqs)
    seqs = [seqs[i] for i in order]
    n_gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    workers = min(lc.infer.workers or n_gpus, n_gpus)
    if world == 1 and workers > 1:
        load_fn = functools.partial(_load_for_worker, str(path), mcfg)
        scored = score_multi_gpu(load_fn, seqs, lc.infer, workers, desc=desc)
    else:
        model = judge_model(path, mcfg, device)
        run = score_ddp if world > 1 else score_local
        scored = run(model, seqs, tok.pad_token_id, lc.infer, device, DTYPES[mcfg.dtype], desc=desc)
    logits = np.empty_like(scored)
    logits[order] = scored
    n = len(df)
    verdict = dict(zip(VERDICT_TOKENS, verdict_token_ids(tok)))
    info = {"backbone": lc.backbone, "backbone_dir": str(path), "verdict_tokens": verdict}
    return _combine(logits, n, lc.tta), {"ab": logits[:n], "ba": logits[n:]}, info


def canonical_order(seqs: list[np.ndarray]) -> np.ndarray:
    """The sequences' order by length (longest first), then content: the A|B + B|A sequences of ``x`` and of
    ``swap(x)`` are the same multiset, so in this order both are scored in identical batches, and swap-averaging
    gives P(A | x) = P(B | swap(x)) bit for bit (in the input order, equal-length rows would share batches
    differently, and the logits would differ by float rounding)."""
    return np.asarray(sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), seqs[i].tobytes())), dtype=np.int64)


def _describe(raw: dict[str, np.ndarray]) -> dict:
    """The mean probability the judge puts on the three verdict tokens (low: it does not follow the format) and
    its order consistency (does its A-B margin follow the responses when they swap: metrics.order_consistency)."""
    from lmsys_arena.metrics import order_consistency

    ab = raw["ab"][np.isfinite(raw["ab"]).all(1)]
    out = {"verdict_mass": float(np.exp(ab).sum(1).mean()) if len(ab) else None, "order_consistency": None}
    if len(raw.get("ba", ())):
        ok = np.isfinite(raw["ab"]).all(1) & np.isfinite(raw["ba"]).all(1)
        if ok.any():
            out["order_consistency"] = float(order_consistency(raw["ab"][ok], raw["ba"][ok]))
    return out


def fit_fold(cfg: dict, train: pd.DataFrame, valid: pd.DataFrame, fold_dir: Path, seed: int) -> np.ndarray:
    """No training: the zero-shot logits of ``valid`` (``train`` is not read); ``llm_meta.json`` and
    ``valid_raw.npz`` in ``fold_dir``."""
    fold_dir = Path(fold_dir)
    log.info("%s: zero-shot judge, nothing trained (%d train rows unused)", fold_dir.name, len(train))
    logits, raw, info = score(cfg, valid, f"{fold_dir.name} valid")
    if dist.is_main_process():
        stats = _describe(raw) if len(valid) else {}
        log.info(
            "%s: zero-shot judge: mean verdict mass %s, order consistency %s",
            fold_dir.name, _fmt(stats.get("verdict_mass")), _fmt(stats.get("order_consistency")),
        )  # fmt: skip
        if len(valid):
            np.savez(fold_dir / "valid_raw.npz", id=valid["id"].to_numpy().astype(str), **raw)
        write_meta(fold_dir, {**info, "zero_shot": True, "rows": 0, "seed": seed, "aux_features": [], **stats})
    return logits


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


_LAST: dict = {}  # the last predict call's key and logits (the folds of a run predict the same rows alike)


def _rows_key(cfg: dict, df: pd.DataFrame) -> str:
    h = hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode())
    for row in zip(df["id"], df["prompt"], df["response_a"], df["response_b"]):
        h.update(json.dumps([str(row[0]), *(list(x) for x in row[1:])], default=str).encode())
    return h.hexdigest()


def predict(cfg: dict, df: pd.DataFrame, fold_dir: Path) -> np.ndarray:
    """The zero-shot logits (n, 3) of ``df`` (the fold does not matter); a repeated call on the same rows and
    config returns the last result, unless some of its rows were left unscored by the deadline."""
    key = _rows_key(cfg, df)
    if _LAST.get("key") == key:
        log.info("%s: zero-shot judge: the same %d rows as the last call", Path(fold_dir).name, len(df))
        return _LAST["logits"].copy()
    logits = score(cfg, df, f"{Path(fold_dir).name} predict")[0]
    _LAST.clear()
    if np.isfinite(logits).all():
        _LAST.update(key=key, logits=logits.copy())
    return logits
