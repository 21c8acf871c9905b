"""Kaggle T4 x2 kernels for trained runs: build, package as datasets, check offline, push.

    make kernels RUNS=blend [NAME=...]        # kernels/<name>/: kernel-metadata.json, <slug>.py, kernel_plan.json
    make kernel-datasets [WHEELS=minimal]    # kernels/datasets/<code>/ (wheels) and <name>-artefacts/ (models)
    make check-kernels                       # metadata, files, offline wheel install, simulated run on CPU
                                             # (no kernels yet: a demo kernel, xgb + tiny, in a temp project)
    make push                                # kaggle datasets create/version + kaggle kernels push

    python -m lmsys_arena kernels --runs blend --budget-hours 8.5 --model-source gemma9b=google/gemma-2/transformers/gemma-2-9b-it/2
    python -m lmsys_arena kernels --runs gemma9b --fallback xgb --llm-set infer.quant=8bit

A kernel is built from one run: a leaf run (GBDT or LLM) or a blend (``make ensemble``), whose member
tree is resolved and stored in ``kernel_plan.json`` (members, weights, temperature, the folds each run
has, where each LLM backbone comes from, the time budget, the fallback). The entry script is
:mod:`lmsys_arena.kernel_entry`, copied verbatim.

Datasets (``kernels/datasets/<slug>/`` with ``dataset-metadata.json``):

* ``<user>/lmsys-arena-code`` — this package as a wheel, ``requirements-kernel.txt`` and the wheelhouse:
  the dependency closure of those requirements for Kaggle's Python (cp311, manylinux x86_64, binary wheels
  only), *minus* what Kaggle's GPU image provides and is too big to ship: torch and its CUDA stack
  (:data:`PROVIDED`). On Kaggle pip keeps every installed package that satisfies a requirement and takes the
  rest from the wheelhouse (``--no-index``). xgboost and lightgbm are pinned to the versions the models were
  trained with (model-file compatibility). ``WHEELS=minimal`` ships our wheel only (tests, quick checks);
  ``make push`` refuses it.
* ``<user>/lmsys-arena-<name>-artefacts`` — ``kernel_plan.json``, ``runs/<run>/config.json`` and the fold
  folders (GBDT models, LoRA adapters + heads), and backbones that have no Kaggle model source (bundled).

The Kaggle user comes from ``KAGGLE_USERNAME`` or ``~/.kaggle/kaggle.json`` (``$KAGGLE_CONFIG_DIR``); without
one the ids carry the placeholder ``your-kaggle-username`` (``check-kernels`` warns, ``push`` refuses).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmsys_arena.io import read_json, write_json, write_text

log = logging.getLogger(__name__)

KERNELS_DIR = Path("kernels")
DATASETS_DIR = KERNELS_DIR / "datasets"
COMPETITION = "lmsys-chatbot-arena"
PLACEHOLDER_USER = "your-kaggle-username"
CODE_SLUG = "lmsys-arena-code"
ENTRY_TEMPLATE = Path(__file__).with_name("kernel_entry.py")
# kaggle-cli docs, "Accelerators available as of Feb 2026"; NvidiaTeslaT4 is the T4 x2 machine
MACHINE_SHAPES = {"NvidiaTeslaT4", "NvidiaTeslaT4Highmem", "NvidiaTeslaP100", "NvidiaL4", "NvidiaL4X1",
                  "NvidiaTeslaA100", "NvidiaH100", "NvidiaRtxPro6000", "TpuV38", "Tpu1VmV38", "TpuV5E8", "TpuV6E8"}
DEFAULT_SHAPE = "NvidiaTeslaT4"
# Kaggle's image has these (torch with its CUDA stack: GBs); the wheelhouse never ships them. torch's small
# pure-Python dependencies (filelock, sympy, ...) are shipped: transformers needs some of them too.
PROVIDED = {"torch", "triton", "setuptools", "pip", "wheel"}
PROVIDED_PREFIXES = ("nvidia-", "cuda-")
TRAIN_ONLY = {"optuna", "matplotlib", "datasets", "optuna-dashboard", "psycopg2-binary", "kaggle", "six"}  # not in kernels
PINNED = ("xgboost", "lightgbm")  # model files: same version as training
EXTRA_KERNEL_REQUIREMENTS = ["bitsandbytes"]  # 8-bit weights option on the T4s
PY_VERSION, PY_ABI = "3.11", "cp311"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (35, 34, 31, 28, 27, 24, 17, 12, 5)] + \
    ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
SKIP_IN_ARTEFACTS = ("checkpoint*", "ckpt*", "*optimizer*", "trainer_state*", "*.tmp", "rng_state*", "scheduler*")
# Kaggle model handles for the standard backbones (owner/model/framework/variation/version)
KNOWN_MODEL_SOURCES = {
    "gemma-2-2b-it": "google/gemma-2/transformers/gemma-2-2b-it/2",
    "gemma-2-9b-it": "google/gemma-2/transformers/gemma-2-9b-it/2",
    "gemma2-2b-it": "google/gemma-2/transformers/gemma-2-2b-it/2",
    "gemma2-9b-it": "google/gemma-2/transformers/gemma-2-9b-it/2",
}


class KernelError(RuntimeError):
    pass


# --------------------------------------------------------------------------- identity

def kaggle_username() -> str:
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if cfg.exists():
        try:
            user = json.loads(cfg.read_text()).get("username")
        except json.JSONDecodeError:
            user = None
        if user:
            return user
    log.warning("no Kaggle user (KAGGLE_USERNAME or ~/.kaggle/kaggle.json): ids use the placeholder %r; "
                "rebuild with credentials before `make push`", PLACEHOLDER_USER)
    return PLACEHOLDER_USER


def slugify(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def kernel_slug(name: str) -> str:
    return slugify(f"lmsys arena {name}")


def artefacts_slug(name: str) -> str:
    s = slugify(f"lmsys arena {name} artefacts")
    return s if len(s) <= 50 else s[:41].rstrip("-") + "-" + hashlib.sha1(s.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- make kernels

@dataclass
class KernelOptions:
    user: str | None = None
    budget_hours: float = 8.5
    model_sources: dict[str, str] = field(default_factory=dict)  # run -> Kaggle model handle
    # dotted config keys for every LLM run; T4s have no bf16: fp16 compute (8-bit weights: infer.quant=8bit)
    llm_overrides: dict = field(default_factory=lambda: {"infer.dtype": "fp16"})
    fallback: str | None = None  # a GBDT run for rows no member reached (default: the first GBDT leaf)
    private: bool = True
    machine_shape: str = DEFAULT_SHAPE
    runs_root: Path = Path("runs")
    out: Path = KERNELS_DIR


def _run_config(runs_root: Path, run: str) -> dict:
    path = runs_root / run / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train the run (or `make ensemble`) first")
    return read_json(path)


def _done_folds(run_dir: Path) -> list[int]:
    folds = sorted(int(d.name[4:]) for d in run_dir.glob("fold*") if d.name[4:].isdigit()
                   and (d / "valid.parquet").exists())
    if not folds:
        raise KernelError(f"{run_dir} has no finished folds (fold*/valid.parquet): run `make train` first")
    return folds


def _backbone_spec(run: str, cfg: dict, opts: KernelOptions) -> dict:
    """Where the kernel finds an LLM run's backbone: a Kaggle model source (attached to the kernel), bundled
    into the artefacts dataset (GGUF / PyPI / small local folders, as the converted HF folder), or built in
    code (``tiny``)."""
    bb = str(cfg.get("backbone") or "")
    local = bb if bb and Path(bb).expanduser().exists() else None
    if run in opts.model_sources:
        return {"kind": "model_source", "handle": opts.model_sources[run], "local": local}
    if bb in ("", "tiny"):
        return {"kind": "none"}
    for key, handle in KNOWN_MODEL_SOURCES.items():
        if key in Path(bb).name.lower() and not bb.endswith(".gguf"):
            return {"kind": "model_source", "handle": handle, "local": local}
    if bb.startswith("pypi:") or local:
        return {"kind": "bundled", "path": f"backbones/{run}", "spec": bb}
    raise KernelError(f"run {run}: backbone {bb!r} is not on this machine and has no Kaggle model source; "
                      f"pass --model-source {run}=owner/model/framework/variation/version")


def resolve_plan(root_run: str, name: str, opts: KernelOptions) -> dict:
    """The run tree below ``root_run`` as the kernel needs it (no files written)."""
    runs: dict[str, dict] = {}

    def visit(run: str, stack: tuple[str, ...]) -> None:
        if run in stack:
            raise KernelError(f"blend cycle: {' -> '.join(stack + (run,))}")
        if run in runs:
            return
        cfg = _run_config(opts.runs_root, run)
        fam = cfg.get("family")
        if fam == "blend":
            runs[run] = {"family": "blend", "members": cfg["members"], "weights": cfg["weights"],
                         "temperature": cfg.get("temperature", 1.0), "space": cfg.get("space", "logprob")}
            for m in cfg["members"]:
                visit(m, stack + (run,))
        elif fam in ("gbdt", "llm"):
            info = {"family": fam, "folds": _done_folds(opts.runs_root / run)}
            if fam == "llm":
                info["backbone"] = _backbone_spec(run, cfg, opts)
            runs[run] = info
        else:
            raise KernelError(f"run {run}: unknown family {fam!r}")

    visit(root_run, ())
    gbdt = [r for r, i in runs.items() if i["family"] == "gbdt"]
    fallback = opts.fallback or (gbdt[0] if gbdt else None)
    if fallback and fallback not in runs:
        visit(fallback, ())
    if fallback and runs[fallback]["family"] == "llm":
        raise KernelError(f"fallback {fallback!r} is an LLM run; use a GBDT run or blend of GBDT runs")
    if any(i["family"] == "llm" for i in runs.values()) and not fallback:
        log.warning("kernel %s has LLM runs and no GBDT fallback: rows the LLM does not reach in time get the "
                    "training class prior (pass --fallback <gbdt run>)", name)
    user = opts.user or kaggle_username()
    return {
        "name": name, "root": root_run, "runs": runs, "fallback": fallback, "prior": _class_prior(opts.runs_root,
                                                                                               root_run),
        "budget_hours": opts.budget_hours, "llm_overrides": opts.llm_overrides, "competition": COMPETITION,
        "datasets": {"code": f"{user}/{CODE_SLUG}", "artefacts": f"{user}/{artefacts_slug(name)}"},
        "user": user, "built": time.strftime("%Y-%m-%d %H:%M:%S"), "package_version": _package_version(),
    }


def _class_prior(runs_root: Path, run: str) -> list[float]:
    import numpy as np
    import pandas as pd

    path = runs_root / run / "oof.parquet"
    if not path.exists():
        return [1 / 3] * 3
    y = pd.read_parquet(path, columns=["label"])["label"].to_numpy()
    counts = np.bincount(y[y >= 0], minlength=3).astype(float) + 1.0
    return (counts / counts.sum()).tolist()


def _package_version() -> str:
    try:
        return importlib.metadata.version("lmsys-arena")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def kernel_metadata(plan: dict, opts: KernelOptions) -> dict:
    model_sources = sorted({i["backbone"]["handle"] for i in plan["runs"].values()
                            if i.get("backbone", {}).get("kind") == "model_source"})
    slug = kernel_slug(plan["name"])
    return {
        "id": f"{plan['user']}/{slug}",
        "title": f"lmsys arena {plan['name']}",
        "code_file": f"{slug}.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": opts.private,
        "enable_gpu": True,
        "enable_tpu": False,
        "enable_internet": False,
        "machine_shape": opts.machine_shape,
        "competition_sources": [COMPETITION],
        "dataset_sources": [plan["datasets"]["code"], plan["datasets"]["artefacts"]],
        "kernel_sources": [],
        "model_sources": model_sources,
    }


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
    write_json(kdir / "kernel-metadata.json", meta)
    write_json(kdir / "kernel_plan.json", plan)
    leaves = {r: i for r, i in plan["runs"].items() if i["family"] != "blend"}
    log.info("kernel %s: %s -> %s (%d runs: %s; fallback %s); next: make kernel-datasets", name, run, kdir,
             len(plan["runs"]), ", ".join(f"{r} [{i['family']}, folds {i.get('folds')}]" for r, i in leaves.items()),
             plan["fallback"])
    return kdir


# --------------------------------------------------------------------------- make kernel-datasets

def kernel_dirs(names: list[str] | None = None, out: Path = KERNELS_DIR) -> list[Path]:
    found = sorted(p.parent for p in out.glob("*/kernel-metadata.json"))
    if names:
        missing = [n for n in names if not (out / n / "kernel-metadata.json").exists()]
        if missing:
            raise FileNotFoundError(f"no kernel {missing} in {out}/: run `make kernels RUNS=...` first")
        found = [out / n for n in names]
    if not found:
        raise FileNotFoundError(f"no kernels in {out}/: run `make kernels RUNS=<run>` first")
    return found


def dataset_metadata(dataset_id: str, title: str) -> dict:
    return {"id": dataset_id, "title": title, "licenses": [{"name": "CC0-1.0"}]}


def build_package_wheel(dest: Path) -> Path:
    """``lmsys_arena-<version>-py3-none-any.whl`` of this checkout (no deps, no build isolation: offline)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").exists():
        raise KernelError(f"{root} has no pyproject.toml: build the datasets from a checkout of the repository")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("lmsys_arena-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", tmp, str(root)], check=True, cwd=tmp)
        whl = next(Path(tmp).glob("lmsys_arena-*.whl"))
        shutil.move(str(whl), dest / whl.name)
    log.info("built %s", dest / whl.name)
    return dest / whl.name


