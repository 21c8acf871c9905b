"""The Kaggle notebook images a kernel can target, as data: Python version and wheel tags, the value of
kernel-metadata's ``docker_image_pinning_type``, and the distributions the image already has (the wheelhouse
ships only what is missing, :mod:`.wheels`).

``LMSYS_KAGGLE_IMAGE=latest|original`` (or the ``image`` argument of the builders) picks one; default ``latest``.

Where the package lists come from:

- ``latest``: ``installed_cpu_packages.txt`` of Kaggle/docker-python (a ``pip freeze`` of the current CPU
  image, built on Colab's Python 3.12 runtime; read from a stored copy of the repository, not fetched live),
  reduced to the distributions our dependency closure touches. The GPU image is the same package set with a
  CUDA build of torch, whose CUDA libraries come as ``nvidia-*`` / ``cuda-*`` wheels (hence
  ``provided_prefixes``). bitsandbytes and gguf are not in that freeze: they are shipped. The image moves
  (``latest`` is whatever Kaggle runs on the day): ``make check-kernels`` checks against this table, not the
  live image.
- ``original``: the image this 2024 competition ran in (May-Aug 2024: Kaggle's own conda-based image before
  the Colab base, Python 3.10, torch 2.1.2 built by Kaggle from source, TF 2.15). Lower confidence: the
  versions are those pinned in kaggle_requirements.txt of the time (scikit-learn 1.2.2, xgboost 2.0.3), the
  torch of Kaggle's build config before its "TF 2.16 with Torch 2.4.0" update (merged 2024-08-16), and for
  the unpinned rest the releases current in spring 2024. Only distributions we are fairly sure the image had
  are listed: anything left out is shipped, which costs space but not correctness. Its torch was not a PyPI
  wheel, so no ``nvidia-*`` wheels are assumed. Its torch misses lmsys-arena[llm]'s floor, so LLM kernels
  cannot run on it as it is:
- ``original-torch``: the same image, its torch replaced: the wheels dataset ships PyPI's torch 2.6.0 (the
  oldest torch the kernel's transformers 5 runs on: it disables PyTorch below 2.6; CUDA 12.4 wheels) with its
  ``nvidia-*`` CUDA wheels and triton, and the matching torchvision 0.21.0 (the image's was built against
  torch 2.1.2). About 3 GB of wheels: for LLM kernels that must run in the competition's environment. Checked
  here: the set resolves for cp310, and the package's LLM path runs on that torch and transformers (Python
  3.11, CPU); never run on Kaggle from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

IMAGE_ENV = "LMSYS_KAGGLE_IMAGE"
DEFAULT_IMAGE = "latest"
WHEELS_SLUG_PREFIX = "lmsys-arena-wheels"
MANYLINUX_X86_64 = tuple(f"manylinux_2_{n}_x86_64" for n in (35, 34, 31, 28, 27, 24, 17, 12, 5)) + (
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)


@dataclass(frozen=True)
class KaggleImage:
    name: str
    python: str  # "3.12"
    pinning: str | None  # kernel-metadata docker_image_pinning_type ("original" / "latest"); None: leave it out
    provided: dict[str, str]  # normalised distribution name -> the version the image has
    provided_prefixes: tuple[str, ...] = ()  # whole families the image has (torch's CUDA wheels)
    torch: tuple[str, ...] = ()  # the torch (+ companions) its wheels ship in place of the image's own; () none
    platforms: tuple[str, ...] = MANYLINUX_X86_64
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def wheels_slug(self) -> str:
        return wheels_slug(self.name)

    def markers(self) -> dict[str, str]:
        """The environment markers of the image's interpreter (PEP 508)."""
        return {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
            "python_version": self.python,
            "python_full_version": self.python + ".0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
        }

    def version_of(self, name: str) -> str | None:
        return self.provided.get(normalize(name))

    def has(self, name: str) -> bool:
        n = normalize(name)
        return n in self.provided or n.startswith(self.provided_prefixes)

    def satisfies(self, name: str, specifier: str = "") -> bool:
        """Whether the image's own copy of ``name`` meets ``specifier`` (a family from ``provided_prefixes``
        counts as met: its versions follow the image's torch)."""
        from packaging.specifiers import SpecifierSet

        version = self.version_of(name)
        if version is None:
            return self.has(name)
        return SpecifierSet(specifier).contains(version, prereleases=True)


def normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def wheels_slug(image_name: str) -> str:
    """The dependency-wheels dataset of an image: ``lmsys-arena-wheels-<image>``."""
    return f"{WHEELS_SLUG_PREFIX}-{image_name}"


