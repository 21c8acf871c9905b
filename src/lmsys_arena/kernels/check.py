"""`make check-kernels`: every kernel's metadata and files (with the kaggle CLI's own validators), the code
dataset installed offline into an empty venv, and a simulated run of each kernel (:mod:`.simulate`). With no
kernels built yet (a fresh clone) it checks a demo kernel (xgb + tiny, blended) in a temporary project.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmsys_arena.data import COMPETITION_NAME
from lmsys_arena.io import read_json
from lmsys_arena.kernels.entry import PACKAGE_WHEEL_GLOB, PLAN_FILE, REQUIREMENTS_FILE
from lmsys_arena.kernels.plan import (
    CODE_SLUG,
    DATASET_METADATA_FILE,
    KERNELS_DIR,
    MACHINE_SHAPES,
    METADATA_FILE,
    PLACEHOLDER_USER,
    KernelOptions,
    assets_of_kind,
    build_kernel,
    datasets_under,
    kernel_dirs,
    local_datasets,
    slugify,
)
from lmsys_arena.kernels.wheels import TRAIN_ONLY, WHEELSET_FILE, _req_name, is_provided, is_renamed
from lmsys_arena.runs import Run

log = logging.getLogger(__name__)


@dataclass
class CheckResult:
    name: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _kaggle_api():
    """The kaggle CLI's own validators (importing kaggle tries to authenticate; failures are ignored)."""
    with open(os.devnull, "w") as devnull:
        old = sys.stdout
        sys.stdout = devnull
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        finally:
            sys.stdout = old
    return KaggleApi()


def check_metadata(kdir: Path, datasets_dir: Path) -> CheckResult:
    res = CheckResult(kdir.name)
    try:
        meta = read_json(kdir / METADATA_FILE)
    except (OSError, json.JSONDecodeError) as e:
        res.problems.append(f"{METADATA_FILE} unreadable: {e}")
        return res
    api = _kaggle_api()
    must = {"language": "python", "kernel_type": "script", "enable_gpu": True, "enable_internet": False}
    for key, want in must.items():
        if meta.get(key) is not want and meta.get(key) != want:
            res.problems.append(f"{key} is {meta.get(key)!r}, expected {want!r}")
    for key in (
        "id",
        "title",
        "code_file",
        "is_private",
        "machine_shape",
        "competition_sources",
        "dataset_sources",
        "model_sources",
    ):
        if key not in meta:
            res.problems.append(f"missing key {key!r}")
    if meta.get("machine_shape") not in MACHINE_SHAPES:
        res.problems.append(f"machine_shape {meta.get('machine_shape')!r} not in {sorted(MACHINE_SHAPES)}")
    if COMPETITION_NAME not in meta.get("competition_sources", []):
        res.problems.append(f"competition_sources lacks {COMPETITION_NAME!r}")
    title = meta.get("title") or ""
    if len(title) < 5:
        res.problems.append("title must be at least five characters (kaggle)")
    code = kdir / (meta.get("code_file") or "")
    if not meta.get("code_file") or not code.is_file():
        res.problems.append(f"code_file {meta.get('code_file')!r} not found in {kdir}")
    try:
        owner, slug, version = api.parse_kernel_string(meta.get("id", ""))
        if version is not None:
            res.problems.append("kernel id must not carry a version")
        if slug != slugify(title):
            res.problems.append(f"kernel slug {slug!r} does not match the title's slug {slugify(title)!r}")
        for s in meta.get("dataset_sources", []):
            api.validate_dataset_string(s)
        for s in meta.get("kernel_sources", []):
            api.validate_kernel_string(s)
        for s in meta.get("model_sources", []):
            api.validate_model_instance_version_string(s)
        if meta.get("language") not in api.valid_push_language_types:
            res.problems.append(f"language {meta.get('language')!r} not in {api.valid_push_language_types}")
        if meta.get("kernel_type") not in api.valid_push_kernel_types:
            res.problems.append(f"kernel_type {meta.get('kernel_type')!r} not in {api.valid_push_kernel_types}")
    except ValueError as e:
        res.problems.append(f"kaggle: {e}")
    if meta.get("id", "").startswith(PLACEHOLDER_USER + "/"):
        res.warnings.append(
            f"ids use the placeholder user {PLACEHOLDER_USER!r}: rebuild with KAGGLE_USERNAME before `make push`"
        )
    if not (kdir / PLAN_FILE).exists():
        res.problems.append(f"{PLAN_FILE} missing: rebuild with `make kernels`")
    local = local_datasets(datasets_dir)
    for ds in meta.get("dataset_sources", []):
        if ds not in local:
            res.problems.append(f"dataset {ds} not built in {datasets_dir}/: run `make kernel-datasets`")
        else:
            res.problems += [f"dataset {ds}: {p}" for p in check_dataset_dir(local[ds], api)]
    return res