def _pyproject_requirements() -> list[str]:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def kernel_requirements() -> list[str]:
    """What the kernel needs at inference: pyproject's dependencies minus training-only ones, xgboost and
    lightgbm pinned to the local versions, plus bitsandbytes (8-bit option)."""
    reqs = []
    for r in _pyproject_requirements() + list(PINNED) + EXTRA_KERNEL_REQUIREMENTS:
        name = _req_name(r)
        if name in TRAIN_ONLY or name in PROVIDED or any(name == _req_name(x) for x in reqs):
            continue
        if name in PINNED:
            version = _local_version(name)
            if version:
                r = f"{name}=={version}"
            else:
                log.warning("%s is not installed here: the kernel requirement stays unpinned", name)
        reqs.append(r)
    return reqs


def _local_version(name: str) -> str | None:
    for dist in (name, f"{name}-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        return __import__(name).__version__
    except ImportError:
        return None


def is_provided(name: str) -> bool:
    name = name.lower().replace("_", "-")
    return name in PROVIDED or name.startswith(PROVIDED_PREFIXES)


def _target_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", PY_VERSION, "--implementation", "cp", "--abi", PY_ABI,
            "--abi", "abi3", "--abi", "none"]
    for p in PLATFORMS:
        args += ["--platform", p]
    return args


