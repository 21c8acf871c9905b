"""The kernel's Python packages, as two datasets:

- ``<user>/lmsys-arena-code``: this package as a wheel, ``requirements-kernel.txt`` (what the kernel installs)
  and ``wheelset.json``; small, so a code change re-uploads a few hundred KB;
- ``<user>/lmsys-arena-wheels-<image>``: the dependency wheels the target Kaggle image (:mod:`.image`) lacks,
  for its Python and platform (binary wheels only), with its own copy of the requirements and wheelset.

``requirements-kernel.txt`` keeps what the image does not already satisfy (:mod:`.requirements`). The
wheelhouse is the closure of that list, resolved as if the image's own distributions were installed (pinned
to the image's versions where they meet every specifier in the closure), minus what the image has; torch and
its CUDA stack are never shipped, except for an image whose torch is replaced (``original-torch``: the image's
torch misses the package's floor, so its wheels ship a PyPI torch with its CUDA wheels). On Kaggle pip runs
with ``--no-index``: the image's packages stay, the rest come from the wheels. ``WHEELS=minimal`` ships our
wheel only (tests, quick checks); ``make push`` refuses it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

from lmsys_arena.io import write_json, write_text
from lmsys_arena.kernels.entry import PACKAGE_WHEEL_GLOB, REQUIREMENTS_FILE, WHEELSET_FILE
from lmsys_arena.kernels.image import KaggleImage, get_image, normalize, wheels_slug
from lmsys_arena.kernels.plan import CODE_SLUG, DATASET_METADATA_FILE, DATASETS_DIR, KernelError, dataset_metadata
from lmsys_arena.kernels.requirements import (
    DIST_NAME,
    PROVIDED,
    framework_requirements,
    never_shipped,
    split_requirements,
)

log = logging.getLogger(__name__)

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


def target_args(image: KaggleImage | str | None = None) -> list[str]:
    """pip's options for the image's interpreter and platform, binary wheels only."""
    img = get_image(image)
    args = ["--only-binary=:all:", "--python-version", img.python, "--implementation", "cp"]
    for abi in (img.abi, "abi3", "none"):
        args += ["--abi", abi]
    for p in img.platforms:
        args += ["--platform", p]
    return args


def _resolve(reqs: list[str], img: KaggleImage, constraints: dict[str, str], tmp: Path) -> list[dict]:
    """pip's resolution of ``reqs`` for the image (metadata only): the report's install items."""
    report, cfile = tmp / "report.json", tmp / "constraints.txt"
    cfile.write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report", str(report)]
    cmd += ["--target", str(tmp / "t"), "-c", str(cfile), *target_args(img), *reqs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise KernelError(
            f"the kernel requirements do not resolve for the {img.name} image (Python {img.python}) with its "
            f"own versions of {sorted(constraints) or 'nothing'}: {(r.stderr or r.stdout).strip()[-1500:]}"
        )
    return json.loads(report.read_text())["install"]


def _image_pins(items: list[dict], reqs: list[str], img: KaggleImage) -> dict[str, str]:
    """The image's own version for every distribution in the closure where it meets every specifier the
    closure places on it (what the image has and nobody needs newer is not shipped); torch and its stack
    (never shipped) always take the image's version."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = {**default_environment(), **img.markers()}
    specs: dict[str, list[str]] = defaultdict(list)
    for line in reqs + [d for it in items for d in it["metadata"].get("requires_dist") or []]:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({**env, "extra": ""}):
            continue
        specs[normalize(req.name)].append(str(req.specifier))
    pins = {}
    for it in items:
        name = normalize(it["metadata"]["name"])
        version = img.version_of(name)
        if version is None:
            continue
        if never_shipped(name, img) or all(img.satisfies(name, s) for s in specs[name]):
            pins[name] = version
        else:
            log.info("%s image: %s %s misses %s: shipping %s", img.name, name, version, specs[name], name)
    return pins


