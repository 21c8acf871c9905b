"""What produced a file: this package's version, its git commit, and the versions of the libraries a
model depends on (recorded in every run's config.json and printed by ``--version``)."""

from __future__ import annotations

import functools
import hashlib
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


def file_sha1(path: str | Path | None) -> str | None:
    if not path or not Path(path).exists():
        return None
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def provenance(spec) -> dict:
    """What produced a run: versions, git commit and input file hashes (recorded, not compared)."""
    out = {"package": package_version(), "git_commit": git_commit(), "libraries": library_versions()}
    if spec is not None:
        comp = spec.competition()
        out["data_sha1"] = {
            "train": file_sha1(comp.train_csv),
            "test": file_sha1(comp.test_csv),
            "extra": file_sha1(spec.extra),
            "folds": file_sha1(spec.resolved_folds_file()),
        }
    return out