def resolve_wheelhouse(reqs: list[str], cache_root: Path | None = None) -> Path:
    """Download the closure of ``reqs`` for Kaggle's Python minus :data:`PROVIDED`; cached by content
    under ``cache/wheelhouse/`` (or ``$LMSYS_WHEELHOUSE_CACHE``)."""
    cache_root = Path(cache_root or os.environ.get("LMSYS_WHEELHOUSE_CACHE", "cache/wheelhouse"))
    key = hashlib.sha1(json.dumps([reqs, PLATFORMS, PY_VERSION, sorted(PROVIDED)]).encode()).hexdigest()[:12]
    cache = cache_root / key
    marker = cache / ".complete"
    if marker.exists():
        log.info("wheelhouse cache hit: %s (%s)", cache, marker.read_text().strip())
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        log.info("resolving the kernel requirements for cp311 manylinux (metadata only): %s", " ".join(reqs))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
                        "--report", str(report), "--target", str(Path(tmp) / "t"), *_target_args(), *reqs],
                       check=True)
        pins = []
        for item in json.loads(report.read_text())["install"]:
            name, version = item["metadata"]["name"], item["metadata"]["version"]
            if not is_provided(name):
                pins.append(f"{name}=={version.split('+')[0]}")
    log.info("downloading %d wheels into %s", len(pins), cache)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *_target_args(), "-d", str(cache),
                    *pins], check=True)
    marker.write_text(f"{len(pins)} wheels: {' '.join(pins)}\n")
    return cache


