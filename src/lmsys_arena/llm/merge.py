"""One model from an LLM run's fold models (``merge_folds``); an adapter merged into its backbone's weights
(``export_merged``) is :mod:`lmsys_arena.llm.export`.

Fold merging (``make merge RUN=...``): the K fold folders (``adapter/``, ``head.pt``) -> one folder of the
same layout, so :func:`lmsys_arena.llm.family.predict` scores it like a fold. LoRA methods
(``dW_f = s B_f A_f`` per module, ``s = alpha / r``, or ``alpha / sqrt(r)`` with rslora):

* ``mean``: the element-wise mean of the ``lora_A`` and of the ``lora_B`` tensors, same r / alpha (what the
  LMSYS 1st-place team did). Not the mean of the updates: ``mean(B) mean(A) != mean(B A)``;
* ``svd``: the exact mean update ``mean_f dW_f`` re-factorised at ``rank`` (default: the folds' r) by a
  truncated SVD, ``B' = U sqrt(S)``, ``A' = sqrt(S) V^T`` with scale 1 (alpha = rank, or sqrt(rank) with
  rslora). The SVD is computed from QR factors of the stacked ``B``s and ``A``s (a ``rK x rK`` core), never
  from the dense ``out x in`` update. Its relative Frobenius error per module is recorded (0 at
  ``rank >= r K``: the best rank-k approximation, Eckart-Young);
* ``concat``: exact: ``A' = [A_1; ...; A_K]`` (rank r K), ``B' = [B_1 ... B_K] / K``, alpha set so the scale
  is the folds'.

Heads (peft takes one ``modules_to_save`` per adapter, so they are handled here), ``heads``:

* ``keep`` (default): every fold's text head and aux head, ``head.pt`` holding fold ``k``'s state under
  ``members.k.`` and ``llm_meta.json`` ``head_members: K``; the loaded model averages their logits over its
  one backbone pass (:class:`lmsys_arena.llm.heads.MeanOf`). The heads are a few thousand parameters each;
  their layer norm and the aux head's GELU make a mean of their weights differ from the mean of their outputs;
* ``mean``: the element-wise mean of the heads' tensors, buffers included (one head, as a fold has).

Folds whose adapter configs (r, alpha, target modules, layers,
...), adapter tensors, head keys / shapes or aux features differ are refused, naming the fold and the key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch

from lmsys_arena.llm.backbones import atomic_dir
from lmsys_arena.llm.trained import ADAPTER_DIR, HEAD_FILE, HEAD_MEMBERS, member_prefix, read_meta, write_meta

log = logging.getLogger(__name__)

METHODS = ("mean", "svd", "concat")
HEADS = ("keep", "mean")
DONE = "train_done"  # llm.family.DONE (not imported: family imports this module's callers)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# adapter_config.json entries that must agree between folds (the rest: paths, versions, dropout, ...)
SAME_CONFIG = (
    "peft_type",
    "r",
    "lora_alpha",
    "use_rslora",
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "rank_pattern",
    "alpha_pattern",
    "use_dora",
    "bias",
    "modules_to_save",
    "fan_in_fan_out",
    "lora_bias",
)


class MergeError(ValueError):
    """Fold models that cannot be merged (different configs or shapes, unfinished folds)."""


# ---------------------------------------------------------------- reading the folds


@dataclasses.dataclass
class Fold:
    dir: Path
    config: dict
    weights: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    meta: dict


def _read_fold(d: Path) -> Fold:
    d = Path(d)
    if not (d / DONE).exists():
        raise MergeError(f"{d}: not a finished fold (no {DONE})")
    adapter = d / ADAPTER_DIR
    if not (adapter / ADAPTER_CONFIG).exists():
        raise MergeError(f"{d}: no {ADAPTER_DIR}/{ADAPTER_CONFIG} (a merged-backbone export cannot be merged)")
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    if (adapter / ADAPTER_WEIGHTS).exists():
        from safetensors.torch import load_file

        weights = load_file(str(adapter / ADAPTER_WEIGHTS))
    elif (adapter / "adapter_model.bin").exists():
        weights = torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True)
    else:
        raise MergeError(f"{d}: no adapter weights in {adapter}")
    head = torch.load(d / HEAD_FILE, map_location="cpu", weights_only=True)
    return Fold(d, config, weights, head, read_meta(d) or {})


def _norm(v):
    """Config values compared as sets where peft saves a set as a list in any order."""
    return sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v


def _check_same(folds: list[Fold]) -> None:
    ref = folds[0]
    for f in folds[1:]:
        _check_same_config(ref, f)
        _check_same_tensors(ref, f)
        _check_same_meta(ref, f)


def _check_same_config(ref: Fold, f: Fold) -> None:
    for key in SAME_CONFIG:
        a, b = _norm(ref.config.get(key)), _norm(f.config.get(key))
        if a != b:
            raise MergeError(
                f"{f.dir}: adapter config {key!r} is {b!r}, {ref.dir} has {a!r}: the folds' adapters differ"
            )


def _check_same_tensors(ref: Fold, f: Fold) -> None:
    """The same adapter tensors and head keys, of the same shapes."""
    for what, x, y in (("adapter tensor", ref.weights, f.weights), ("head key", ref.head, f.head)):
        for key in sorted(set(x) ^ set(y)):
            has, lacks = (ref.dir, f.dir) if key in x else (f.dir, ref.dir)
            raise MergeError(f"{lacks}: has no {what} {key!r}, which {has} has")
        for key in x:
            if x[key].shape != y[key].shape:
                raise MergeError(
                    f"{f.dir}: {what} {key!r} has shape {tuple(y[key].shape)}, {ref.dir} has {tuple(x[key].shape)}"
                )


def _check_same_meta(ref: Fold, f: Fold) -> None:
    """Aux features must agree (the aux head reads them); another backbone is only warned of."""
    a, b = ref.meta.get("aux_features"), f.meta.get("aux_features")
    if a != b:
        raise MergeError(f"{f.dir}: llm_meta.json 'aux_features' differ from {ref.dir}'s ({b} vs {a})")
    if ref.meta.get("backbone") != f.meta.get("backbone"):
        log.warning("%s: trained on backbone %s, %s on %s", f.dir, f.meta.get("backbone"), ref.dir,
                    ref.meta.get("backbone"))  # fmt: skip


def lora_scale(alpha: float, r: int, rslora: bool) -> float:
    """peft's LoRA scaling: ``alpha / r``, or ``alpha / sqrt(r)`` with rslora."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def _alpha_for(scale: float, r: int, rslora: bool) -> int | float:
    """The alpha giving ``scale`` at rank ``r`` (an int where it is one)."""
    alpha = scale * (math.sqrt(r) if rslora else r)
    return int(round(alpha)) if abs(alpha - round(alpha)) < 1e-9 else alpha


