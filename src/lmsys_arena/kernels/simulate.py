"""A kernel's entry script run end to end against a temporary ``/kaggle`` built from local files: the
competition folder, the dataset folders of ``make kernel-datasets`` and, for each Kaggle model source, its
local copy (on CPU unless the caller makes GPUs visible)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lmsys_arena.data import COMPETITION_NAME
from lmsys_arena.io import read_json
from lmsys_arena.kernels.entry import PLAN_FILE, REPORT_FILE
from lmsys_arena.kernels.plan import METADATA_FILE, assets_of_kind, local_datasets
from lmsys_arena.runs import RUNS_DIR, Run


def _link_model_sources(plan: dict, inp: Path) -> list[str]:
    """Each model source's local copy where Kaggle mounts it (``<input>/<model>/<framework>/<variation>/<version>``)."""
    for run, asset in assets_of_kind(plan, "model_source"):
        if not asset.get("local") or not Path(asset["local"]).exists():
            return [f"{run}: {asset['handle']} has no local copy to simulate with"]
        _owner, model, framework, variation, version = asset["handle"].split("/")
        target = inp / model / framework / variation / version
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(Path(asset["local"]).resolve(), target_is_directory=True)
    return []


def simulate_kernel(
    kdir: Path,
    data: Path,
    datasets_dir: Path,
    timeout: int = 600,
    env_extra: dict | None = None,
    copy_to: Path | None = None,
) -> tuple[list[str], dict]:
    """Run the entry script against a temporary /kaggle/input built from local files (on CPU unless
    ``env_extra`` sets CUDA_VISIBLE_DEVICES); ``copy_to`` keeps /kaggle/working's files. Returns
    (problems, the kernel's report)."""

    from lmsys_arena.data import Competition
    from lmsys_arena.metrics import SubmissionError, read_submission, validate_submission

    meta = read_json(kdir / METADATA_FILE)
    plan = read_json(kdir / PLAN_FILE)
    local = local_datasets(datasets_dir)
    with tempfile.TemporaryDirectory(prefix="lmsys_kaggle_sim_") as tmp:
        inp, work = Path(tmp) / "input", Path(tmp) / "working"
        inp.mkdir()
        work.mkdir()
        (inp / COMPETITION_NAME).symlink_to(data.resolve(), target_is_directory=True)
        for ds in meta["dataset_sources"]:
            if ds not in local:
                return [f"dataset {ds} not built: run `make kernel-datasets`"], {}
            (inp / ds.split("/")[1]).symlink_to(local[ds].resolve(), target_is_directory=True)
        problems = _link_model_sources(plan, inp)
        if problems:
            return problems, {}
        env = {
            **os.environ,
            "LMSYS_KAGGLE_INPUT": str(inp),
            "LMSYS_KAGGLE_WORKING": str(work),
            "LMSYS_KERNEL_SIM": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **(env_extra or {}),
        }
        env.pop("LMSYS_DEADLINE", None)
        t0 = time.time()
        try:
            r = subprocess.run(
                [sys.executable, str((kdir / meta["code_file"]).resolve())],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
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
            validate_submission(
                read_submission(sub_path),
                Competition(data).test()["id"],
                name="simulated submission.csv",
            )
        except SubmissionError as e:
            return [str(e)], {}
        report = json.loads((work / REPORT_FILE).read_text())
        report["wall_seconds"] = round(secs, 1)
        if "lmsys_kernel_site_" not in report.get("package", ""):
            return [
                f"the simulated run imported lmsys_arena from {report.get('package')}, not from the dataset's wheel"
            ], report
        report["log_tail"] = r.stderr.strip().splitlines()[-3:]
        return [], report


def simulation_data(kdir: Path, runs_root: Path = RUNS_DIR) -> Path:
    """The competition folder to simulate with: the one the kernel's runs were trained on if it is here
    (its test.csv), else input/lmsys-chatbot-arena, else the bundled input/sample."""
    from lmsys_arena.data import default_data_dir

    plan = read_json(kdir / PLAN_FILE)
    for run in plan["runs"]:
        data = Run.named(run, runs_root).data_dir()
        if data:
            return Path(data)
    data = default_data_dir()
    if not (data / "test.csv").exists():
        raise FileNotFoundError(f"no competition folder to simulate with ({data}/test.csv); pass --data DIR")
    return data
