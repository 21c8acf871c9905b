"""What a kernel installs: the package's own requirements as they apply on the target image (its ``llm``
extra, training-only ones dropped, the GBDTs pinned to the training versions, bitsandbytes added), split into
what the image already meets and what its wheels dataset must ship (:mod:`.wheels` builds that dataset). torch
and its CUDA stack come with the image, except for an image whose torch is replaced (``KaggleImage.torch``)."""

from __future__ import annotations

import importlib.metadata
import logging
import re

from lmsys_arena.kernels.image import KaggleImage, get_image, normalize
from lmsys_arena.kernels.plan import KernelError

log = logging.getLogger(__name__)

DIST_NAME = "lmsys-arena"
# every Kaggle GPU image has these (torch with its CUDA stack: GBs); not shipped unless the image's torch is replaced
PROVIDED = {"torch", "triton", "setuptools", "pip", "wheel"}
PROVIDED_PREFIXES = ("nvidia-", "cuda-")
KERNEL_EXTRAS = ("llm",)  # the extras a kernel needs (its torch is Kaggle's: PROVIDED); tune/kaggle/dev are not
# never in a kernel, even where an install lists them among the core dependencies
TRAIN_ONLY = {"optuna", "matplotlib", "datasets", "optuna-dashboard", "psycopg2-binary", "kaggle", "six"}
PINNED = ("xgboost", "lightgbm")  # model files: same version as training
KAGGLE_NAMES = {"xgboost-cpu": "xgboost"}  # a local distribution -> the one Kaggle's image has
EXTRA_KERNEL_REQUIREMENTS = ["bitsandbytes"]  # 8-bit weights option on the T4s


def requirement_name(req: str) -> str:
    """A requirement's distribution name as the kernel installs it (normalised; xgboost-cpu -> xgboost)."""
    name = re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")
    return KAGGLE_NAMES.get(name, name)


def _package_requirements(image: KaggleImage | str | None = None) -> list[str]:
    """The installed distribution's requirements that apply on the image with :data:`KERNEL_EXTRAS`
    (markers evaluated for its Linux and Python, then dropped)."""
    from packaging.requirements import Requirement

    markers = get_image(image).markers()
    try:
        lines = importlib.metadata.requires(DIST_NAME) or []
    except importlib.metadata.PackageNotFoundError:
        raise KernelError(f"{DIST_NAME} is not installed: `pip install -e .` in the project root") from None
    out = []
    for line in lines:
        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate({**markers, "extra": e}) for e in ("", *KERNEL_EXTRAS)):
            continue
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out.append(f"{req.name}{extras}{req.specifier}")
    return out


def kernel_requirements(image: KaggleImage | str | None = None) -> list[str]:
    """What the kernel needs at inference, whatever the image has: the package's requirements minus
    training-only ones and :data:`PROVIDED`, xgboost and lightgbm pinned to the local versions, plus
    bitsandbytes (8-bit option)."""
    reqs = []
    for r in _package_requirements(image) + list(PINNED) + EXTRA_KERNEL_REQUIREMENTS:
        name = requirement_name(r)
        if name in TRAIN_ONLY or name in PROVIDED or any(name == requirement_name(x) for x in reqs):
            continue
        if name in PINNED:
            version = _local_version(name)
            if version:
                r = f"{name}=={version}"
            else:
                log.warning("%s is not installed here: the kernel requirement stays unpinned", name)
                r = name
        reqs.append(r)
    return reqs + shipped_torch(image)


def shipped_torch(image: KaggleImage | str | None = None) -> list[str]:
    """The torch requirements an image's wheels ship in place of its own (``KaggleImage.torch``), each
    checked against the package's floor; [] for an image whose own torch serves."""
    from packaging.requirements import Requirement

    img = get_image(image)
    if not img.torch:
        return []
    pins = {requirement_name(t): Requirement(t) for t in img.torch}
    for floor in map(Requirement, _package_requirements(img)):
        if requirement_name(floor.name) not in PROVIDED:
            continue
        pin = pins.get(requirement_name(floor.name))
        version = next(iter(pin.specifier)).version if pin else None
        if version is None or not floor.specifier.contains(version, prereleases=True):
            raise KernelError(f"the {img.name} image ships {pin or 'no ' + floor.name}, which misses {floor}")
    return list(img.torch)


def framework_requirements(image: KaggleImage | str | None = None) -> list[str]:
    """The package's requirements on what is never shipped (torch>=...): the image itself must meet them
    (none for an image that ships its torch: :func:`shipped_torch`)."""
    if get_image(image).torch:
        return []
    return [r for r in _package_requirements(image) if requirement_name(r) in PROVIDED]


def _spec(req: str) -> str:
    from packaging.requirements import Requirement

    return str(Requirement(req).specifier)


def split_requirements(image: KaggleImage | str | None = None) -> tuple[list[str], list[str]]:
    """(what the kernel must install, what the image already satisfies) of :func:`kernel_requirements`.
    A pinned GBDT ships only when the image's version differs from the pin; on an image without torch's
    ``nvidia-*`` wheels xgboost ships as ``xgboost-cpu`` (same module and version, no NCCL wheel: the kernel
    uninstalls the image's xgboost first)."""
    img = get_image(image)
    ship, from_image = [], []
    for r in kernel_requirements(img):
        name = requirement_name(r)
        if img.version_of(name) and img.satisfies(name, _spec(r)):
            from_image.append(r)
        elif name == "xgboost" and not img.has("nvidia-nccl-cu12"):  # xgboost needs NCCL's wheel; -cpu does not
            ship.append(f"xgboost-cpu{_spec(r)}")
        else:
            ship.append(r)
    return ship, from_image


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


def never_shipped(name: str, image: KaggleImage | str | None = None) -> bool:
    """torch, its CUDA wheels and the packaging tools; with ``image`` shipping its torch: the tools only."""
    name = normalize(name)
    if image is not None and get_image(image).torch:
        return name in PROVIDED - {"torch", "triton"}
    return name in PROVIDED or name.startswith(PROVIDED_PREFIXES)


def is_provided(name: str, image: KaggleImage | str | None = None) -> bool:
    """Never shipped (torch, its CUDA wheels); with ``image``: or the image has it."""
    return never_shipped(name, image) or (image is not None and get_image(image).has(name))


def is_renamed(name: str) -> bool:
    """A local distribution the kernel installs under Kaggle's name (xgboost-cpu: xgboost)."""
    return name.lower().replace("_", "-") in KAGGLE_NAMES