def _lora_pairs(folds: list[Fold]) -> list[tuple[str, str, str]]:
    """``(module, lora_A key, lora_B key)`` of the adapter; other tensors (DoRA, biases, ...) are refused."""
    keys = folds[0].weights
    pairs, seen = [], set()
    for k in sorted(keys):
        if ".lora_A." in k:
            b = k.replace(".lora_A.", ".lora_B.")
            if b not in keys:
                raise MergeError(f"{folds[0].dir}: adapter tensor {k!r} has no {b!r}")
            pairs.append((k.split(".lora_A.")[0], k, b))
            seen.update((k, b))
    other = sorted(set(keys) - seen)
    if other:
        raise MergeError(
            f"{folds[0].dir}: adapter tensors other than lora_A / lora_B ({other[:3]}...) cannot be merged "
            "by svd / concat; use method mean"
        )
    return pairs


# ---------------------------------------------------------------- the methods


def _mean_tensors(tensors: list[torch.Tensor]) -> torch.Tensor:
    t0 = tensors[0]
    if not (t0.is_floating_point() or t0.is_complex()):
        if any(not torch.equal(t, t0) for t in tensors[1:]):
            raise MergeError("integer tensors differ between folds; they cannot be averaged")
        return t0.clone()
    return (sum(t.double() for t in tensors) / len(tensors)).to(t0.dtype)