_LATEST = {
    # the frameworks
    "torch": "2.10.0",
    "transformers": "5.0.0",
    "tokenizers": "0.22.2",
    "safetensors": "0.7.0",
    "huggingface-hub": "1.10.1",
    "hf-xet": "1.4.3",
    "accelerate": "1.13.0",
    "peft": "0.18.1",
    "sentencepiece": "0.2.1",
    # data and GBDT
    "numpy": "2.4.6",
    "pandas": "2.3.3",
    "polars": "1.35.2",
    "polars-runtime-32": "1.35.2",
    "pyarrow": "24.0.0",
    "scipy": "1.16.3",
    "scikit-learn": "1.6.1",
    "xgboost": "3.2.0",
    "lightgbm": "4.6.0",
    "joblib": "1.5.3",
    "threadpoolctl": "3.6.0",
    "narwhals": "2.19.0",
    "python-dateutil": "2.9.0.post0",
    "pytz": "2025.2",
    "tzdata": "2026.1",
    "six": "1.17.0",
    # small shared dependencies
    "pyyaml": "6.0.3",
    "tqdm": "4.67.3",
    "packaging": "26.0",
    "filelock": "3.25.2",
    "fsspec": "2025.3.0",
    "regex": "2025.11.3",
    "requests": "2.32.4",
    "urllib3": "2.5.0",
    "idna": "3.11",
    "certifi": "2026.2.25",
    "charset-normalizer": "3.4.7",
    "psutil": "5.9.5",
    "jinja2": "3.1.6",
    "markupsafe": "3.0.3",
    "networkx": "3.6.1",
    "sympy": "1.14.0",
    "mpmath": "1.3.0",
    "typing-extensions": "4.15.0",
    "click": "8.3.2",
    "typer": "0.24.1",
    "typer-slim": "0.24.0",
    "rich": "13.9.4",
    "pygments": "2.20.0",
    "markdown-it-py": "4.0.0",
    "mdurl": "0.1.2",
    "shellingham": "1.5.4",
    "httpx": "0.28.1",
    "httpcore": "1.0.9",
    "h11": "0.16.0",
    "anyio": "4.13.0",
    "sniffio": "1.3.1",
    "pydantic": "2.12.3",
    "pydantic-core": "2.41.4",
    "annotated-types": "0.7.0",
    "typing-inspection": "0.4.2",
    "annotated-doc": "0.0.4",
    "cloudpickle": "3.1.2",
    "protobuf": "5.29.5",
    "setuptools": "75.2.0",
    "pip": "24.1.2",
    "wheel": "0.46.3",
}

_ORIGINAL = {
    "torch": "2.1.2",
    "numpy": "1.26.4",
    "pandas": "2.2.2",
    "pyarrow": "16.1.0",
    "scipy": "1.11.4",
    "scikit-learn": "1.2.2",
    "xgboost": "2.0.3",
    "lightgbm": "4.2.0",
    "transformers": "4.41.2",
    "tokenizers": "0.19.1",
    "safetensors": "0.4.3",
    "huggingface-hub": "0.23.2",
    "accelerate": "0.30.1",
    "sentencepiece": "0.2.0",
    "joblib": "1.4.2",
    "threadpoolctl": "3.2.0",
    "python-dateutil": "2.9.0.post0",
    "pytz": "2024.1",
    "tzdata": "2024.1",
    "six": "1.16.0",
    "pyyaml": "6.0.1",
    "tqdm": "4.66.4",
    "packaging": "21.3",
    "filelock": "3.13.1",
    "fsspec": "2024.3.1",
    "regex": "2023.12.25",
    "requests": "2.32.3",
    "urllib3": "1.26.18",
    "idna": "3.6",
    "certifi": "2024.2.2",
    "charset-normalizer": "3.3.2",
    "psutil": "5.9.3",
    "jinja2": "3.1.2",
    "markupsafe": "2.1.3",
    "networkx": "3.2.1",
    "sympy": "1.12",
    "mpmath": "1.3.0",
    "typing-extensions": "4.9.0",
    "protobuf": "3.20.3",
    "setuptools": "69.0.3",
    "pip": "23.3.2",
    "wheel": "0.42.0",
}

IMAGES: dict[str, KaggleImage] = {
    "latest": KaggleImage(
        name="latest",
        python="3.12",
        pinning="latest",
        provided=_LATEST,
        provided_prefixes=("nvidia-", "cuda-", "triton"),
        source="Kaggle/docker-python installed_cpu_packages.txt (pip freeze of the current image) + its GPU torch",
    ),
    "original": KaggleImage(
        name="original",
        python="3.10",
        pinning="original",
        provided=_ORIGINAL,
        source="Kaggle/docker-python, spring 2024: kaggle_requirements.txt pins, torch 2.1.2 build; medium confidence",
        notes=(
            "torch 2.1.2: below lmsys-arena[llm]'s torch>=2.6 (transformers 5 disables PyTorch below 2.6), so "
            "LLM runs need the original-torch image (the same image, torch shipped); GBDT-only kernels run here",
        ),
    ),
    "original-torch": KaggleImage(
        name="original-torch",
        python="3.10",
        pinning="original",
        provided={k: v for k, v in _ORIGINAL.items() if k != "torch"},
        torch=("torch==2.6.0", "torchvision==0.21.0"),
        source="the original image with PyPI's torch 2.6.0 (CUDA 12.4 wheels) shipped in place of its 2.1.2",
        notes=(
            "ships torch 2.6.0 with its CUDA 12.4 wheels (about 3 GB) so that LLM kernels run on the original image",
        ),
    ),
}


def get_image(name: str | KaggleImage | None = None) -> KaggleImage:
    """The image ``name`` (a :class:`KaggleImage` passes through), else ``$LMSYS_KAGGLE_IMAGE``, else latest."""
    if isinstance(name, KaggleImage):
        return name
    key = name or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    if key not in IMAGES:
        raise ValueError(f"unknown Kaggle image {key!r} ({IMAGE_ENV} or --image): one of {sorted(IMAGES)}")
    return IMAGES[key]
