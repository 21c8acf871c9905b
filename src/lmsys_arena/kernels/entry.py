#!/usr/bin/env python
"""Kaggle kernel entry script: offline install, GBDT + LLM inference, blend, /kaggle/working/submission.csv.

`make kernels` copies this file verbatim as the kernel's code file; everything kernel-specific is read
from ``kernel_plan.json`` in the kernel's artefacts dataset. It runs on Kaggle (T4 x2, internet off) and,
for `make check-kernels`, in a local simulation of the /kaggle folders:

    LMSYS_KAGGLE_INPUT=/tmp/sim/input LMSYS_KAGGLE_WORKING=/tmp/sim/working LMSYS_KERNEL_SIM=1 python <this file>

Steps:
1. (stdlib only) find ``kernel_plan.json`` and the code dataset under the input root; install the wheels with
   ``pip --no-index`` (our package with ``--no-deps``, then ``requirements-kernel.txt`` from the code and
   wheels datasets, the image's packages staying where they suffice; a simulation installs only our wheel,
   into a temporary folder);
2. log ``torch.cuda.device_count()``; each trained run's family makes its config fit the kernel
   (``prepare_for_kernel``: e.g. an LLM's backbone path, fp16); the runs without a time guard predict first
   (GBDT: seconds), then the time-guarded ones (LLM: the family's predict spreads rows over every visible
   GPU) under ``LMSYS_DEADLINE`` = start + budget (``budget_hours`` in the plan, default 8.5 h; env
   ``LMSYS_KERNEL_BUDGET_H`` overrides). Rows not reached come back as NaN logits; a crash of a time-guarded
   run counts as all its rows unreached;
3. the plan's blend tree is applied with the saved weights; a member missing on a row drops out of that
   row's blend (the remaining weights renormalised), so unfinished rows get the GBDT-only prediction. Rows
   still missing take the ``fallback`` run, then the training class prior;
4. the submission is validated against test.csv's ids and written; ``kernel_report.json`` beside it says
   what ran, how long, and how many rows were filled.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAN_FILE = "kernel_plan.json"
REQUIREMENTS_FILE = "requirements-kernel.txt"
WHEELSET_FILE = "wheelset.json"
PACKAGE_WHEEL_GLOB = "lmsys_arena-*.whl"
REPORT_FILE = "kernel_report.json"
DEFAULT_BUDGET_HOURS = 8.5

log = logging.getLogger("kernel")


# --------------------------------------------------------------------------- stage 1: stdlib only


def input_root() -> Path:
    return Path(os.environ.get("LMSYS_KAGGLE_INPUT", "/kaggle/input"))


def working_dir() -> Path:
    return Path(os.environ.get("LMSYS_KAGGLE_WORKING", "/kaggle/working"))


def find_files(root: Path, name: str) -> list[Path]:
    """Files called ``name`` (a glob pattern) under ``root``, following symlinks (datasets may be linked)."""
    import fnmatch

    hits = []
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        hits += [Path(dirpath) / f for f in files if fnmatch.fnmatch(f, name)]
    return sorted(hits)


def find_one(root: Path, name: str, what: str) -> Path:
    hits = find_files(root, name)
    if not hits:
        raise FileNotFoundError(f"no {name} under {root}: is the {what} dataset attached to the kernel?")
    if len(hits) > 1:
        log.warning("several %s under %s, using %s", name, root, hits[0])
    return hits[0]


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "-q", *args]
    log.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def wheel_dirs(root: Path, code_dir: Path) -> list[Path]:
    """The code dataset and every wheels dataset (``wheelset.json`` of kind "wheels") under ``root``: pip's
    ``--find-links``. A wheels dataset for another image than the code dataset's is skipped (wrong Python)."""
    own = json.loads((code_dir / WHEELSET_FILE).read_text()) if (code_dir / WHEELSET_FILE).exists() else {}
    dirs = [code_dir]
    for ws in find_files(root, WHEELSET_FILE):
        meta = json.loads(ws.read_text())
        if meta.get("kind") != "wheels" or ws.parent == code_dir:
            continue
        if own.get("image") and meta.get("image") != own["image"]:
            log.warning(
                "%s: wheels for the %s image, the code is for %s: skipped", ws.parent, meta.get("image"), own["image"]
            )
            continue
        dirs.append(ws.parent)
    return dirs


