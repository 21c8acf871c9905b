"""What produced a file: this package's version, its git commit, and the versions of the libraries a
model depends on (recorded in every run's config.json and printed by ``--version``)."""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path

# distributions whose version can change a model's predictions (xgboost-cpu is xgboost without CUDA)
MODEL_LIBRARIES = (
    "numpy",
    "pandas",
    "polars",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "xgboost",
    "xgboost-cpu",
    "lightgbm",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "tokenizers",
    "bitsandbytes",
)


def package_version() -> str:
    try:
        return importlib.metadata.version("lmsys-arena")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout the package is imported from (``+dirty`` with uncommitted changes);
    None for an installed wheel (no git checkout around it) or without git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty else "")


def library_versions(names=MODEL_LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def version_line() -> str:
    return f"lmsys-arena {package_version()} (git {git_commit() or 'unknown'})"