def resolve_wheelhouse(reqs: list[str], cache_root: Path | None = None, image: KaggleImage | str | None = None) -> Path:
    """Download the closure of ``reqs`` for the image's Python and platform, minus what the image has
    (:func:`_image_pins`) and what is never shipped; cached by content under ``cache/wheelhouse/`` (or
    ``$LMSYS_WHEELHOUSE_CACHE``)."""
    img = get_image(image)
    cache_root = Path(cache_root or os.environ.get("LMSYS_WHEELHOUSE_CACHE", "cache/wheelhouse"))
    key_data = [reqs, list(img.platforms), img.python, sorted(img.provided.items()), img.provided_prefixes, img.torch]
    key = hashlib.sha1(json.dumps([key_data, sorted(PROVIDED)]).encode()).hexdigest()[:12]
    cache = cache_root / f"{img.name}-{key}"
    marker = cache / ".complete"
    if marker.exists():
        log.info("wheelhouse cache hit: %s (%s)", cache, marker.read_text().strip()[:200])
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    pins: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log.info("resolving for the %s image (%s, metadata only): %s", img.name, img.abi, " ".join(reqs) or "-")
        items = _resolve(reqs, img, pins, Path(tmp)) if reqs else []
        for _ in range(4):  # the image's versions can change what else the resolver picks: until stable
            new = _image_pins(items, reqs, img)
            if new == pins:
                break
            pins = new
            items = _resolve(reqs, img, pins, Path(tmp))
    ship = []
    for it in items:
        name, version = it["metadata"]["name"], it["metadata"]["version"]
        if not never_shipped(name, img) and normalize(name) not in pins:  # the image lacks it, or a version it can use
            ship.append(f"{name}=={version.split('+')[0]}")
    log.info("downloading %d wheels into %s", len(ship), cache)
    if ship:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *target_args(img), "-d", str(cache), *ship],
            check=True,
        )
    write_json(cache / "resolution.json", {"image": img.name, "ship": ship, "image_pins": pins})
    marker.write_text(f"{len(ship)} wheels: {' '.join(ship)}\n")
    return cache


# --------------------------------------------------------------------------- the dataset folders


def wheels_dataset_id(user: str, image: KaggleImage | str | None = None) -> str:
    return f"{user}/{wheels_slug(get_image(image).name)}"


def _wheelset(kind: str, wheels: str, img: KaggleImage, ship: list[str], from_image: list[str], ddir: Path) -> dict:
    return {
        "kind": kind,
        "wheels": wheels,
        "image": img.name,
        "python": img.python,
        "abi": img.abi,
        "platforms": list(img.platforms),
        "requirements": ship,
        "from_image": from_image,
        "framework": framework_requirements(img),
        "files": sorted(p.name for p in ddir.glob("*.whl")),
    }


def build_wheels_dataset(
    user: str, image: KaggleImage | str | None = None, wheels: str = "full", out: Path = DATASETS_DIR
) -> Path:
    """``<user>/lmsys-arena-wheels-<image>``: the wheels the image lacks (none with ``wheels="minimal"``)."""
    img = get_image(image)
    ddir = out / wheels_slug(img.name)
    if ddir.exists():
        shutil.rmtree(ddir)
    ddir.mkdir(parents=True)
    ship, from_image = split_requirements(img)
    write_text(ddir / REQUIREMENTS_FILE, "\n".join(ship) + "\n")
    if wheels == "full":
        for whl in resolve_wheelhouse(ship, image=img).glob("*.whl"):
            _link_or_copy(whl, ddir / whl.name)
    title = f"lmsys arena wheels {img.name}"
    write_json(ddir / DATASET_METADATA_FILE, dataset_metadata(wheels_dataset_id(user, img), title))
    write_json(ddir / WHEELSET_FILE, _wheelset("wheels", wheels, img, ship, from_image, ddir))
    n, size = len(list(ddir.glob("*.whl"))), sum(p.stat().st_size for p in ddir.glob("*.whl")) / 2**20
    log.info("wheels dataset %s (%s image, Python %s): %d wheels, %.1f MiB", ddir, img.name, img.python, n, size)
    return ddir


def build_code_datasets(
    user: str, wheels: str = "full", out: Path = DATASETS_DIR, image: KaggleImage | str | None = None
) -> list[Path]:
    """The code dataset (our wheel, the image's ``requirements-kernel.txt``) and the image's wheels dataset."""
    if wheels not in ("full", "minimal"):
        raise ValueError(f"--wheels must be full or minimal, got {wheels!r}")
    img = get_image(image)
    ddir = out / CODE_SLUG
    if ddir.exists():
        shutil.rmtree(ddir)
    ddir.mkdir(parents=True)
    build_package_wheel(ddir)
    ship, from_image = split_requirements(img)
    write_text(ddir / REQUIREMENTS_FILE, "\n".join(ship) + "\n")
    write_json(ddir / DATASET_METADATA_FILE, dataset_metadata(f"{user}/{CODE_SLUG}", "lmsys arena code"))
    ws = _wheelset("code", wheels, img, ship, from_image, ddir)
    write_json(ddir / WHEELSET_FILE, {**ws, "wheels_dataset": wheels_dataset_id(user, img)})
    log.info("code dataset %s: our wheel, %d requirements for the %s image", ddir, len(ship), img.name)
    return [ddir, build_wheels_dataset(user, img, wheels, out)]


def build_code_dataset(
    user: str, wheels: str = "full", out: Path = DATASETS_DIR, image: KaggleImage | str | None = None
) -> Path:
    """:func:`build_code_datasets`; returns the code dataset's folder (the wheels dataset lies beside it)."""
    return build_code_datasets(user, wheels, out, image)[0]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
