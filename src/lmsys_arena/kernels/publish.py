"""`make push`: ``kaggle datasets create/version`` for the kernels' datasets, wait until they are ready,
then ``kaggle kernels push`` (the version Kaggle gives back is kept in ``kernels/<name>/pushed.json``).
Refuses without credentials, with placeholder ids, failed metadata checks or the minimal wheelhouse.

`make submit NAME=<kernel> [VERSION=<n>]`: ``kaggle competitions submit <competition> -k <owner/slug>
-v <n> -f submission.csv -m <message>`` (a code competition scores the kernel version's output); the version
defaults to the last one `make push` recorded."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lmsys_arena.data import COMPETITION_NAME
from lmsys_arena.io import read_json, write_json
from lmsys_arena.kernels.metadata_check import check_metadata
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

PUSHED_FILE = "pushed.json"
UPLOADED_FILE = ".uploaded.json"  # kernels/datasets/: the content hash of each dataset as last uploaded
SUBMISSION_FILE = "submission.csv"
NO_CREDENTIALS = (
    "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or put "
    "kaggle.json in ~/.kaggle/ (https://www.kaggle.com/settings -> API)"
)


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
        raise KernelError(f"{NO_CREDENTIALS}; nothing was pushed")
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
    uploaded = read_json(datasets / UPLOADED_FILE) if (datasets / UPLOADED_FILE).exists() else {}
    for ds in sorted(wanted):
        exists = _kaggle("datasets", "status", ds, check=False).returncode == 0
        digest = dataset_digest(local[ds])
        if exists and uploaded.get(ds) == digest:
            log.info("dataset %s unchanged since its last upload: not versioned again", ds)
            continue
        if exists:
            _kaggle("datasets", "version", "-p", str(local[ds]), "-m", msg, "--dir-mode", "zip")
        else:
            _kaggle("datasets", "create", "-p", str(local[ds]), "--dir-mode", "zip")
        uploaded[ds] = digest
        write_json(datasets / UPLOADED_FILE, uploaded)
    for ds in sorted(wanted):
        _wait_ready(ds, wait_s)
    for k, meta in metas.items():
        r = _kaggle("kernels", "push", "-p", str(k))
        m = re.search(r"[Kk]ernel version (\d+)", r.stdout or "")
        version = int(m.group(1)) if m else None
        write_json(k / PUSHED_FILE, {"id": meta["id"], "version": version, "message": msg, "at": time.time()})
        log.info(
            "pushed %s (version %s): follow it with `kaggle kernels status %s`, then `make submit NAME=%s`",
            k.name,
            version if version is not None else "?",
            meta["id"],
            k.name,
        )


def submit(name: str, version: int | str | None = None, message: str | None = None, *, out: Path = KERNELS_DIR):
    """Submit version ``version`` of kernel ``name`` (default: the last one `make push` recorded) to the
    competition: its ``submission.csv`` output is scored. Without credentials nothing is sent."""
    source = kaggle_credentials()
    if not source:
        raise KernelError(f"{NO_CREDENTIALS}; nothing was submitted")
    kdir = kernel_dirs([name], out)[0]
    meta = read_json(kdir / METADATA_FILE)
    if meta["id"].startswith(PLACEHOLDER_USER + "/"):
        raise KernelError(f"{kdir}: built without a Kaggle user; rebuild and push it first")
    if version is None:
        pushed = read_json(kdir / PUSHED_FILE) if (kdir / PUSHED_FILE).exists() else {}
        version = pushed.get("version") if pushed.get("id") == meta["id"] else None
        if version is None:
            raise KernelError(
                f"no pushed version of {meta['id']} recorded in {kdir / PUSHED_FILE}: "
                f"`make push NAMES={name}` first, or pass VERSION=<n> (see `kaggle kernels status {meta['id']}`)"
            )
    if not str(version).isdigit():
        raise KernelError(f"VERSION must be a kernel version number, got {version!r}")
    competition = (meta.get("competition_sources") or [COMPETITION_NAME])[0]
    msg = message or f"{name} v{version} (lmsys-arena {package_version()})"
    log.info("submitting %s version %s to %s with credentials from %s", meta["id"], version, competition, source)
    args = ["competitions", "submit", competition, "-k", meta["id"], "-v", str(version)]
    _kaggle(*args, "-f", SUBMISSION_FILE, "-m", msg)
    log.info("submitted: `kaggle competitions submissions %s` shows its score", competition)


def dataset_digest(ddir: Path) -> str:
    """A content hash of a dataset folder (every file's path and bytes)."""
    h = hashlib.sha1()
    for f in sorted(p for p in ddir.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(ddir)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


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
