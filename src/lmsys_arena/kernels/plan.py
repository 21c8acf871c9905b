"""`make kernels`: a run's tree as the kernel needs it (``kernel_plan.json``), ``kernel-metadata.json``,
the entry script, and the Kaggle ids (user, slugs) the kernel and its datasets use.

A plan's ``runs`` map every run of the tree to an entry: a blend's members, weights, temperature and space;
a trained run's ``family``, the ``folds`` it has, and what its family's ``kernel_assets`` hook adds (an LLM:
``backbone``, where its weights come from). An asset that is a dict with a ``kind`` is one of:
``model_source`` (a Kaggle model, attached to the kernel: ``handle``), ``bundled`` (a folder of the artefacts
dataset: ``path``) or ``none``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmsys_arena import families
from lmsys_arena.data import COMPETITION_NAME
from lmsys_arena.io import read_json, write_json, write_text
from lmsys_arena.kernels.entry import PLAN_FILE
from lmsys_arena.kernels.image import get_image
from lmsys_arena.runs import RUNS_DIR, Run
from lmsys_arena.versions import package_version

log = logging.getLogger(__name__)

KERNELS_DIR = Path("kernels")
METADATA_FILE = "kernel-metadata.json"
DATASET_METADATA_FILE = "dataset-metadata.json"
PLACEHOLDER_USER = "your-kaggle-username"
CODE_SLUG = "lmsys-arena-code"
ENTRY_TEMPLATE = Path(__file__).with_name("entry.py")
# kaggle-cli docs, "Accelerators available as of Feb 2026"; NvidiaTeslaT4 is the T4 x2 machine
MACHINE_SHAPES = {
    "NvidiaTeslaT4",
    "NvidiaTeslaT4Highmem",
    "NvidiaTeslaP100",
    "NvidiaL4",
    "NvidiaL4X1",
    "NvidiaTeslaA100",
    "NvidiaH100",
    "NvidiaRtxPro6000",
    "TpuV38",
    "Tpu1VmV38",
    "TpuV5E8",
    "TpuV6E8",
}
DEFAULT_SHAPE = "NvidiaTeslaT4"
# dotted config keys for every LLM run (e.g. 8-bit weights: infer.quant=8bit); the precision is chosen per
# backbone (llm.kaggle.kernel_precision: fp16, or fp32 where fp16 overflows)
DEFAULT_LLM_OVERRIDES: dict = {}


class KernelError(RuntimeError):
    pass


def datasets_under(out: Path = KERNELS_DIR) -> Path:
    """Where the dataset folders of the kernels in ``out`` are built."""
    return out / "datasets"


DATASETS_DIR = datasets_under()


# --------------------------------------------------------------------------- identity


def kaggle_config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))


def kaggle_username() -> str:
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    cfg = kaggle_config_dir() / "kaggle.json"
    if cfg.exists():
        try:
            user = json.loads(cfg.read_text()).get("username")
        except json.JSONDecodeError:
            user = None
        if user:
            return user
    log.warning(
        "no Kaggle user (KAGGLE_USERNAME or ~/.kaggle/kaggle.json): ids use the placeholder %r; "
        "rebuild with credentials before `make push`",
        PLACEHOLDER_USER,
    )
    return PLACEHOLDER_USER


def slugify(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def kernel_slug(name: str) -> str:
    return slugify(f"lmsys arena {name}")


def artefacts_slug(name: str) -> str:
    s = slugify(f"lmsys arena {name} artefacts")
    return s if len(s) <= 50 else s[:41].rstrip("-") + "-" + hashlib.sha1(s.encode()).hexdigest()[:8]


def dataset_metadata(dataset_id: str, title: str) -> dict:
    return {"id": dataset_id, "title": title, "licenses": [{"name": "CC0-1.0"}]}


def local_datasets(datasets_dir: Path) -> dict[str, Path]:
    """The dataset folders built here, by Kaggle id."""
    return {read_json(p)["id"]: p.parent for p in datasets_dir.glob(f"*/{DATASET_METADATA_FILE}")}


def kernel_dirs(names: list[str] | None = None, out: Path = KERNELS_DIR) -> list[Path]:
    found = sorted(p.parent for p in out.glob(f"*/{METADATA_FILE}"))
    if names:
        missing = [n for n in names if not (out / n / METADATA_FILE).exists()]
        if missing:
            raise FileNotFoundError(f"no kernel {missing} in {out}/: run `make kernels RUNS=...` first")
        found = [out / n for n in names]
    if not found:
        raise FileNotFoundError(f"no kernels in {out}/: run `make kernels RUNS=<run>` first")
    return found


# --------------------------------------------------------------------------- the plan


@dataclass
class KernelOptions:
    user: str | None = None
    budget_hours: float = 8.5
    model_sources: dict[str, str] = field(default_factory=dict)  # run -> Kaggle model handle
    llm_overrides: dict = field(default_factory=lambda: dict(DEFAULT_LLM_OVERRIDES))
    fallback: str | None = None  # a GBDT run for rows no member reached (default: the first GBDT leaf)
    private: bool = True
    machine_shape: str = DEFAULT_SHAPE
    image: str | None = None  # a Kaggle image of kernels.image (default $LMSYS_KAGGLE_IMAGE, else latest)
    runs_root: Path = RUNS_DIR
    out: Path = KERNELS_DIR


def family_of(entry: dict) -> families.FamilyInfo:
    """The family of a plan's run entry."""
    return families.get(entry["family"])