def build_code_dataset(user: str, wheels: str = "full", out: Path = DATASETS_DIR) -> Path:
    if wheels not in ("full", "minimal"):
        raise ValueError(f"--wheels must be full or minimal, got {wheels!r}")
    ddir = out / CODE_SLUG
    if ddir.exists():
        shutil.rmtree(ddir)
    ddir.mkdir(parents=True)
    build_package_wheel(ddir)
    reqs = kernel_requirements()
    write_text(ddir / "requirements-kernel.txt", "\n".join(reqs) + "\n")
    if wheels == "full":
        for whl in resolve_wheelhouse(reqs).glob("*.whl"):
            _link_or_copy(whl, ddir / whl.name)
    write_json(ddir / "dataset-metadata.json", dataset_metadata(f"{user}/{CODE_SLUG}", "lmsys arena code"))
    write_json(ddir / "wheelset.json", {"wheels": wheels, "requirements": reqs,
                                        "files": sorted(p.name for p in ddir.glob("*.whl"))})
    n = len(list(ddir.glob("*.whl")))
    size = sum(p.stat().st_size for p in ddir.glob("*.whl")) / 2**20
    log.info("code dataset %s: %d wheels, %.1f MiB (%s)", ddir, n, size, wheels)
    return ddir


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_artefacts_dataset(kdir: Path, out: Path = DATASETS_DIR, runs_root: Path = Path("runs")) -> Path:
    plan = read_json(kdir / "kernel_plan.json")
    ddir = out / plan["datasets"]["artefacts"].split("/")[1]
    if ddir.exists():
        shutil.rmtree(ddir)
    ddir.mkdir(parents=True)
    ignore = shutil.ignore_patterns(*SKIP_IN_ARTEFACTS)
    for run, info in plan["runs"].items():
        src, dst = runs_root / run, ddir / "runs" / run
        dst.mkdir(parents=True)
        for f in ("config.json", "metrics.json"):
            if (src / f).exists():
                shutil.copy2(src / f, dst / f)
        for fold in info.get("folds", []):
            shutil.copytree(src / f"fold{fold}", dst / f"fold{fold}", ignore=ignore)
        bb = info.get("backbone", {})
        if bb.get("kind") == "bundled":
            from lmsys_arena.llm.model import resolve_backbone  # GGUF/PyPI -> converted HF folder (cached)

            folder = resolve_backbone(bb["spec"])
            shutil.copytree(folder, ddir / bb["path"], ignore=ignore)
            log.info("bundled backbone %s (%s) for %s", folder, bb["spec"], run)
    write_json(ddir / "kernel_plan.json", plan)
    write_json(ddir / "dataset-metadata.json",
               dataset_metadata(plan["datasets"]["artefacts"], _dataset_title(plan["name"])))
    size = sum(p.stat().st_size for p in ddir.rglob("*") if p.is_file()) / 2**20
    log.info("artefacts dataset %s: %d runs, %.1f MiB", ddir, len(plan["runs"]), size)
    return ddir


def _dataset_title(name: str) -> str:
    t = f"lmsys arena {name} artefacts"
    return t if len(t) <= 50 else t[:50]


def build_datasets(names: list[str] | None = None, wheels: str = "full", out: Path = KERNELS_DIR,
                   runs_root: Path = Path("runs")) -> list[Path]:
    kdirs = kernel_dirs(names, out)
    users = {read_json(k / "kernel_plan.json")["user"] for k in kdirs}
    if len(users) > 1:
        raise KernelError(f"kernels were built for different users {sorted(users)}: rebuild them with one user")
    built = [build_code_dataset(users.pop(), wheels, out / "datasets")]
    built += [build_artefacts_dataset(k, out / "datasets", runs_root) for k in kdirs]
    return built


# --------------------------------------------------------------------------- make check-kernels

