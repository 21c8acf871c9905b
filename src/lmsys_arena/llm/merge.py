"""One model from an LLM run's fold models (``merge_folds``), and an adapter merged into its backbone's
weights (``export_merged``).

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

Heads: peft takes one ``modules_to_save`` per adapter, so the heads (text head and ``aux.*``, buffers
included) are averaged by hand, element-wise. Folds whose adapter configs (r, alpha, target modules, layers,
...), adapter tensors, head keys / shapes or aux features differ are refused, naming the fold and the key.

Export (``make export RUN=...``): the single model's adapter merged into the full-precision backbone
(fp32; never a quantised one), saved as an HF folder ``backbone/`` in ``dtype`` with the backbone's
tokenizer files and a marker file (:data:`model.MERGED_MARKER`), beside ``head.pt`` and ``llm_meta.json``
(``merged_backbone: true``). :func:`model.load_trained` loads it without peft; 8-bit weights are made at
load time from these (``infer.quant: 8bit``), not saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch

from lmsys_arena.llm.backbones import DTYPES, atomic_dir, load_backbone, resolve_backbone
from lmsys_arena.llm.model import ADAPTER_DIR, HEAD_FILE, MERGED_MARKER, read_meta, write_meta

log = logging.getLogger(__name__)

METHODS = ("mean", "svd", "concat")
DONE = "train_done"  # llm.family.DONE (not imported: family imports this module's callers)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BACKBONE_DIR = "backbone"

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
        for key in SAME_CONFIG:
            a, b = _norm(ref.config.get(key)), _norm(f.config.get(key))
            if a != b:
                raise MergeError(
                    f"{f.dir}: adapter config {key!r} is {b!r}, {ref.dir} has {a!r}: the folds' adapters differ"
                )
        for what, x, y in (("adapter tensor", ref.weights, f.weights), ("head key", ref.head, f.head)):
            for key in sorted(set(x) ^ set(y)):
                has, lacks = (ref.dir, f.dir) if key in x else (f.dir, ref.dir)
                raise MergeError(f"{lacks}: has no {what} {key!r}, which {has} has")
            for key in x:
                if x[key].shape != y[key].shape:
                    raise MergeError(
                        f"{f.dir}: {what} {key!r} has shape {tuple(y[key].shape)}, {ref.dir} has {tuple(x[key].shape)}"
                    )
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


def _mean_state(dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
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
    K = len(folds)
    info: dict = {}
    if method == "mean":
        if rank not in (None, r):
            raise MergeError(f"method mean keeps the folds' rank {r}; rank={rank} needs method svd")
        weights = _mean_state([f.weights for f in folds])
        new_r, new_alpha = r, alpha
    else:
        if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
            raise MergeError(
                f"{folds[0].dir}: adapters with rank_pattern / alpha_pattern: only method mean merges them"
            )
        scale = lora_scale(alpha, r, rslora)
        weights, errors = {}, {}
        for module, ka, kb in _lora_pairs(folds):
            As, Bs = [f.weights[ka] for f in folds], [f.weights[kb] for f in folds]
            if As[0].shape[0] != r:
                raise MergeError(f"{folds[0].dir}: {ka!r} has rank {As[0].shape[0]}, the config says r={r}")
            dtype = As[0].dtype
            if method == "concat":
                weights[ka] = torch.cat(As, 0).contiguous()
                weights[kb] = (torch.cat([b.double() for b in Bs], 1) / K).to(Bs[0].dtype).contiguous()
            else:
                Bn, An, errors[module] = factor_mean_update(As, Bs, scale, rank or r)
                weights[ka], weights[kb] = An.to(dtype).contiguous(), Bn.to(dtype).contiguous()
        if method == "concat":
            new_r, new_alpha = r * K, _alpha_for(scale, r * K, rslora)
        else:
            new_r, new_alpha = rank or r, _alpha_for(1.0, rank or r, rslora)
            info = {
                "rel_error": errors,
                "max_rel_error": max(errors.values(), default=0.0),
                "mean_rel_error": sum(errors.values()) / max(len(errors), 1),
            }
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


def merge_folds(fold_dirs: list[Path], out_dir: Path, method: str = "mean", rank: int | None = None) -> dict:
    """One adapter + head (+ aux head) from the fold models -> ``out_dir/{adapter/, head.pt, llm_meta.json,
    train_done}`` (a fold folder's layout: ``llm.family.predict(cfg, df, out_dir)`` scores it). Returns a
    summary (method, rank, folds, per-module relative error for svd, ...), also stored in llm_meta.json
    (``merge``)."""
    from safetensors.torch import save_file

    from lmsys_arena.io import atomic_path

    if method not in METHODS:
        raise MergeError(f"merge method {method!r}: one of {', '.join(METHODS)}")
    if rank is not None and rank < 1:
        raise MergeError(f"merge rank must be >= 1, got {rank}")
    if len(fold_dirs) < 1:
        raise MergeError("no fold folders to merge")
    t0 = time.time()
    out_dir = Path(out_dir)
    folds = [_read_fold(d) for d in fold_dirs]
    _check_same(folds)
    config, weights, summary = _merge_adapter(folds, method, rank)
    head = _mean_state([f.head for f in folds])
    summary = {**summary, "folds": [str(f.dir) for f in folds], "seconds": round(time.time() - t0, 1)}

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
            "merge": summary,
        },
    )
    (out_dir / DONE).write_text("ok\n")
    log.info(
        "merged %d folds (%s, rank %d%s) -> %s",
        len(folds),
        method,
        summary["rank"],
        f", max relative error {summary['max_rel_error']:.3g}" if "max_rel_error" in summary else "",
        out_dir,
    )
    return summary


# ---------------------------------------------------------------- export


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.index.json", "config.json")


def _copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """The backbone folder's other top-level files (tokenizer, chat template, generation config), where the
    saved model did not write its own."""
    import fnmatch

    copied = []
    for p in sorted(src.iterdir()):
        if not p.is_file() or p.name.startswith(".") or (dst / p.name).exists():
            continue
        if any(fnmatch.fnmatch(p.name, pat) for pat in WEIGHT_PATTERNS):
            continue
        shutil.copy2(p, dst / p.name)
        copied.append(p.name)
    return copied


def _restore_softcapping(saved: Path, original: Path) -> None:
    """``load_backbone`` drops Gemma-2's attention soft-capping from the loaded config (sdpa); the exported
    config.json keeps the backbone's own value so ``model.softcap`` still means the same."""
    new, old = json.loads(saved.read_text()), json.loads(original.read_text())
    changed = False
    for a, b in ((new, old), (new.get("text_config"), old.get("text_config"))):
        if isinstance(a, dict) and isinstance(b, dict) and "attn_logit_softcapping" in b:
            if a.get("attn_logit_softcapping") != b["attn_logit_softcapping"]:
                a["attn_logit_softcapping"] = b["attn_logit_softcapping"]
                changed = True
    if changed:
        saved.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")


def export_merged(cfg: dict, model_dir: Path, out_dir: Path, dtype: str = "fp16") -> dict:
    """``model_dir``'s adapter merged into the full-precision (fp32) backbone of ``cfg``, saved as an HF
    folder ``out_dir/backbone/`` (safetensors in ``dtype``, the backbone's tokenizer files) +
    ``out_dir/head.pt`` + ``out_dir/llm_meta.json`` (``merged_backbone: true``) + ``train_done``. 8-bit is
    applied at load time (``infer.quant: 8bit``), not saved. Runs on a GPU when there is one (the fp32
    weights must fit: 4 bytes per parameter)."""
    from peft import PeftModel

    from lmsys_arena.io import atomic_path
    from lmsys_arena.llm.family import options

    if dtype not in DTYPES:
        raise ValueError(f"export dtype {dtype!r}: one of {', '.join(DTYPES)}")
    t0 = time.time()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / ADAPTER_DIR / ADAPTER_CONFIG).exists():
        raise ValueError(f"{model_dir}: no {ADAPTER_DIR}/ to merge into the backbone (already exported?)")
    if not (model_dir / HEAD_FILE).exists():
        raise ValueError(f"{model_dir}: no {HEAD_FILE}")
    lc = options(cfg)
    path = resolve_backbone(lc.backbone)
    mcfg = dataclasses.replace(lc.model, dtype="fp32", quant=None, compile=False, kernels="none")  # CPU-safe
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    backbone = load_backbone(path, mcfg, device)
    backbone = PeftModel.from_pretrained(backbone, model_dir / ADAPTER_DIR, is_trainable=False).merge_and_unload()
    backbone = backbone.to(DTYPES[dtype])
    bad = [n for n, p in backbone.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"merged weights overflow {dtype} ({bad[:3]}...): export in bf16 or fp32")
    n_params = sum(p.numel() for p in backbone.parameters())

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DONE).unlink(missing_ok=True)
    marker = {"source_model": str(model_dir), "source_backbone": str(path), "dtype": dtype}
    with atomic_dir(out_dir / BACKBONE_DIR) as tmp:
        backbone.save_pretrained(tmp)
        _restore_softcapping(tmp / "config.json", path / "config.json")
        copied = _copy_tokenizer_files(path, tmp)
        (tmp / MERGED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    del backbone
    with atomic_path(out_dir / HEAD_FILE) as tmp:
        shutil.copyfile(model_dir / HEAD_FILE, tmp)
    meta = read_meta(model_dir) or {}
    info = {
        "dtype": dtype,
        "parameters": n_params,
        "source_model": str(model_dir),
        "source_backbone": str(path),
        "copied_files": copied,
        "seconds": round(time.time() - t0, 1),
    }
    write_meta(
        out_dir,
        {
            **{k: v for k, v in meta.items() if k != "train_seconds"},
            "backbone": str(out_dir / BACKBONE_DIR),
            "backbone_dir": str(out_dir / BACKBONE_DIR),
            "merged_backbone": True,
            "export": info,
        },
    )
    (out_dir / DONE).write_text("ok\n")
    log.info("exported %s (%.0fM parameters, %s) -> %s", model_dir, n_params / 1e6, dtype, out_dir / BACKBONE_DIR)
    return info