def check_dataset_dir(ddir: Path, api) -> list[str]:
    """kaggle's own create-time checks on dataset-metadata.json, plus the files the kernel needs."""
    problems = []
    meta = read_json(ddir / DATASET_METADATA_FILE)
    ref, title, lic = meta.get("id", ""), meta.get("title", ""), meta.get("licenses", [])
    try:
        api.validate_dataset_string(ref)
        slug = ref.split("/")[1]
        api._validate_slug_syntax(slug)
    except (ValueError, IndexError) as e:
        return [f"id {ref!r}: {e}"]
    if not 6 <= len(slug) <= 50:
        problems.append(f"slug {slug!r} must have 6..50 characters")
    if not 6 <= len(title) <= 50:
        problems.append(f"title {title!r} must have 6..50 characters")
    if len(lic) != 1 or "name" not in lic[0]:
        problems.append("exactly one license with a name is required")
    if slug == CODE_SLUG:
        if not list(ddir.glob(PACKAGE_WHEEL_GLOB)):
            problems.append("no lmsys_arena wheel")
        if not (ddir / REQUIREMENTS_FILE).exists():
            problems.append(f"no {REQUIREMENTS_FILE}")
        return problems
    plan_file = ddir / PLAN_FILE
    if not plan_file.exists():
        return problems + [f"no {PLAN_FILE}"]
    plan = read_json(plan_file)
    for run, info in plan["runs"].items():
        shipped = Run(ddir / "runs" / run)
        if not shipped.config_file.exists():
            problems.append(f"runs/{run}/{shipped.config_file.name} missing")
        for f in info.get("folds", []):
            if not shipped.fold_dir(f).is_dir():
                problems.append(f"runs/{run}/{shipped.fold_dir(f).name}/ missing")
    for run, asset in assets_of_kind(plan, "bundled"):
        if not (ddir / asset["path"]).exists():
            problems.append(f"bundled {asset['path']} ({run}) missing")
    return problems