@dataclass
class CheckResult:
    name: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _kaggle_api():
    """The kaggle CLI's own validators (importing kaggle tries to authenticate; failures are ignored)."""
    with open(os.devnull, "w") as devnull:
        old = sys.stdout
        sys.stdout = devnull
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        finally:
            sys.stdout = old
    return KaggleApi()


def check_metadata(kdir: Path, datasets_dir: Path) -> CheckResult:
    res = CheckResult(kdir.name)
    try:
        meta = read_json(kdir / "kernel-metadata.json")
    except (OSError, json.JSONDecodeError) as e:
        res.problems.append(f"kernel-metadata.json unreadable: {e}")
        return res
    api = _kaggle_api()
    must = {"language": "python", "kernel_type": "script", "enable_gpu": True, "enable_internet": False}
    for key, want in must.items():
        if meta.get(key) is not want and meta.get(key) != want:
            res.problems.append(f"{key} is {meta.get(key)!r}, expected {want!r}")
    for key in ("id", "title", "code_file", "is_private", "machine_shape", "competition_sources",
                "dataset_sources", "model_sources"):
        if key not in meta:
            res.problems.append(f"missing key {key!r}")
    if meta.get("machine_shape") not in MACHINE_SHAPES:
        res.problems.append(f"machine_shape {meta.get('machine_shape')!r} not in {sorted(MACHINE_SHAPES)}")
    if COMPETITION not in meta.get("competition_sources", []):
        res.problems.append(f"competition_sources lacks {COMPETITION!r}")
    title = meta.get("title") or ""
    if len(title) < 5:
        res.problems.append("title must be at least five characters (kaggle)")
    code = kdir / (meta.get("code_file") or "")
    if not meta.get("code_file") or not code.is_file():
        res.problems.append(f"code_file {meta.get('code_file')!r} not found in {kdir}")
    try:
        owner, slug, version = api.parse_kernel_string(meta.get("id", ""))
        if version is not None:
            res.problems.append("kernel id must not carry a version")
        if slug != slugify(title):
            res.problems.append(f"kernel slug {slug!r} does not match the title's slug {slugify(title)!r}")
        for s in meta.get("dataset_sources", []):
            api.validate_dataset_string(s)
        for s in meta.get("kernel_sources", []):
            api.validate_kernel_string(s)
        for s in meta.get("model_sources", []):
            api.validate_model_instance_version_string(s)
        if meta.get("language") not in api.valid_push_language_types:
            res.problems.append(f"language {meta.get('language')!r} not in {api.valid_push_language_types}")
        if meta.get("kernel_type") not in api.valid_push_kernel_types:
            res.problems.append(f"kernel_type {meta.get('kernel_type')!r} not in {api.valid_push_kernel_types}")
    except ValueError as e:
        res.problems.append(f"kaggle: {e}")
    if meta.get("id", "").startswith(PLACEHOLDER_USER + "/"):
        res.warnings.append(f"ids use the placeholder user {PLACEHOLDER_USER!r}: rebuild with KAGGLE_USERNAME "
                            f"before `make push`")
    if not (kdir / "kernel_plan.json").exists():
        res.problems.append("kernel_plan.json missing: rebuild with `make kernels`")
    local = {read_json(p)["id"]: p.parent for p in datasets_dir.glob("*/dataset-metadata.json")}
    for ds in meta.get("dataset_sources", []):
        if ds not in local:
            res.problems.append(f"dataset {ds} not built in {datasets_dir}/: run `make kernel-datasets`")
        else:
            res.problems += [f"dataset {ds}: {p}" for p in check_dataset_dir(local[ds], api)]
    return res


def check_dataset_dir(ddir: Path, api) -> list[str]:
    """kaggle's own create-time checks on dataset-metadata.json, plus the files the kernel needs."""
    problems = []
    meta = read_json(ddir / "dataset-metadata.json")
    ref, title, lic = meta.get("id", ""), meta.get("title", ""), meta.get("licenses", [])
    try:
        api.validate_dataset_string(ref)
        slug = ref.split("/")[1]
        api._validate_slug_syntax(slug)
    except (ValueError, IndexError) as e:
        return [f"id {ref!r}: {e}"]
    if not 6 <= len(slug) <= 50:
        problems.append(f"slug {slug!r} must have 6..50 characters")
    if not 6 <= len(title) <= 50:
        problems.append(f"title {title!r} must have 6..50 characters")
    if len(lic) != 1 or "name" not in lic[0]:
        problems.append("exactly one license with a name is required")
    if slug == CODE_SLUG:
        if not list(ddir.glob("lmsys_arena-*.whl")):
            problems.append("no lmsys_arena wheel")
        if not (ddir / "requirements-kernel.txt").exists():
            problems.append("no requirements-kernel.txt")
    else:
        plan_file = ddir / "kernel_plan.json"
        if not plan_file.exists():
            return problems + ["no kernel_plan.json"]
        plan = read_json(plan_file)
        for run, info in plan["runs"].items():
            if not (ddir / "runs" / run / "config.json").exists():
                problems.append(f"runs/{run}/config.json missing")
            for f in info.get("folds", []):
                if not (ddir / "runs" / run / f"fold{f}").is_dir():
                    problems.append(f"runs/{run}/fold{f}/ missing")
            bb = info.get("backbone", {})
            if bb.get("kind") == "bundled" and not (ddir / bb["path"]).exists():
                problems.append(f"bundled backbone {bb['path']} missing")
    return problems