def mean_state(dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys (float64 sums, each tensor's own dtype)."""
    return {k: _mean_tensors([d[k] for d in dicts]) for k in dicts[0]}


def factor_mean_update(
    As: list[torch.Tensor], Bs: list[torch.Tensor], scale: float, rank: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(B', A', relative error)``: the best rank-``rank`` factors of ``mean_f scale B_f A_f`` (float64),
    ``B' A'`` the truncated SVD ``U_k S_k V_k^T`` with ``B' = U_k sqrt(S_k)``, ``A' = sqrt(S_k) V_k^T``
    (zero-padded to ``rank``). From QR factors of the stacked B's and A's: ``rK x rK`` work per module."""
    A = torch.cat([a.double() for a in As], 0)  # (rK, in)
    B = torch.cat([b.double() for b in Bs], 1) * (scale / len(Bs))  # (out, rK)
    Qb, Rb = torch.linalg.qr(B)
    Qa, Ra = torch.linalg.qr(A.T)
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T)
    k = min(rank, len(S))
    root = S[:k].sqrt()
    Bn = torch.zeros(B.shape[0], rank, dtype=torch.float64)
    An = torch.zeros(rank, A.shape[1], dtype=torch.float64)
    Bn[:, :k] = (Qb @ U[:, :k]) * root
    An[:k] = root[:, None] * (Vh[:k] @ Qa.T)
    total = float(S.square().sum())
    err = math.sqrt(float(S[k:].square().sum()) / total) if total > 0 else 0.0
    return Bn, An, err


def _merge_adapter(folds: list[Fold], method: str, rank: int | None) -> tuple[dict, dict, dict]:
    """(config, tensors, summary) of the merged adapter."""
    cfg = dict(folds[0].config)
    r, alpha, rslora = int(cfg["r"]), cfg["lora_alpha"], bool(cfg.get("use_rslora"))
    if method == "mean":
        weights, new_r, new_alpha, info = _merge_mean(folds, r, alpha, rank)
    else:
        weights, new_r, new_alpha, info = _merge_factors(folds, method, rank)
    cfg.update(r=new_r, lora_alpha=new_alpha, init_lora_weights=True, inference_mode=True)
    summary = {
        "method": method,
        "rank": new_r,
        "alpha": new_alpha,
        "rslora": rslora,
        "folds_r": r,
        "folds_alpha": alpha,
        "modules": sum(".lora_A." in k for k in weights),
        **info,
    }
    return cfg, weights, summary


def _merge_mean(folds: list[Fold], r: int, alpha, rank: int | None) -> tuple[dict, int, int | float, dict]:
    """Method mean: (tensors, r, alpha, summary extras); the folds' r and alpha are kept."""
    if rank not in (None, r):
        raise MergeError(f"method mean keeps the folds' rank {r}; rank={rank} needs method svd")
    return mean_state([f.weights for f in folds]), r, alpha, {}


def _merge_factors(folds: list[Fold], method: str, rank: int | None) -> tuple[dict, int, int | float, dict]:
    """Methods concat and svd, module by module: (tensors, r, alpha, summary extras)."""
    cfg = folds[0].config
    r, alpha, rslora = int(cfg["r"]), cfg["lora_alpha"], bool(cfg.get("use_rslora"))
    K = len(folds)
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise MergeError(f"{folds[0].dir}: adapters with rank_pattern / alpha_pattern: only method mean merges them")
    scale = lora_scale(alpha, r, rslora)
    weights, errors = {}, {}
    for module, ka, kb in _lora_pairs(folds):
        As, Bs = [f.weights[ka] for f in folds], [f.weights[kb] for f in folds]
        if As[0].shape[0] != r:
            raise MergeError(f"{folds[0].dir}: {ka!r} has rank {As[0].shape[0]}, the config says r={r}")
        if method == "concat":
            weights[ka], weights[kb] = _concat_factors(As, Bs)
        else:
            Bn, An, errors[module] = factor_mean_update(As, Bs, scale, rank or r)
            dtype = As[0].dtype
            weights[ka], weights[kb] = An.to(dtype).contiguous(), Bn.to(dtype).contiguous()
    if method == "concat":
        return weights, r * K, _alpha_for(scale, r * K, rslora), {}
    return weights, rank or r, _alpha_for(1.0, rank or r, rslora), _error_summary(errors)


def _concat_factors(As: list[torch.Tensor], Bs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A', B')`` of method concat: the A's stacked, the B's side by side over K (scale unchanged)."""
    A = torch.cat(As, 0).contiguous()
    B = (torch.cat([b.double() for b in Bs], 1) / len(Bs)).to(Bs[0].dtype).contiguous()
    return A, B


def _error_summary(errors: dict[str, float]) -> dict:
    """Method svd's relative errors, per module and at worst / on average."""
    return {
        "rel_error": errors,
        "max_rel_error": max(errors.values(), default=0.0),
        "mean_rel_error": sum(errors.values()) / max(len(errors), 1),
    }


# ---------------------------------------------------------------- the merged folder


def merge_folds(
    fold_dirs: list[Path], out_dir: Path, method: str = "mean", rank: int | None = None, heads: str = "keep"
) -> dict:
    """One adapter + the heads from the fold models -> ``out_dir/{adapter/, head.pt, llm_meta.json,
    train_done}`` (a fold folder's layout: ``llm.family.predict(cfg, df, out_dir)`` scores it). Returns a
    summary (method, heads, rank, folds, per-module relative error for svd, ...), also stored in
    llm_meta.json (``merge``)."""
    _check_merge_args(fold_dirs, method, rank, heads)
    t0 = time.time()
    out_dir = Path(out_dir)
    folds = [_read_fold(d) for d in fold_dirs]
    _check_same(folds)
    config, weights, summary = _merge_adapter(folds, method, rank)
    head = _merge_heads(folds, heads)
    summary = {**summary, "heads": heads, "folds": [str(f.dir) for f in folds], "seconds": round(time.time() - t0, 1)}
    _write_merged(out_dir, config, weights, head, folds, summary)
    log.info(
        "merged %d folds (%s, rank %d, heads %s%s) -> %s",
        len(folds),
        method,
        summary["rank"],
        heads,
        f", max relative error {summary['max_rel_error']:.3g}" if "max_rel_error" in summary else "",
        out_dir,
    )
    return summary


def _merge_heads(folds: list[Fold], heads: str) -> dict[str, torch.Tensor]:
    """``head.pt``'s state: the folds' heads side by side (keep) or their element-wise mean."""
    if heads == "mean":
        return mean_state([f.head for f in folds])
    return {member_prefix(k) + key: v for k, f in enumerate(folds) for key, v in f.head.items()}


def _check_merge_args(fold_dirs: list[Path], method: str, rank: int | None, heads: str) -> None:
    if method not in METHODS:
        raise MergeError(f"merge method {method!r}: one of {', '.join(METHODS)}")
    if heads not in HEADS:
        raise MergeError(f"merge heads {heads!r}: one of {', '.join(HEADS)}")
    if rank is not None and rank < 1:
        raise MergeError(f"merge rank must be >= 1, got {rank}")
    if len(fold_dirs) < 1:
        raise MergeError("no fold folders to merge")


def _write_merged(out_dir: Path, config: dict, weights: dict, head: dict, folds: list[Fold], summary: dict) -> None:
    """A fold folder's layout; ``train_done`` last, so a half-written folder is never taken for a model."""
    from safetensors.torch import save_file

    from lmsys_arena.io import atomic_path

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DONE).unlink(missing_ok=True)
    with atomic_dir(out_dir / ADAPTER_DIR) as tmp:
        save_file(weights, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    with atomic_path(out_dir / HEAD_FILE) as tmp:
        torch.save(head, tmp)
    m0 = folds[0].meta
    write_meta(
        out_dir,
        {
            "backbone": m0.get("backbone"),
            "backbone_dir": m0.get("backbone_dir"),
            "rows": [f.meta.get("rows") for f in folds],
            "aux_features": m0.get("aux_features", []),
            **({HEAD_MEMBERS: len(folds)} if summary["heads"] == "keep" else {}),
            "merge": summary,
        },
    )
    (out_dir / DONE).write_text("ok\n")