def check_wheelhouse(code_dir: Path) -> list[str]:
    """Install every wheel into an empty venv with --no-index (pip isolated from this machine's config);
    then `pip check` may only miss what Kaggle provides (:data:`PROVIDED`); then import the package."""
    with tempfile.TemporaryDirectory(prefix="lmsys_wheelcheck_") as tmp:
        venv = Path(tmp) / "venv"
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        py = venv / "bin" / "python"
        pip = [sys.executable, "-m", "pip", "--isolated", "--python", str(py)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        wheels = sorted(str(p) for p in code_dir.glob("*.whl"))
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
        full = wheelset.get("wheels") == "full"
        problems = []
        for line in r.stdout.splitlines():
            m = re.search(r"^(\S+) \S+ requires ([A-Za-z0-9_.\-]+), which is not installed", line)
            if m and (
                is_provided(m.group(2))
                or (
                    m.group(1) == "lmsys-arena"
                    and (not full or _req_name(m.group(2)) in TRAIN_ONLY or is_renamed(m.group(2)))
                )
            ):
                continue  # Kaggle provides it / training-only / shipped as Kaggle's name / the minimal set
            if line.strip() and "No broken requirements" not in line:
                problems.append(f"pip check: {line.strip()}")
        mods = ["lmsys_arena", "lmsys_arena.kernels.entry"]
        if full:
            mods += [
                "lmsys_arena.ensemble",
                "lmsys_arena.gbdt",
                "numpy",
                "pandas",
                "pyarrow",
                "sklearn",
                "scipy",
                "lightgbm",
                "xgboost",
                "yaml",
                "tqdm",
                "transformers",
                "tokenizers",
                "safetensors",
            ]
        r = subprocess.run(
            [str(py), "-c", f"import {', '.join(mods)}"],
            capture_output=True,
            text=True,
            env={**env, "PYTHONNOUSERSITE": "1"},
            cwd=tmp,
        )
        if r.returncode:
            problems.append(f"import in the empty venv failed: {r.stderr.strip()[-600:]}")
        return problems


def check_kernels(
    names: list[str] | None = None,
    *,
    out: Path = KERNELS_DIR,
    data: Path | None = None,
    simulate: bool = True,
    wheel_check: bool = True,
    timeout: int = 600,
) -> list[CheckResult]:
    from lmsys_arena.kernels.simulate import simulate_kernel, simulation_data

    datasets = datasets_under(out)
    results = []
    if wheel_check:
        code = datasets / CODE_SLUG
        res = CheckResult(f"datasets/{CODE_SLUG}")
        if not code.exists():
            res.problems.append("not built: run `make kernel-datasets`")
        else:
            t0 = time.time()
            res.problems += check_wheelhouse(code)
            ws = read_json(code / WHEELSET_FILE) if (code / WHEELSET_FILE).exists() else {}
            res.notes.append(
                f"{len(list(code.glob('*.whl')))} wheels ({ws.get('wheels', '?')}) installed offline "
                f"into an empty venv in {time.time() - t0:.0f}s"
            )
            if ws.get("wheels") != "full":
                res.warnings.append("minimal wheelhouse (our wheel only): fine for checks, `make push` refuses it")
        results.append(res)
    for kdir in kernel_dirs(names, out):
        res = check_metadata(kdir, datasets)
        if simulate and res.ok:
            sim_data = Path(data) if data else simulation_data(kdir)
            problems, report = simulate_kernel(kdir, sim_data, datasets, timeout=timeout)
            res.problems += problems
            if report:
                res.notes.append(
                    f"simulated run on {sim_data}: valid submission in {report['wall_seconds']}s "
                    f"(runs {report['runs']}, {report['rows_filled']} rows filled)"
                )
        results.append(res)
    return results


def demo_check(data: Path | None = None, rows: int = 400, wheels: str = "full") -> list[CheckResult]:
    """No kernels built yet (e.g. a fresh clone): build and check a demo kernel in a temporary project —
    xgb + the ``tiny`` LLM on ``rows`` rows of the project's data (default: the bundled sample; 2 folds),
    blended; the full wheelhouse."""
    from lmsys_arena.config import load_config
    from lmsys_arena.data import Competition, default_data_dir
    from lmsys_arena.ensemble import ensemble_runs
    from lmsys_arena.folds import make_folds, write_folds
    from lmsys_arena.kernels.artefacts import build_datasets
    from lmsys_arena.runner import infer_run, train_run
    from lmsys_arena.runs import RunSpec

    data = Path(data or default_data_dir()).resolve()  # before leaving the project root
    cache = Path(os.environ.get("LMSYS_WHEELHOUSE_CACHE", "cache/wheelhouse")).resolve()
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="lmsys_kernel_demo_") as tmp:
        os.chdir(tmp)
        os.environ["LMSYS_WHEELHOUSE_CACHE"] = str(cache)
        try:
            log.info(
                "no kernels in %s/: checking a demo kernel (xgb + tiny LLM, %d rows of %s) in %s",
                KERNELS_DIR,
                rows,
                data,
                tmp,
            )
            write_folds(make_folds(Competition(data).train(), k=2, seed=42), Path("folds") / f"{data.name}.csv")
            members = [("xgb", {"num_boost_round": 30, "early_stopping_rounds": 10}), ("tiny", {})]
            for name, over in members:
                cfg = load_config(name, over)
                for key in ("search_space", "tune"):
                    cfg.pop(key, None)
                train_run(cfg, Run.named(name).path, RunSpec(data=str(data), max_rows=rows))
                infer_run(Run.named(name).path)
            ensemble_runs([m for m, _ in members], "demo")
            build_kernel("demo", opts=KernelOptions(user=PLACEHOLDER_USER))
            build_datasets(["demo"], wheels=wheels)
            return check_kernels(["demo"], data=data)
        finally:
            os.chdir(old_cwd)


def format_results(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"{'OK  ' if r.ok else 'FAIL'} {r.name}")
        lines += [f"     problem: {p}" for p in r.problems]
        lines += [f"     warning: {w}" for w in r.warnings]
        lines += [f"     {n}" for n in r.notes]
    return "\n".join(lines)