def assets_of_kind(plan: dict, kind: str) -> list[tuple[str, dict]]:
    """(run, asset) for every asset of ``kind`` in the plan's run entries."""
    return [
        (run, a)
        for run, entry in plan["runs"].items()
        for a in entry.values()
        if isinstance(a, dict) and a.get("kind") == kind
    ]


def _plan_entry(name: str, runs_root: Path, opts: KernelOptions) -> tuple[dict, list[str]]:
    """(a run's plan entry, the runs it is made of)."""
    run = Run.named(name, runs_root)
    cfg, _inputs = run.model_config()
    try:
        fam = families.of(cfg)
    except KeyError as e:
        raise KernelError(f"run {name}: {e.args[0]}") from None
    if not fam.trains:  # a blend: its members' predictions combined with the saved weights
        entry = {
            "family": fam.name,
            "members": cfg["members"],
            "weights": cfg["weights"],
            "temperature": cfg.get("temperature", 1.0),
            "space": cfg.get("space", "logprob"),
        }
        return entry, list(cfg["members"])
    models = [d.name for d in run.model_dirs()]
    if not models:
        raise KernelError(
            f"{run.path} has no finished models (fold*/valid.parquet or model/done.json): run `make train` first"
        )
    entry = {"family": fam.name, "folds": run.done_folds(), "models": models}
    kernel_assets = getattr(fam.kernel_hooks(), "kernel_assets", None)
    if kernel_assets is not None:
        entry.update(kernel_assets(name, cfg, opts))
    return entry, []


def resolve_plan(root_run: str, name: str, opts: KernelOptions) -> dict:
    """The run tree below ``root_run`` as the kernel needs it (no files written)."""
    runs: dict[str, dict] = {}

    def visit(run: str, stack: tuple[str, ...]) -> None:
        if run in stack:
            raise KernelError(f"blend cycle: {' -> '.join(stack + (run,))}")
        if run in runs:
            return
        runs[run], members = _plan_entry(run, opts.runs_root, opts)
        for m in members:
            visit(m, stack + (run,))

    visit(root_run, ())
    unguarded = [r for r, i in runs.items() if family_of(i).trains and not family_of(i).time_guarded]
    fallback = opts.fallback or (unguarded[0] if unguarded else None)
    if fallback and fallback not in runs:
        visit(fallback, ())
    if fallback and family_of(runs[fallback]).time_guarded:
        raise KernelError(
            f"fallback {fallback!r} is an {runs[fallback]['family']} run (time-guarded); use a GBDT "
            f"run or blend of GBDT runs"
        )
    if any(family_of(i).time_guarded for i in runs.values()) and not fallback:
        log.warning(
            "kernel %s has LLM runs and no GBDT fallback: rows the LLM does not reach in time get the "
            "training class prior (pass --fallback <gbdt run>)",
            name,
        )
    img = get_image(opts.image)
    _check_image_runs(img, runs)
    user = opts.user or kaggle_username()
    return {
        "name": name,
        "root": root_run,
        "runs": runs,
        "fallback": fallback,
        "prior": _class_prior(Run.named(root_run, opts.runs_root).oof_source()),
        "budget_hours": opts.budget_hours,
        "llm_overrides": opts.llm_overrides,
        "competition": COMPETITION_NAME,
        "image": img.name,
        "datasets": {
            "code": f"{user}/{CODE_SLUG}",
            "wheels": f"{user}/{img.wheels_slug}",
            "artefacts": f"{user}/{artefacts_slug(name)}",
        },
        "user": user,
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        "package_version": package_version(),
    }


