"""Fused kernels (``model.kernels``): liger-kernel's Triton RMSNorm, GeGLU / SwiGLU and rotary patched into a
loaded backbone (:func:`apply_kernels`, called by :func:`lmsys_arena.llm.backbones.load_backbone`); refused with
one :class:`ConfigError` line where they cannot run. A training-speed choice: exports and Kaggle kernels run
without them."""

from __future__ import annotations

import logging

import torch
from torch import nn

from lmsys_arena.schema import ConfigError
from lmsys_arena.versions import library_versions

log = logging.getLogger("lmsys_arena.llm.backbones")  # its log lines read as before the split


LIGER_ON = ("rope", "rms_norm", "geglu", "swiglu")  # liger-kernel's patches that model.kernels: liger turns on


def _have(module: str) -> bool:
    """Whether ``module`` is importable here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _kernels_error(reason: str) -> ConfigError:
    return ConfigError(f"model.kernels: liger {reason}; set model.kernels: none")


def check_kernels(kernels: str, device: torch.device) -> None:
    """Refuse ``model.kernels`` where it cannot run, before any model is loaded: an unknown value, no CUDA device,
    Triton or liger-kernel not installed (the model type is checked when the model is patched)."""
    if kernels == "none":
        return
    if kernels != "liger":
        raise ConfigError(f"model.kernels: unknown value {kernels!r} (valid: none, liger)")
    if device.type != "cuda":
        raise _kernels_error(f"needs a CUDA GPU (Triton kernels); this process runs on {device.type}")
    if not _have("triton"):
        raise _kernels_error("needs Triton, which is not installed (it comes with CUDA builds of torch)")
    if not _have("liger_kernel"):
        raise _kernels_error("needs liger-kernel, which is not installed: pip install 'lmsys-arena[kernels]'")


def apply_kernels(model: nn.Module, kernels: str, device: torch.device) -> nn.Module:
    """The loaded decoder ``model`` with ``model.kernels`` applied, in place, before LoRA wraps it.

    ``none``: unchanged. ``liger``: liger-kernel's function for the model type (``apply_liger_kernel_to_gemma2``,
    ``_gemma3_text``, ``_qwen2``, ``_llama``, ...) patches the instance's RMSNorms, its GeGLU / SwiGLU MLPs and the
    rotary embedding with Triton kernels; every other switch of that function is off (no fused linear
    cross-entropy: the head is not the LM head). A multimodal wrapper (Gemma 3's ``Gemma3Model``) is patched
    through its ``language_model``. liger also swaps the classes and the rotary function of the transformers
    modeling module for the rest of the process (models built later in it are fused too).

    Refused with a :class:`ConfigError` naming ``model.kernels`` and the reason (never a silent fallback): no
    CUDA device, Triton or liger-kernel not installed (or not importable), a model type liger has no patch for."""
    if kernels == "none":
        return model
    check_kernels(kernels, device)
    try:
        from liger_kernel.transformers import monkey_patch
    except ImportError as e:
        raise _kernels_error(f"could not import liger-kernel ({type(e).__name__}: {e})") from None
    table = monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN
    target = model
    inner = getattr(model, "language_model", None)  # Gemma 3's multimodal decoder: patch its text model
    if isinstance(inner, nn.Module) and getattr(getattr(inner, "config", None), "model_type", None) in table:
        target = inner
    model_type = getattr(getattr(target, "config", None), "model_type", None)
    if model_type not in table:
        raise _kernels_error(
            f"has no patch for model type {model_type!r} ({type(target).__name__}); liger-kernel "
            f"{_version('liger-kernel')} patches {', '.join(sorted(table))}"
        )
    fn = table[model_type]
    import inspect

    params = inspect.signature(fn).parameters
    if "model" not in params:
        raise _kernels_error(f"cannot patch a loaded {model_type} model ({fn.__name__} takes no model instance)")
    kwargs = {k: k in LIGER_ON for k, p in params.items() if k != "model" and isinstance(p.default, bool)}
    try:
        fn(model=target, **kwargs)
    except (TypeError, AssertionError, AttributeError) as e:
        raise _kernels_error(f"cannot patch {type(target).__name__} ({model_type}): {e}") from None
    on = ", ".join(k for k, v in kwargs.items() if v)
    log.info("model.kernels: liger-kernel %s patched %s (%s)", _version("liger-kernel"), type(target).__name__, on)
    return model


def _version(dist: str) -> str:
    return library_versions([dist]).get(dist, "?")