def check_wheelhouse(code_dir: Path) -> list[str]:
    """Install every wheel into an empty venv with --no-index (pip isolated from this machine's config);
    then `pip check` may only miss what Kaggle provides (:data:`PROVIDED`); then import the package."""
    with tempfile.TemporaryDirectory(prefix="lmsys_wheelcheck_") as tmp:
        venv = Path(tmp) / "venv"
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        py = venv / "bin" / "python"
        pip = [sys.executable, "-m", "pip", "--isolated", "--python", str(py)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        wheels = sorted(str(p) for p in code_dir.glob("*.whl"))
        r = subprocess.run([*pip, "install", "-q", "--no-index", "--no-deps", "--no-compile", *wheels],
                           capture_output=True, text=True, env=env)
        if r.returncode:
            return [f"offline install into an empty venv failed: {r.stderr.strip()[-800:]}"]
        r = subprocess.run([*pip, "check"], capture_output=True, text=True, env=env)
        wheelset = read_json(code_dir / "wheelset.json") if (code_dir / "wheelset.json").exists() else {}
        full = wheelset.get("wheels") == "full"
        problems = []
        for line in r.stdout.splitlines():
            m = re.search(r"^(\S+) \S+ requires ([A-Za-z0-9_.\-]+), which is not installed", line)
            if m and (is_provided(m.group(2)) or (m.group(1) == "lmsys-arena" and
                                                  (not full or _req_name(m.group(2)) in TRAIN_ONLY))):
                continue  # Kaggle provides it / training-only / the minimal set ships our wheel alone
            if line.strip() and "No broken requirements" not in line:
                problems.append(f"pip check: {line.strip()}")
        mods = ["lmsys_arena", "lmsys_arena.kernel_entry"]
        if full:
            mods += ["lmsys_arena.ensemble", "lmsys_arena.gbdt", "numpy", "pandas", "pyarrow", "sklearn", "scipy",
                     "lightgbm", "xgboost", "yaml", "tqdm", "transformers", "tokenizers", "safetensors"]
        r = subprocess.run([str(py), "-c", f"import {', '.join(mods)}"], capture_output=True, text=True,
                           env={**env, "PYTHONNOUSERSITE": "1"}, cwd=tmp)
        if r.returncode:
            problems.append(f"import in the empty venv failed: {r.stderr.strip()[-600:]}")
        return problems


def simulate_kernel(kdir: Path, data: Path, datasets_dir: Path, timeout: int = 600,
                    env_extra: dict | None = None, copy_to: Path | None = None) -> tuple[list[str], dict]:
    """Run the entry script against a temporary /kaggle/input built from local files (on CPU unless
    ``env_extra`` sets CUDA_VISIBLE_DEVICES); ``copy_to`` keeps /kaggle/working's files. Returns
    (problems, the kernel's report)."""
    import pandas as pd

    from lmsys_arena.data import Competition
    from lmsys_arena.metrics import SubmissionError, validate_submission

    meta = read_json(kdir / "kernel-metadata.json")
    plan = read_json(kdir / "kernel_plan.json")
    local = {read_json(p)["id"]: p.parent for p in datasets_dir.glob("*/dataset-metadata.json")}
    with tempfile.TemporaryDirectory(prefix="lmsys_kaggle_sim_") as tmp:
        inp, work = Path(tmp) / "input", Path(tmp) / "working"
        inp.mkdir()
        work.mkdir()
        (inp / COMPETITION).symlink_to(data.resolve(), target_is_directory=True)
        for ds in meta["dataset_sources"]:
            if ds not in local:
                return [f"dataset {ds} not built: run `make kernel-datasets`"], {}
            (inp / ds.split("/")[1]).symlink_to(local[ds].resolve(), target_is_directory=True)
        for run, info in plan["runs"].items():
            bb = info.get("backbone", {})
            if bb.get("kind") == "model_source":
                if not bb.get("local") or not Path(bb["local"]).exists():
                    return [f"{run}: backbone {bb['handle']} has no local copy to simulate with"], {}
                _owner, model, framework, variation, version = bb["handle"].split("/")
                target = inp / model / framework / variation / version
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.symlink_to(Path(bb["local"]).resolve(), target_is_directory=True)
        env = {**os.environ, "LMSYS_KAGGLE_INPUT": str(inp), "LMSYS_KAGGLE_WORKING": str(work),
               "LMSYS_KERNEL_SIM": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env_extra or {})}
        env.pop("LMSYS_DEADLINE", None)
        t0 = time.time()
        try:
            r = subprocess.run([sys.executable, str((kdir / meta["code_file"]).resolve())], cwd=work, env=env,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [f"simulated run exceeded {timeout}s"], {}
        secs = time.time() - t0
        if copy_to is not None:
            shutil.copytree(work, copy_to, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cache", "models"))
            (Path(copy_to) / "kernel.log").write_text(r.stderr)
        if r.returncode:
            return [f"simulated run failed (exit {r.returncode}): {r.stderr.strip()[-1500:]}"], {}
        sub_path = work / "submission.csv"
        if not sub_path.exists():
            return ["simulated run wrote no submission.csv"], {}
        try:
            validate_submission(pd.read_csv(sub_path, dtype={"id": str}), Competition(data).test()["id"],
                                name="simulated submission.csv")
        except SubmissionError as e:
            return [str(e)], {}
        report = json.loads((work / "kernel_report.json").read_text())
        report["wall_seconds"] = round(secs, 1)
        if "lmsys_kernel_site_" not in report.get("package", ""):
            return [f"the simulated run imported lmsys_arena from {report.get('package')}, not from the "
                    f"dataset's wheel"], report
        report["log_tail"] = r.stderr.strip().splitlines()[-3:]
        return [], report


def simulation_data(kdir: Path, runs_root: Path = Path("runs")) -> Path:
    """The competition folder to simulate with: the one the kernel's runs were trained on if it is here
    (its test.csv), else input/lmsys-chatbot-arena, else the bundled input/sample."""
    from lmsys_arena.runner import default_data_dir

    plan = read_json(kdir / "kernel_plan.json")
    for run, info in plan["runs"].items():
        cfg_file = runs_root / run / "config.json"
        if info["family"] != "blend" and cfg_file.exists():
            data = (read_json(cfg_file).get("run") or {}).get("data")
            if data and (Path(data) / "test.csv").exists():
                return Path(data)
    data = default_data_dir()
    if not (data / "test.csv").exists():
        raise FileNotFoundError(f"no competition folder to simulate with ({data}/test.csv); pass --data DIR")
    return data


def check_kernels(names: list[str] | None = None, *, out: Path = KERNELS_DIR, data: Path | None = None,
                  simulate: bool = True, wheel_check: bool = True, timeout: int = 600) -> list[CheckResult]:
    datasets_dir = out / "datasets"
    results = []
    if wheel_check:
        code = datasets_dir / CODE_SLUG
        res = CheckResult(f"datasets/{CODE_SLUG}")
        if not code.exists():
            res.problems.append("not built: run `make kernel-datasets`")
        else:
            t0 = time.time()
            res.problems += check_wheelhouse(code)
            ws = read_json(code / "wheelset.json") if (code / "wheelset.json").exists() else {}
            res.notes.append(f"{len(list(code.glob('*.whl')))} wheels ({ws.get('wheels', '?')}) installed offline "
                             f"into an empty venv in {time.time() - t0:.0f}s")
            if ws.get("wheels") != "full":
                res.warnings.append("minimal wheelhouse (our wheel only): fine for checks, `make push` refuses it")
        results.append(res)
    for kdir in kernel_dirs(names, out):
        res = check_metadata(kdir, datasets_dir)
        if simulate and res.ok:
            sim_data = Path(data) if data else simulation_data(kdir)
            problems, report = simulate_kernel(kdir, sim_data, datasets_dir, timeout=timeout)
            res.problems += problems
            if report:
                res.notes.append(f"simulated run on {sim_data}: valid submission in {report['wall_seconds']}s "
                                 f"(runs {report['runs']}, {report['rows_filled']} rows filled)")
        results.append(res)
    return results


def demo_check(data: Path | None = None, rows: int = 400, wheels: str = "full") -> list[CheckResult]:
    """No kernels built yet (e.g. a fresh clone): build and check a demo kernel in a temporary project —
    xgb + the ``tiny`` LLM on ``rows`` rows of the bundled sample (2 folds), blended; the full wheelhouse."""
    from lmsys_arena.config import load_config
    from lmsys_arena.data import Competition
    from lmsys_arena.ensemble import ensemble_runs
    from lmsys_arena.folds import make_folds, write_folds
    from lmsys_arena.runner import RunSpec, infer_run, train_run

    data = Path(data or Path(__file__).resolve().parents[2] / "input" / "sample").resolve()
    cache = Path(os.environ.get("LMSYS_WHEELHOUSE_CACHE", "cache/wheelhouse")).resolve()
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="lmsys_kernel_demo_") as tmp:
        os.chdir(tmp)
        os.environ["LMSYS_WHEELHOUSE_CACHE"] = str(cache)
        try:
            log.info("no kernels in %s/: checking a demo kernel (xgb + tiny LLM, %d rows of %s) in %s",
                     KERNELS_DIR, rows, data, tmp)
            write_folds(make_folds(Competition(data).train(), k=2, seed=42), Path("folds") / f"{data.name}.csv")
            members = [("xgb", {"num_boost_round": 30, "early_stopping_rounds": 10}), ("tiny", {})]
            for name, over in members:
                cfg = load_config(name, over)
                for key in ("search_space", "tune"):
                    cfg.pop(key, None)
                train_run(cfg, Path("runs") / name, RunSpec(data=str(data), max_rows=rows))
                infer_run(Path("runs") / name)
            ensemble_runs([m for m, _ in members], "demo")
            build_kernel("demo", opts=KernelOptions(user=PLACEHOLDER_USER))
            build_datasets(["demo"], wheels=wheels)
            return check_kernels(["demo"], data=data)
        finally:
            os.chdir(old_cwd)


def format_results(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"{'OK  ' if r.ok else 'FAIL'} {r.name}")
        lines += [f"     problem: {p}" for p in r.problems]
        lines += [f"     warning: {w}" for w in r.warnings]
        lines += [f"     {n}" for n in r.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- make push

def kaggle_credentials() -> str | None:
    """Where credentials come from, or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    cfg_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    for f in ("kaggle.json", "access_token"):
        if (cfg_dir / f).exists():
            return str(cfg_dir / f)
    return None


def _kaggle(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("kaggle", path=str(Path(sys.executable).parent)) or shutil.which("kaggle")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "kaggle", *args]
    log.info("$ kaggle %s", " ".join(args))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.stdout.strip():
        log.info("%s", r.stdout.strip())
    if check and r.returncode:
        raise KernelError(f"kaggle {' '.join(args)} failed: {(r.stderr or r.stdout).strip()[-800:]}")
    return r


def push(names: list[str] | None = None, *, out: Path = KERNELS_DIR, message: str | None = None,
         allow_minimal: bool = False, wait_s: int = 900) -> None:
    source = kaggle_credentials()
    if not source:
        raise KernelError("no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or put "
                          "kaggle.json in ~/.kaggle/ (https://www.kaggle.com/settings -> API); nothing was pushed")
    kdirs = kernel_dirs(names, out)
    datasets_dir = out / "datasets"
    for k in kdirs:
        meta = read_json(k / "kernel-metadata.json")
        if meta["id"].startswith(PLACEHOLDER_USER + "/"):
            raise KernelError(f"{k}: built without a Kaggle user; rebuild: make kernels kernel-datasets")
        res = check_metadata(k, datasets_dir)
        if not res.ok:
            raise KernelError(f"{k}: {'; '.join(res.problems)} (run `make check-kernels`)")
    ws = read_json(datasets_dir / CODE_SLUG / "wheelset.json")
    if ws.get("wheels") != "full" and not allow_minimal:
        raise KernelError("the code dataset has the minimal wheelhouse: rebuild with `make kernel-datasets` "
                          "(WHEELS=full, the default) before pushing")
    log.info("pushing with credentials from %s", source)
    msg = message or f"lmsys-arena {_package_version()} {time.strftime('%Y-%m-%d %H:%M')}"
    wanted = {ds for k in kdirs for ds in read_json(k / "kernel-metadata.json")["dataset_sources"]}
    local = {read_json(p)["id"]: p.parent for p in datasets_dir.glob("*/dataset-metadata.json")}
    for ds in sorted(wanted):
        exists = _kaggle("datasets", "status", ds, check=False).returncode == 0
        if exists:
            _kaggle("datasets", "version", "-p", str(local[ds]), "-m", msg, "--dir-mode", "zip")
        else:
            _kaggle("datasets", "create", "-p", str(local[ds]), "--dir-mode", "zip")
    for ds in sorted(wanted):
        _wait_ready(ds, wait_s)
    for k in kdirs:
        _kaggle("kernels", "push", "-p", str(k))
        log.info("pushed %s: follow it with `kaggle kernels status %s`", k.name,
                 read_json(k / "kernel-metadata.json")["id"])


def _wait_ready(ds: str, wait_s: int) -> None:
    t0 = time.time()
    while time.time() - t0 < wait_s:
        r = _kaggle("datasets", "status", ds, check=False)
        status = (r.stdout or "").strip().lower()
        if "ready" in status:
            return
        if "error" in status:
            raise KernelError(f"dataset {ds}: {r.stdout.strip()}")
        time.sleep(15)
    log.warning("dataset %s not ready after %ds; the kernel may start before it is", ds, wait_s)


# --------------------------------------------------------------------------- CLI

def _parse_pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} expects RUN=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def cli(args: argparse.Namespace) -> None:
    from lmsys_arena.config import parse_set_args

    cmd = args.command
    if cmd == "kernels":
        if args.name and len(args.runs) > 1:
            raise ValueError("--name needs a single run; build one kernel per run, or `make ensemble` first")
        opts = KernelOptions(budget_hours=args.budget_hours, model_sources=_parse_pairs(args.model_source,
                                                                                         "--model-source"),
                             llm_overrides={"infer.dtype": "fp16", **parse_set_args(args.llm_set)},
                             fallback=args.fallback,
                             private=not args.public, machine_shape=args.machine_shape)
        for run in args.runs:
            print(build_kernel(run, args.name, opts))
    elif cmd == "kernel-datasets":
        for d in build_datasets(args.names or None, wheels=args.wheels):
            print(d)
    elif cmd == "check-kernels":
        if not args.names and not list(KERNELS_DIR.glob("*/kernel-metadata.json")):
            results = demo_check(args.data)
        else:
            results = check_kernels(args.names or None, data=args.data, simulate=not args.no_sim,
                                    wheel_check=not args.no_wheel_check)
        print(format_results(results))
        if not all(r.ok for r in results):
            raise SystemExit(1)
    elif cmd == "push":
        try:
            push(args.names or None, message=args.message)
        except KernelError as e:
            print(f"push: {e}", file=sys.stderr)
            raise SystemExit(1)