def _check_image_runs(img, runs: dict[str, dict]) -> None:
    """A GPU family needs the image's own torch to meet the package's requirement on it, unless the image's
    wheels ship a torch (``original-torch``)."""
    from packaging.requirements import Requirement

    from lmsys_arena.kernels.image import IMAGES
    from lmsys_arena.kernels.requirements import framework_requirements

    gpu = [r for r, e in runs.items() if family_of(e).gpu]
    for req in map(Requirement, framework_requirements(img) if gpu else []):
        if not img.satisfies(req.name, str(req.specifier)):
            shipping = [n for n, i in IMAGES.items() if i.torch and i.python == img.python]
            raise KernelError(
                f"runs {gpu} need {req}; the {img.name} image has {req.name} {img.version_of(req.name)} "
                f"(not shipped for this image): build LLM kernels for an image that has or ships a newer torch "
                f"(--image {' / '.join(shipping) or '...'}), or a GBDT-only kernel here"
            )


def _class_prior(run: Run) -> list[float]:
    import numpy as np
    import pandas as pd

    if not run.oof_file.exists():
        return [1 / 3] * 3
    y = pd.read_parquet(run.oof_file, columns=["label"])["label"].to_numpy()
    counts = np.bincount(y[y >= 0], minlength=3).astype(float) + 1.0
    return (counts / counts.sum()).tolist()


# --------------------------------------------------------------------------- the kernel folder


def kernel_metadata(plan: dict, opts: KernelOptions) -> dict:
    model_sources = sorted({a["handle"] for _run, a in assets_of_kind(plan, "model_source")})
    slug = kernel_slug(plan["name"])
    meta = {
        "id": f"{plan['user']}/{slug}",
        "title": f"lmsys arena {plan['name']}",
        "code_file": f"{slug}.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": opts.private,
        "enable_gpu": any(family_of(i).gpu for i in plan["runs"].values()),  # a GBDT-only kernel needs none
        "enable_tpu": False,
        "enable_internet": False,
        "machine_shape": opts.machine_shape,
        "competition_sources": [COMPETITION_NAME],
        "dataset_sources": [plan["datasets"][k] for k in ("code", "wheels", "artefacts") if k in plan["datasets"]],
        "kernel_sources": [],
        "model_sources": model_sources,
    }
    pinning = get_image(plan.get("image")).pinning
    if pinning:  # e.g. the competition's original environment
        meta["docker_image_pinning_type"] = pinning
    return meta


def build_kernel(run: str, name: str | None = None, opts: KernelOptions | None = None) -> Path:
    """Write ``kernels/<name>/`` (metadata, entry script, plan); returns the folder."""
    opts = opts or KernelOptions()
    name = name or run
    plan = resolve_plan(run, name, opts)
    if opts.machine_shape not in MACHINE_SHAPES:
        raise KernelError(f"machine shape {opts.machine_shape!r} not in {sorted(MACHINE_SHAPES)}")
    meta = kernel_metadata(plan, opts)
    kdir = opts.out / name
    kdir.mkdir(parents=True, exist_ok=True)
    for old in kdir.glob("*.py"):
        old.unlink()
    write_text(kdir / meta["code_file"], ENTRY_TEMPLATE.read_text())
    write_json(kdir / METADATA_FILE, meta)
    write_json(kdir / PLAN_FILE, plan)
    leaves = {r: i for r, i in plan["runs"].items() if family_of(i).trains}
    log.info(
        "kernel %s: %s -> %s (%d runs: %s; fallback %s); next: make kernel-datasets",
        name,
        run,
        kdir,
        len(plan["runs"]),
        ", ".join(f"{r} [{i['family']}, {', '.join(i.get('models') or [])}]" for r, i in leaves.items()),
        plan["fallback"],
    )
    return kdir