def _installed(name: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def install(code_dir: Path, simulate: bool, links: list[Path] | None = None) -> None:
    """Install the package wheel (+ what the image lacks, from the wheels dataset) without internet."""
    wheels = sorted(code_dir.glob(PACKAGE_WHEEL_GLOB))
    if not wheels:
        raise FileNotFoundError(f"{code_dir}: no {PACKAGE_WHEEL_GLOB}; rebuild with `make kernel-datasets`")
    if simulate:  # leave the developer's environment alone: our wheel only, into a temporary folder
        target = Path(tempfile.mkdtemp(prefix="lmsys_kernel_site_"))
        _pip("--no-deps", "--target", str(target), str(wheels[-1]))
        sys.path.insert(0, str(target))
        return
    find_links = [arg for d in (links or [code_dir]) for arg in ("--find-links", str(d))]
    _pip("--no-deps", *find_links, str(wheels[-1]))
    req = code_dir / REQUIREMENTS_FILE
    if not req.exists():
        return
    lines = [x.strip() for x in req.read_text().splitlines() if x.strip() and not x.startswith("#")]
    # xgboost-cpu and xgboost install the same module: the image's CUDA build goes first
    if any(x.startswith("xgboost-cpu") for x in lines) and _installed("xgboost"):
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "xgboost"], check=False)
    try:
        _pip(*find_links, "-r", str(req))
    except subprocess.CalledProcessError:  # one unsatisfiable line must not cost the others
        log.error("installing %s failed as a whole; trying each requirement alone", req)
        for line in lines:
            try:
                _pip(*find_links, line)
            except subprocess.CalledProcessError:
                log.error("could not install %s offline; the image's version stays", line)


# --------------------------------------------------------------------------- stage 2: needs lmsys_arena


def gpu_summary() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": None, "cuda_devices": 0}
    n = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(n)]
    log.info("torch %s, %d CUDA device(s) %s", torch.__version__, n, names)
    if 0 < n < 2:
        log.warning("only %d GPU visible: LLM inference will take about twice as long as on T4 x2", n)
    return {"torch": torch.__version__, "cuda_devices": n, "devices": names}


def find_competition_dir(root: Path, slug: str) -> Path:
    direct = root / slug
    if (direct / "test.csv").exists():
        return direct
    for test in find_files(root, "test.csv"):
        if (test.parent / "sample_submission.csv").exists():
            return test.parent
    raise FileNotFoundError(f"no {slug}/test.csv under {root}: add the competition as a data source")


