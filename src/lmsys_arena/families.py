"""The model-family protocol and the registry of families.

A family is a module that trains and predicts one model per fold (the runner calls it) and says what a
Kaggle kernel needs of it. Its options are a dataclass schema (:mod:`lmsys_arena.schema`) in a module
that imports no heavy library, so configs are checked and printed without torch. To add a family,
write a module with the functions of :class:`Family`, a schema class, and add a :class:`FamilyInfo`
to :data:`FAMILIES`; nothing else compares family names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd


class Family(Protocol):
    def fit_fold(self, cfg: dict, train: pd.DataFrame, valid: pd.DataFrame, fold_dir: Path, seed: int) -> np.ndarray:
        """Train on ``train``; write the fold's model files into ``fold_dir``; return logits (n, 3) of ``valid``."""

    def predict(self, cfg: dict, df: pd.DataFrame, fold_dir: Path) -> np.ndarray:
        """Logits (n, 3) of ``df`` with the fold's model (swap-TTA inside, per ``cfg['tta']``); NaN rows
        for rows a time-guarded family did not reach before ``LMSYS_DEADLINE``."""

    def kernel_assets(self, run: str, cfg: dict, opts) -> dict:
        """What the kernel needs besides the fold folders (e.g. where an LLM's backbone comes from);
        stored in ``kernel_plan.json``."""

    def bundle_assets(self, assets: dict, dest: Path) -> None:
        """Copy the assets to bundle into the artefacts dataset folder ``dest``."""

    def prepare_for_kernel(self, cfg: dict, assets: dict, input_root: Path, artefacts: Path, overrides: dict) -> dict:
        """The run's config as the kernel uses it (local backbone path, T4 precision, ...)."""

    def refit_config(self, cfg: dict, fold_dirs: list[Path]) -> dict:
        """Optional: the config of a full-data refit from the fold models (a GBDT: their mean best round)."""

    def preflight(self, cfg: dict) -> None:
        """Optional: refuse, before the run folder is written, what this machine cannot train (an LLM's GPU-only
        options on a CPU, ...)."""

    def golden_features(self, cfg: dict, df: pd.DataFrame) -> pd.DataFrame:
        """Optional: what the model sees of ``df``, compared inside a kernel (:mod:`lmsys_arena.golden`)."""


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    schema: str  # "module:Class" of the family's config dataclass (a light import)
    module: str  # the implementation (imported only to train, predict or build a kernel)
    trains: bool = True  # False: a combination of other runs (a blend), no folds of its own
    gpu: bool = False  # its kernels ask for a GPU
    time_guarded: bool = False  # the kernel's deadline applies: rows it did not reach fall back to others
    kernel: str | None = None  # module with the kernel hooks, a light import (default: the family module)
    extra: str | None = None  # the package extra its implementation needs (pip install 'lmsys-arena[<extra>]')
    golden_tolerance: float = 1e-4  # largest probability change of a golden row a kernel accepts (golden.py)

    def config_class(self) -> type:
        mod, cls = self.schema.split(":")
        return getattr(importlib.import_module(mod), cls)

    def load(self) -> Family:
        try:
            return importlib.import_module(self.module)
        except ModuleNotFoundError as e:
            if not self.extra or (e.name or "").startswith("lmsys_arena"):
                raise
            raise ModuleNotFoundError(
                f"the {self.name} family needs {e.name!r}, which is not installed: "
                f"pip install 'lmsys-arena[{self.extra}]' (`make setup` installs it)"
            ) from None

    def kernel_hooks(self):
        """The module with ``kernel_assets`` / ``bundle_assets`` / ``prepare_for_kernel`` (building a kernel
        does not import torch)."""
        return importlib.import_module(self.kernel or self.module)


FAMILIES: dict[str, FamilyInfo] = {
    "gbdt": FamilyInfo("gbdt", "lmsys_arena.gbdt:GBDTConfig", "lmsys_arena.gbdt"),
    "llm": FamilyInfo(
        "llm",
        "lmsys_arena.llm.config:LLMConfig",
        "lmsys_arena.llm.family",
        gpu=True,
        time_guarded=True,
        kernel="lmsys_arena.llm.kaggle",
        extra="llm",
        golden_tolerance=0.05,  # training precision (bf16) vs the kernel's (fp16 / fp32)
    ),
    "blend": FamilyInfo("blend", "lmsys_arena.ensemble:Blend", "lmsys_arena.ensemble", trains=False),
}


def get(name) -> FamilyInfo:
    if name not in FAMILIES:
        raise KeyError(f"unknown family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def of(cfg: dict) -> FamilyInfo:
    """The family of a resolved config (or of a run's config.json)."""
    return get(cfg.get("family"))
