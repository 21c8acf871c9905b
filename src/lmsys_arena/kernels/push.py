"""`make push`: ``kaggle datasets create/version`` for the kernels' datasets, wait until they are ready,
then ``kaggle kernels push``. Refuses without credentials, with placeholder ids, failed metadata checks or
the minimal wheelhouse."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lmsys_arena.io import read_json
from lmsys_arena.kernels.check import check_metadata
from lmsys_arena.kernels.plan import (
    CODE_SLUG,
    KERNELS_DIR,
    METADATA_FILE,
    PLACEHOLDER_USER,
    KernelError,
    datasets_under,
    kaggle_config_dir,
    kernel_dirs,
    local_datasets,
)
from lmsys_arena.kernels.wheels import WHEELSET_FILE
from lmsys_arena.versions import package_version

log = logging.getLogger(__name__)


def kaggle_credentials() -> str | None:
    """Where credentials come from, or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for f in ("kaggle.json", "access_token"):
        if (kaggle_config_dir() / f).exists():
            return str(kaggle_config_dir() / f)
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


def push(names=None, *, out: Path = KERNELS_DIR, message=None, allow_minimal=False, wait_s=900) -> None:
    source = kaggle_credentials()
    if not source:
        raise KernelError(
            "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or put "
            "kaggle.json in ~/.kaggle/ (https://www.kaggle.com/settings -> API); nothing was pushed"
        )
    kdirs = kernel_dirs(names, out)
    datasets = datasets_under(out)
    metas = {k: read_json(k / METADATA_FILE) for k in kdirs}
    for k, meta in metas.items():
        if meta["id"].startswith(PLACEHOLDER_USER + "/"):
            raise KernelError(f"{k}: built without a Kaggle user; rebuild: make kernels kernel-datasets")
        res = check_metadata(k, datasets)
        if not res.ok:
            raise KernelError(f"{k}: {'; '.join(res.problems)} (run `make check-kernels`)")
    ws = read_json(datasets / CODE_SLUG / WHEELSET_FILE)
    if ws.get("wheels") != "full" and not allow_minimal:
        raise KernelError(
            "the code dataset has the minimal wheelhouse: rebuild with `make kernel-datasets` "
            "(WHEELS=full, the default) before pushing"
        )
    log.info("pushing with credentials from %s", source)
    msg = message or f"lmsys-arena {package_version()} {time.strftime('%Y-%m-%d %H:%M')}"
    wanted = {ds for meta in metas.values() for ds in meta["dataset_sources"]}
    local = local_datasets(datasets)
    for ds in sorted(wanted):
        exists = _kaggle("datasets", "status", ds, check=False).returncode == 0
        if exists:
            _kaggle("datasets", "version", "-p", str(local[ds]), "-m", msg, "--dir-mode", "zip")
        else:
            _kaggle("datasets", "create", "-p", str(local[ds]), "--dir-mode", "zip")
    for ds in sorted(wanted):
        _wait_ready(ds, wait_s)
    for k, meta in metas.items():
        _kaggle("kernels", "push", "-p", str(k))
        log.info("pushed %s: follow it with `kaggle kernels status %s`", k.name, meta["id"])


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
