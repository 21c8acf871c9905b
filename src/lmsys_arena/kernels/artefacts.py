"""`make kernel-datasets`: the code and wheels datasets of the kernels' image (:mod:`.wheels`) and each
kernel's artefacts dataset ``<user>/lmsys-arena-<name>-artefacts``: ``kernel_plan.json``, ``runs/<run>/config.json``
and the model folders
(GBDT models, LoRA adapters + heads), plus what a family bundles (its ``bundle_assets`` hook: e.g. an LLM
backbone that has no Kaggle model source).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from lmsys_arena.io import read_json, write_json
from lmsys_arena.kernels.entry import PLAN_FILE
from lmsys_arena.kernels.plan import (
    DATASET_METADATA_FILE,
    DATASETS_DIR,
    KERNELS_DIR,
    KernelError,
    dataset_metadata,
    datasets_under,
    family_of,
    kernel_dirs,
)
from lmsys_arena.kernels.wheels import build_code_datasets
from lmsys_arena.runs import RUNS_DIR, Run

log = logging.getLogger(__name__)

# training leftovers never shipped (also not from a bundled backbone folder)
SKIP_IN_ARTEFACTS = ("checkpoint*", "ckpt*", "*optimizer*", "trainer_state*", "*.tmp", ".*", "rng_state*", "scheduler*")
# ".*": temporary files and folders of interrupted writes (atomic_path / atomic_dir) are never packaged


def build_artefacts_dataset(kdir: Path, out: Path = DATASETS_DIR, runs_root: Path = RUNS_DIR) -> Path:
    plan = read_json(kdir / PLAN_FILE)
    ddir = out / plan["datasets"]["artefacts"].split("/")[1]
    if ddir.exists():
        shutil.rmtree(ddir)
    ddir.mkdir(parents=True)
    ignore = shutil.ignore_patterns(*SKIP_IN_ARTEFACTS)
    for name, entry in plan["runs"].items():
        src, dst = Run.named(name, runs_root), Run(ddir / "runs" / name)
        dst.path.mkdir(parents=True)
        for f in (src.config_file, src.metrics_file):
            if f.exists():
                shutil.copy2(f, dst.path / f.name)
        for model in entry.get("models") or [f"fold{f}" for f in entry.get("folds", [])]:
            shutil.copytree(src.path / model, dst.path / model, ignore=ignore)
        bundle_assets = getattr(family_of(entry).kernel_hooks(), "bundle_assets", None)
        if bundle_assets is not None:
            bundle_assets(entry, ddir)
    write_json(ddir / PLAN_FILE, plan)
    write_json(
        ddir / DATASET_METADATA_FILE, dataset_metadata(plan["datasets"]["artefacts"], _dataset_title(plan["name"]))
    )
    size = sum(p.stat().st_size for p in ddir.rglob("*") if p.is_file()) / 2**20
    log.info("artefacts dataset %s: %d runs, %.1f MiB", ddir, len(plan["runs"]), size)
    return ddir


def _dataset_title(name: str) -> str:
    t = f"lmsys arena {name} artefacts"
    return t if len(t) <= 50 else t[:50]


def build_datasets(
    names: list[str] | None = None, wheels: str = "full", out: Path = KERNELS_DIR, runs_root: Path = RUNS_DIR
) -> list[Path]:
    kdirs = kernel_dirs(names, out)
    plans = [read_json(k / PLAN_FILE) for k in kdirs]
    users = {p["user"] for p in plans}
    if len(users) > 1:
        raise KernelError(f"kernels were built for different users {sorted(users)}: rebuild them with one user")
    images = {p.get("image") for p in plans} - {None}
    if len(images) > 1:  # the code dataset's requirements are one image's
        raise KernelError(
            f"kernels target different images {sorted(images)}: package them one image at a time (NAME=...)"
        )
    image = images.pop() if images else None
    built = build_code_datasets(users.pop(), wheels, datasets_under(out), image=image)
    built += [build_artefacts_dataset(k, datasets_under(out), runs_root) for k in kdirs]
    return built
