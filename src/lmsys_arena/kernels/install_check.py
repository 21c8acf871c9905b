"""The code dataset installed offline into an empty venv: our wheel and the dependency wheels this
interpreter can take, ``pip check`` on the result (what the image provides excused), then an import of the
package and its entry script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from lmsys_arena.io import read_json
from lmsys_arena.kernels.image import normalize
from lmsys_arena.kernels.requirements import TRAIN_ONLY, is_provided, is_renamed, requirement_name
from lmsys_arena.kernels.wheels import WHEELSET_FILE

# a `pip check` line about a requirement that is absent (not one at the wrong version)
NOT_INSTALLED = re.compile(r"^(\S+) \S+ requires ([A-Za-z0-9_.\-]+), which is not installed")


def _wheel_fits_here(path: Path) -> bool:
    """Whether this interpreter can install the wheel (a wheel for another Python is left to the resolve
    check); a file whose name is no wheel name is tried, so that the install reports it."""
    from packaging.tags import sys_tags
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        tags = parse_wheel_filename(path.name)[3]
    except InvalidWheelFilename:
        return True
    return not tags.isdisjoint(set(sys_tags()))


def _dist_of(wheel: Path) -> str:
    return normalize(wheel.name.split("-")[0])


def check_wheelhouse(code_dir: Path, wheels_dir: Path | None = None) -> list[str]:
    """Install our wheel and the dependency wheels this interpreter can take into an empty venv with
    --no-index (pip isolated from this machine's config); then `pip check` may only miss what the image
    provides or what was left for the resolve check; then import the package."""
    with tempfile.TemporaryDirectory(prefix="lmsys_wheelcheck_") as tmp:
        venv = Path(tmp) / "venv"
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        py = venv / "bin" / "python"
        pip = [sys.executable, "-m", "pip", "--isolated", "--python", str(py)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        dirs = [code_dir] + ([wheels_dir] if wheels_dir else [])
        every = sorted(p for d in dirs for p in d.glob("*.whl"))
        wheels = [str(p) for p in every if _wheel_fits_here(p)]
        skipped = {_dist_of(p) for p in every if not _wheel_fits_here(p)}
        r = subprocess.run(
            [*pip, "install", "-q", "--no-index", "--no-deps", "--no-compile", *wheels],
            capture_output=True,
            text=True,
            env=env,
        )
        if r.returncode:
            return [f"offline install into an empty venv failed: {r.stderr.strip()[-800:]}"]
        r = subprocess.run([*pip, "check"], capture_output=True, text=True, env=env)
        wheelset = read_json(code_dir / WHEELSET_FILE) if (code_dir / WHEELSET_FILE).exists() else {}
        problems = _pip_check_problems(r.stdout, wheelset, skipped)
        return problems + _import_problems(py, env, tmp)


def _pip_check_problems(report: str, wheelset: dict, skipped: set[str]) -> list[str]:
    """`pip check`'s complaints, less the missing requirements that are fine here: what the image has, a
    wheel for another Python, training-only ones, Kaggle's names, anything of ours in a minimal wheelhouse."""
    image, problems = wheelset.get("image"), []
    for line in report.splitlines():
        m = NOT_INSTALLED.search(line)
        if m and (
            is_provided(m.group(2), image)
            or normalize(m.group(2)) in skipped
            or (m.group(1) == "lmsys-arena" and (requirement_name(m.group(2)) in TRAIN_ONLY or is_renamed(m.group(2))))
            or (m.group(1) == "lmsys-arena" and wheelset.get("wheels") != "full")
        ):
            continue  # the image has it / another Python's wheel / training-only / Kaggle's name / minimal
        if line.strip() and "No broken requirements" not in line:
            problems.append(f"pip check: {line.strip()}")
    return problems


def _import_problems(py: Path, env: dict, cwd: str) -> list[str]:
    """The package and its entry script import in the venv (user site off: only what was installed)."""
    r = subprocess.run(
        [str(py), "-c", "import lmsys_arena, lmsys_arena.kernels.entry"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONNOUSERSITE": "1"},
        cwd=cwd,
    )
    if r.returncode:
        return [f"import in the empty venv failed: {r.stderr.strip()[-600:]}"]
    return []