def predict_leaf(run: str, info: dict, test, artefacts: Path, root: Path, overrides: dict, folds_report=None,
                 skew_report=None):  # fmt: skip
    """Model-averaged log-probabilities of one trained run; rows no model reached stay NaN. ``info`` is the
    run's entry in the plan (its family's kernel assets included); ``folds_report`` (a dict) gets how many
    rows each model scored (0: skipped by the time guard). Each model's golden rows (golden.py) are scored
    with the test rows and their features recomputed; ``skew_report`` (a dict) gets what differs from
    training time, and a run with a mismatch comes back all NaN (its rows fall back, as after the time guard)."""
    import numpy as np
    import pandas as pd

    from lmsys_arena import families, golden
    from lmsys_arena.deadline import deadline_passed
    from lmsys_arena.ensemble import fold_average_logprobs
    from lmsys_arena.runs import Run
    from lmsys_arena.versions import library_versions

    saved = Run(artefacts / "runs" / run)
    cfg, _inputs = saved.model_config()
    family = families.of(cfg)
    fam = family.load()
    skew = skew_report if skew_report is not None else {}
    trained = (saved.read_config().get("provenance") or {}).get("libraries") or {}
    skew["versions"] = golden.compare_versions(trained, library_versions())
    if skew["versions"]:
        log.info("%s: library versions differ from training: %s", run, skew["versions"])
    prepare = getattr(fam, "prepare_for_kernel", None)
    if prepare is not None:  # e.g. an LLM: its backbone on this machine, its T4 precision
        cfg = prepare(cfg, info, root, artefacts, overrides)
    per_model, problems = [], {}
    for name in info.get("models") or [f"fold{f}" for f in info["folds"]]:
        t0 = time.time()
        if family.time_guarded and deadline_passed():  # do not even load the model for another fold
            log.warning("%s %s: skipped, the time budget is used up", run, name)
            per_model.append(np.full((len(test), 3), np.nan))
            if folds_report is not None:
                folds_report[name] = 0
            continue
        model_dir = saved.path / name
        gold = golden.read(model_dir)
        rows = test if gold is None else pd.concat([test, golden.rows_of(gold)], ignore_index=True)
        logits = np.asarray(fam.predict(cfg, rows, model_dir), dtype=np.float64)
        logits, gold_logits = logits[: len(test)], logits[len(test) :]
        if gold is not None:
            found = golden.check(gold, gold_logits, golden.family_features(fam, cfg, golden.rows_of(gold)))
            if found:
                problems[name] = found
                log.error("%s %s: TRAIN/SERVE SKEW on its golden rows: %s", run, name, "; ".join(found))
        done = np.isfinite(logits).all(axis=1)
        if folds_report is not None:
            folds_report[name] = int(done.sum())
        log.info("%s %s: %d/%d rows in %.1fs", run, name, int(done.sum()), len(test), time.time() - t0)
        per_model.append(logits)
    skew["golden"] = problems or "ok"
    if problems:
        log.error("%s: golden rows do not match training time: its rows fall back", run)
        return np.full((len(test), 3), np.nan)
    return fold_average_logprobs(per_model)


def run_plan(plan: dict, artefacts: Path, root: Path, working: Path, deadline: float) -> dict:
    import numpy as np

    import lmsys_arena
    from lmsys_arena import families
    from lmsys_arena.data import COMPETITION_NAME, Competition
    from lmsys_arena.deadline import deadline_passed
    from lmsys_arena.ensemble import evaluate_tree
    from lmsys_arena.predictions import frame_from_logprobs
    from lmsys_arena.runner import write_submission

    t_start = time.time()
    report = {"plan": plan["name"], "package": str(Path(lmsys_arena.__file__).parent), **gpu_summary(), "runs": {}}
    log.info("lmsys_arena from %s", report["package"])
    comp = Competition(find_competition_dir(root, plan.get("competition", COMPETITION_NAME)))
    test = comp.test()
    log.info("test: %d rows from %s", len(test), comp.test_csv)

    kinds = {r: families.get(i["family"]) for r, i in plan["runs"].items()}
    leaves = {r: i for r, i in plan["runs"].items() if kinds[r].trains}
    order = sorted(leaves, key=lambda r: kinds[r].time_guarded)  # unguarded (GBDT) first: the fallback is ready early
    os.environ["LMSYS_DEADLINE"] = str(deadline)
    preds = {}
    for r in order:
        t0, fold_rows, skew = time.time(), {}, {}
        info, guarded = leaves[r], kinds[r].time_guarded
        if guarded and deadline_passed():
            log.warning("%s: time budget used up before it started; its rows fall back", r)
            preds[r] = np.full((len(test), 3), np.nan)
        else:
            try:
                preds[r] = predict_leaf(r, info, test, artefacts, root, plan.get("llm_overrides", {}), fold_rows, skew)
            except Exception:
                if not guarded:
                    raise
                log.exception("%s: %s inference failed; its rows fall back", r, info["family"])
                preds[r] = np.full((len(test), 3), np.nan)
        done = int(np.isfinite(preds[r]).all(axis=1).sum())
        report["runs"][r] = {"family": info["family"], "rows_done": done, "seconds": round(time.time() - t0, 1),
                             "models": len(info.get("models") or info["folds"]),
                             "models_contributed": sum(v > 0 for v in fold_rows.values()),
                             "rows_by_model": dict(fold_rows), "precision": info.get("precision"),
                             "golden": skew.get("golden"), "versions_differ": skew.get("versions")}  # fmt: skip
        if skew.get("golden") not in (None, "ok"):
            report.setdefault("skew", {})[r] = skew["golden"]

    logp = np.array(evaluate_tree(plan["root"], plan["runs"], preds), dtype=np.float64)  # a copy: filled below
    missing = ~np.isfinite(logp).all(axis=1)
    report["rows_filled"] = int(missing.sum())
    filled_from = None
    if missing.any() and plan.get("fallback") in plan["runs"]:
        filled_from = plan["fallback"]
        fb = evaluate_tree(filled_from, plan["runs"], preds)
        logp[missing] = fb[missing]
        missing = ~np.isfinite(logp).all(axis=1)
    if missing.any():
        filled_from = (filled_from or "") + "+prior"
        logp[missing] = np.log(np.asarray(plan["prior"], dtype=np.float64))
    report["filled_from"] = filled_from
    frame = frame_from_logprobs(test["id"], logp)
    write_submission(frame, working / "submission.csv", test["id"])
    report["seconds"] = round(time.time() - t_start, 1)
    (working / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "wrote %s (%d rows; %d rows filled from %s) in %.1fs",
        working / "submission.csv",
        len(frame),
        report["rows_filled"],
        filled_from,
        report["seconds"],
    )
    return report


