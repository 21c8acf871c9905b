"""The code dataset ``<user>/lmsys-arena-code``: this package as a wheel, ``requirements-kernel.txt`` and the
wheelhouse.

The wheelhouse is the dependency closure of the kernel's requirements for Kaggle's Python (cp311, manylinux
x86_64, binary wheels only), *minus* what Kaggle's GPU image provides and is too big to ship: torch and its
CUDA stack (:data:`PROVIDED`). On Kaggle pip keeps every installed package that satisfies a requirement and
takes the rest from the wheelhouse (``--no-index``). The requirements are the installed distribution's own
(its core dependencies and the ``llm`` extra, as they apply on Kaggle's Linux), without the training-only
ones; xgboost and lightgbm are pinned to the versions the models were trained with (model-file
compatibility). ``WHEELS=minimal`` ships our wheel only (tests, quick checks); ``make push`` refuses it.
"""

from __future__ import annotations

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
import urllib.parse
import urllib.request
from pathlib import Path

from lmsys_arena.io import write_json, write_text
from lmsys_arena.kernels.entry import PACKAGE_WHEEL_GLOB, REQUIREMENTS_FILE
from lmsys_arena.kernels.plan import CODE_SLUG, DATASET_METADATA_FILE, DATASETS_DIR, KernelError, dataset_metadata

log = logging.getLogger(__name__)

DIST_NAME = "lmsys-arena"
WHEELSET_FILE = "wheelset.json"
# Kaggle's image has these (torch with its CUDA stack: GBs); the wheelhouse never ships them. torch's small
# pure-Python dependencies (filelock, sympy, ...) are shipped: transformers needs some of them too.
PROVIDED = {"torch", "triton", "setuptools", "pip", "wheel"}
PROVIDED_PREFIXES = ("nvidia-", "cuda-")
KERNEL_EXTRAS = ("llm",)  # the extras a kernel needs (its torch is Kaggle's: PROVIDED); tune/kaggle/dev are not
# never in a kernel, even where an install lists them among the core dependencies
TRAIN_ONLY = {"optuna", "matplotlib", "datasets", "optuna-dashboard", "psycopg2-binary", "kaggle", "six"}
PINNED = ("xgboost", "lightgbm")  # model files: same version as training
KAGGLE_NAMES = {"xgboost-cpu": "xgboost"}  # a local distribution -> the one Kaggle's image has
EXTRA_KERNEL_REQUIREMENTS = ["bitsandbytes"]  # 8-bit weights option on the T4s
PY_VERSION, PY_ABI = "3.11", "cp311"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (35, 34, 31, 28, 27, 24, 17, 12, 5)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
KAGGLE_MARKERS = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "python_version": PY_VERSION,
    "implementation_name": "cpython",
}


# --------------------------------------------------------------------------- requirements


def _req_name(req: str) -> str:
    """A requirement's distribution name as the kernel installs it (normalised; xgboost-cpu -> xgboost)."""
    name = re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")
    return KAGGLE_NAMES.get(name, name)


def _package_requirements() -> list[str]:
    """The installed distribution's requirements that apply on Kaggle with :data:`KERNEL_EXTRAS`
    (markers evaluated for Kaggle's Linux and Python, then dropped)."""
    from packaging.requirements import Requirement

    try:
        lines = importlib.metadata.requires(DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        raise KernelError(f"{DIST_NAME} is not installed: `pip install -e .` in the project root") from None
    out = []
    for line in lines:
        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate({**KAGGLE_MARKERS, "extra": e}) for e in ("", *KERNEL_EXTRAS)):
            continue
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out.append(f"{req.name}{extras}{req.specifier}")
    return out


def kernel_requirements() -> list[str]:
    """What the kernel needs at inference: the package's requirements minus training-only ones, xgboost and
    lightgbm pinned to the local versions, plus bitsandbytes (8-bit option)."""
    reqs = []
    for r in _package_requirements() + list(PINNED) + EXTRA_KERNEL_REQUIREMENTS:
        name = _req_name(r)
        if name in TRAIN_ONLY or name in PROVIDED or any(name == _req_name(x) for x in reqs):
            continue
        if name in PINNED:
            version = _local_version(name)
            if version:
                r = f"{name}=={version}"
            else:
                log.warning("%s is not installed here: the kernel requirement stays unpinned", name)
                r = name
        reqs.append(r)
    return reqs


