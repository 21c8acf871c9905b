"""An LLM run's single model with its adapter merged into the backbone's weights (``export_merged``).

Export (``make export RUN=...``): the single model's adapter merged into the full-precision backbone
(fp32; never a quantised one), saved as an HF folder ``backbone/`` in ``dtype`` with the backbone's
tokenizer files and a marker file (:data:`trained.MERGED_MARKER`), beside ``head.pt`` and ``llm_meta.json``
(``merged_backbone: true``). :func:`trained.load_trained` loads it without peft; 8-bit weights are made at
load time from these (``infer.quant: 8bit``), not saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import torch

from lmsys_arena.llm.backbones import DTYPES, atomic_dir, load_backbone, resolve_backbone
from lmsys_arena.llm.merge import ADAPTER_CONFIG, DONE
from lmsys_arena.llm.trained import ADAPTER_DIR, HEAD_FILE, MERGED_MARKER, read_meta, write_meta

log = logging.getLogger("lmsys_arena.llm.merge")  # the name its log lines had before the split

BACKBONE_DIR = "backbone"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.index.json", "config.json")


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
    _check_exportable(model_dir)
    lc = options(cfg)
    path = resolve_backbone(lc.backbone)
    backbone = _load_fp32_backbone(lc, path)
    backbone = PeftModel.from_pretrained(backbone, model_dir / ADAPTER_DIR, is_trainable=False).merge_and_unload()
    backbone = backbone.to(DTYPES[dtype])
    _check_finite(backbone, dtype)
    n_params = sum(p.numel() for p in backbone.parameters())

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DONE).unlink(missing_ok=True)
    marker = {"source_model": str(model_dir), "source_backbone": str(path), "dtype": dtype}
    copied = _save_backbone(backbone, path, out_dir / BACKBONE_DIR, marker)
    del backbone  # frees the merged weights (GPU memory) before the head and meta are written
    with atomic_path(out_dir / HEAD_FILE) as tmp:
        shutil.copyfile(model_dir / HEAD_FILE, tmp)
    info = {
        "dtype": dtype,
        "parameters": n_params,
        "source_model": str(model_dir),
        "source_backbone": str(path),
        "copied_files": copied,
        "seconds": round(time.time() - t0, 1),
    }
    _write_export_meta(model_dir, out_dir, info)
    (out_dir / DONE).write_text("ok\n")
    log.info("exported %s (%.0fM parameters, %s) -> %s", model_dir, n_params / 1e6, dtype, out_dir / BACKBONE_DIR)
    return info


def _check_exportable(model_dir: Path) -> None:
    """A single model with its adapter and head (an export has no adapter left)."""
    if not (model_dir / ADAPTER_DIR / ADAPTER_CONFIG).exists():
        raise ValueError(f"{model_dir}: no {ADAPTER_DIR}/ to merge into the backbone (already exported?)")
    if not (model_dir / HEAD_FILE).exists():
        raise ValueError(f"{model_dir}: no {HEAD_FILE}")


def _load_fp32_backbone(lc, path: Path) -> torch.nn.Module:
    """The backbone in fp32, unquantised and uncompiled: the adapter is merged at full precision."""
    mcfg = dataclasses.replace(lc.model, dtype="fp32", quant=None, compile=False, kernels="none")  # CPU-safe
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return load_backbone(path, mcfg, device)


def _check_finite(backbone: torch.nn.Module, dtype: str) -> None:
    bad = [n for n, p in backbone.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"merged weights overflow {dtype} ({bad[:3]}...): export in bf16 or fp32")


def _save_backbone(backbone: torch.nn.Module, source: Path, dst: Path, marker: dict) -> list[str]:
    """The merged backbone as an HF folder ``dst`` (written whole or not at all); returns the files copied
    from the ``source`` backbone's folder."""
    with atomic_dir(dst) as tmp:
        backbone.save_pretrained(tmp)
        _restore_softcapping(tmp / "config.json", source / "config.json")
        copied = _copy_tokenizer_files(source, tmp)
        (tmp / MERGED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return copied


def _write_export_meta(model_dir: Path, out_dir: Path, info: dict) -> None:
    """The model's llm_meta.json, pointing at the merged backbone (its train time dropped)."""
    meta = read_meta(model_dir) or {}
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