def main() -> None:
    t0 = time.time()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    root, working = input_root(), working_dir()
    working.mkdir(parents=True, exist_ok=True)
    plan_path = find_one(root, PLAN_FILE, "artefacts")
    plan = json.loads(plan_path.read_text())
    budget_h = float(os.environ.get("LMSYS_KERNEL_BUDGET_H") or plan.get("budget_hours", DEFAULT_BUDGET_HOURS))
    deadline = t0 + budget_h * 3600
    log.info(
        "plan %s from %s; LLM time budget %.2f h (until %s)",
        plan["name"],
        plan_path,
        budget_h,
        time.strftime("%H:%M:%S", time.localtime(deadline)),
    )
    code_dir = find_one(root, PACKAGE_WHEEL_GLOB, "code").parent
    install(code_dir, simulate=os.environ.get("LMSYS_KERNEL_SIM") == "1", links=wheel_dirs(root, code_dir))
    os.chdir(working)  # caches (features) land in the writable folder
    run_plan(plan, unpack_if_zipped(plan_path.parent, working), root, working, deadline)


def unpack_if_zipped(artefacts: Path, working: Path) -> Path:
    """Folders uploaded with ``--dir-mode zip`` are normally unpacked by Kaggle; if they arrive as
    ``runs.zip`` / ``backbones.zip``, unpack them into the writable folder and read from there."""
    import shutil
    import zipfile

    zips = [z for z in artefacts.glob("*.zip") if not (artefacts / z.stem).exists()]
    if not zips:
        return artefacts
    dest = working / "_artefacts"
    dest.mkdir(parents=True, exist_ok=True)
    for item in artefacts.iterdir():
        if item.suffix == ".zip":
            with zipfile.ZipFile(item) as zf:
                zf.extractall(dest / item.stem if not _zip_has_top(zf, item.stem) else dest)
        elif not (dest / item.name).exists():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest / item.name)
    log.info("unpacked %s into %s", [z.name for z in zips], dest)
    return dest


def _zip_has_top(zf, name: str) -> bool:
    return all(n.startswith(name + "/") for n in zf.namelist())


if __name__ == "__main__":
    main()