def _local_version(name: str) -> str | None:
    for dist in (name, *[local for local, kaggle in KAGGLE_NAMES.items() if kaggle == name]):
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


def is_renamed(name: str) -> bool:
    """A local distribution the kernel installs under Kaggle's name (xgboost-cpu: xgboost)."""
    return name.lower().replace("_", "-") in KAGGLE_NAMES


# --------------------------------------------------------------------------- wheels


def project_root() -> Path:
    """The source to build our wheel from: the current folder when it is the project root (every command
    runs there), else the checkout an editable install points to."""
    cwd = Path.cwd()
    if (cwd / "pyproject.toml").exists() and (cwd / "src" / "lmsys_arena").is_dir():
        return cwd
    # every copy of the metadata on sys.path: a wheel build leaves src/lmsys_arena.egg-info (no direct_url.json)
    for dist in importlib.metadata.distributions(name=DIST_NAME):
        try:
            url = urllib.parse.urlparse(json.loads(dist.read_text("direct_url.json") or "{}").get("url", ""))
        except json.JSONDecodeError:
            continue
        root = Path(urllib.request.url2pathname(url.path))
        if url.scheme == "file" and (root / "pyproject.toml").exists():
            return root
    raise KernelError(
        f"no {DIST_NAME} source to build the wheel from: run from the project root (the folder "
        f"with pyproject.toml), or install the package from a checkout (`pip install -e <checkout>`)"
    )


def build_package_wheel(dest: Path) -> Path:
    """``lmsys_arena-<version>-py3-none-any.whl`` of the project (no deps, no build isolation: offline)."""
    root = project_root()
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(PACKAGE_WHEEL_GLOB):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp, str(root)],
            check=True,
            cwd=tmp,
        )
        whl = next(Path(tmp).glob(PACKAGE_WHEEL_GLOB))
        shutil.move(str(whl), dest / whl.name)
    log.info("built %s from %s", dest / whl.name, root)
    return dest / whl.name


def _target_args() -> list[str]:
    args = [
        "--only-binary=:all:",
        "--python-version",
        PY_VERSION,
        "--implementation",
        "cp",
        "--abi",
        PY_ABI,
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
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
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--dry-run",
                "--ignore-installed",
                "--report",
                str(report),
                "--target",
                str(Path(tmp) / "t"),
                *_target_args(),
                *reqs,
            ],
            check=True,
        )
        pins = []
        for item in json.loads(report.read_text())["install"]:
            name, version = item["metadata"]["name"], item["metadata"]["version"]
            if not is_provided(name):
                pins.append(f"{name}=={version.split('+')[0]}")
    log.info("downloading %d wheels into %s", len(pins), cache)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *_target_args(), "-d", str(cache), *pins],
        check=True,
    )
    marker.write_text(f"{len(pins)} wheels: {' '.join(pins)}\n")
    return cache


# --------------------------------------------------------------------------- the dataset folder


def build_code_dataset(user: str, wheels: str = "full", out: Path = DATASETS_DIR) -> Path:
    if wheels not in ("full", "minimal"):
        raise ValueError(f"--wheels must be full or minimal, got {wheels!r}")
    ddir = out / CODE_SLUG
    if ddir.exists():
        shutil.rmtree(ddir)
    ddir.mkdir(parents=True)
    build_package_wheel(ddir)
    reqs = kernel_requirements()
    write_text(ddir / REQUIREMENTS_FILE, "\n".join(reqs) + "\n")
    if wheels == "full":
        for whl in resolve_wheelhouse(reqs).glob("*.whl"):
            _link_or_copy(whl, ddir / whl.name)
    write_json(ddir / DATASET_METADATA_FILE, dataset_metadata(f"{user}/{CODE_SLUG}", "lmsys arena code"))
    write_json(
        ddir / WHEELSET_FILE,
        {"wheels": wheels, "requirements": reqs, "files": sorted(p.name for p in ddir.glob("*.whl"))},
    )
    n = len(list(ddir.glob("*.whl")))
    size = sum(p.stat().st_size for p in ddir.glob("*.whl")) / 2**20
    log.info("code dataset %s: %d wheels, %.1f MiB (%s)", ddir, n, size, wheels)
    return ddir


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
