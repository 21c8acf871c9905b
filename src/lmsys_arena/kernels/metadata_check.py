"""A kernel's ``kernel-metadata.json`` checked with the kaggle CLI's own validators plus the project's rules
(no internet, a GPU when a run needs one, machine shapes, the image's pinning and wheels dataset), and each
dataset it names: built, its ``dataset-metadata.json`` valid, the files the kernel needs present."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lmsys_arena.data import COMPETITION_NAME
from lmsys_arena.io import read_json
from lmsys_arena.kernels.check_result import CheckResult
from lmsys_arena.kernels.entry import PACKAGE_WHEEL_GLOB, PLAN_FILE, REQUIREMENTS_FILE
from lmsys_arena.kernels.image import IMAGES, WHEELS_SLUG_PREFIX
from lmsys_arena.kernels.plan import (
    CODE_SLUG,
    DATASET_METADATA_FILE,
    MACHINE_SHAPES,
    METADATA_FILE,
    PLACEHOLDER_USER,
    assets_of_kind,
    family_of,
    local_datasets,
    slugify,
)
from lmsys_arena.kernels.wheels import WHEELSET_FILE
from lmsys_arena.runs import Run

REQUIRED_KEYS = (
    "id",
    "title",
    "code_file",
    "is_private",
    "machine_shape",
    "competition_sources",
    "dataset_sources",
    "model_sources",
)


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
    """The kernel folder ``kdir``: its metadata, plan and the datasets (in ``datasets_dir``) it names."""
    res = CheckResult(kdir.name)
    try:
        meta = read_json(kdir / METADATA_FILE)
    except (OSError, json.JSONDecodeError) as e:
        res.problems.append(f"{METADATA_FILE} unreadable: {e}")
        return res
    api = _kaggle_api()
    plan = read_json(kdir / PLAN_FILE) if (kdir / PLAN_FILE).exists() else {}
    res.problems += _setting_problems(meta, plan, api)
    res.problems += _image_problems(meta, plan, datasets_dir)
    res.problems += _field_problems(meta, kdir)
    res.problems += _kaggle_id_problems(meta, api)
    if meta.get("id", "").startswith(PLACEHOLDER_USER + "/"):
        res.warnings.append(
            f"ids use the placeholder user {PLACEHOLDER_USER!r}: rebuild with KAGGLE_USERNAME before `make push`"
        )
    if not (kdir / PLAN_FILE).exists():
        res.problems.append(f"{PLAN_FILE} missing: rebuild with `make kernels`")
    res.problems += _dataset_source_problems(meta, datasets_dir, api)
    return res


def plan_needs_gpu(plan: dict) -> bool:
    """Whether any run of the plan belongs to a family that needs a GPU (an LLM)."""
    return any(family_of(e).gpu for e in (plan.get("runs") or {}).values())


def _setting_problems(meta: dict, plan: dict, api) -> list[str]:
    """Language, script, no internet, a GPU when the plan needs one, a pinning type kaggle knows."""
    problems = []
    must = {"language": "python", "kernel_type": "script", "enable_internet": False}
    if plan_needs_gpu(plan):  # an LLM run; a GBDT-only kernel may run with or without one
        must["enable_gpu"] = True
    elif not isinstance(meta.get("enable_gpu"), bool):
        problems.append(f"enable_gpu is {meta.get('enable_gpu')!r}, expected true or false")
    for key, want in must.items():
        if meta.get(key) is not want and meta.get(key) != want:
            why = " (the plan has a GPU family)" if key == "enable_gpu" else ""
            problems.append(f"{key} is {meta.get(key)!r}, expected {want!r}{why}")
    pinning = meta.get("docker_image_pinning_type")
    if pinning is not None and pinning not in getattr(api, "valid_push_pinning_types", ["original", "latest"]):
        problems.append(f"docker_image_pinning_type {pinning!r} not in ['original', 'latest']")
    return problems


def _image_problems(meta: dict, plan: dict, datasets_dir: Path) -> list[str]:
    """The kernel's image (the plan's ``image``, else the code dataset's): its pinning and wheels dataset."""
    code_ws = datasets_dir / CODE_SLUG / WHEELSET_FILE
    ws = read_json(code_ws) if code_ws.exists() else {}
    name = plan.get("image") or ws.get("image")
    if not name:
        return []
    if name not in IMAGES:
        return [f"image {name!r} not in {sorted(IMAGES)}"]
    img, problems = IMAGES[name], []
    pinning = meta.get("docker_image_pinning_type")
    if pinning is not None and img.pinning is not None and pinning != img.pinning:
        problems.append(f"docker_image_pinning_type {pinning!r}, but the kernel is built for the {name} image")
    if plan.get("image") and ws.get("image") and plan["image"] != ws["image"]:
        problems.append(
            f"the kernel targets the {plan['image']} image, the code dataset was built for {ws['image']}: "
            f"LMSYS_KAGGLE_IMAGE={plan['image']} make kernel-datasets"
        )
    wheels_ids = [d for d in meta.get("dataset_sources", []) if d.split("/")[-1].startswith(WHEELS_SLUG_PREFIX)]
    if ws.get("wheels") == "full" and ws.get("requirements") and not wheels_ids:
        problems.append(
            f"dataset_sources lack the wheels dataset ({ws.get('wheels_dataset')}): the kernel could not "
            f"install {', '.join(ws['requirements'])}"
        )
    return problems


def _field_problems(meta: dict, kdir: Path) -> list[str]:
    """The keys kaggle needs, the machine shape, the competition, the title and the code file."""
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in meta]
    if meta.get("machine_shape") not in MACHINE_SHAPES:
        problems.append(f"machine_shape {meta.get('machine_shape')!r} not in {sorted(MACHINE_SHAPES)}")
    if COMPETITION_NAME not in meta.get("competition_sources", []):
        problems.append(f"competition_sources lacks {COMPETITION_NAME!r}")
    if len(meta.get("title") or "") < 5:
        problems.append("title must be at least five characters (kaggle)")
    code = kdir / (meta.get("code_file") or "")
    if not meta.get("code_file") or not code.is_file():
        problems.append(f"code_file {meta.get('code_file')!r} not found in {kdir}")
    return problems


def _kaggle_id_problems(meta: dict, api) -> list[str]:
    """The kernel id (no version, the title's slug) and every source id, by kaggle's own validators."""
    problems, title = [], meta.get("title") or ""
    try:
        owner, slug, version = api.parse_kernel_string(meta.get("id", ""))
        if version is not None:
            problems.append("kernel id must not carry a version")
        if slug != slugify(title):
            problems.append(f"kernel slug {slug!r} does not match the title's slug {slugify(title)!r}")
        for s in meta.get("dataset_sources", []):
            api.validate_dataset_string(s)
        for s in meta.get("kernel_sources", []):
            api.validate_kernel_string(s)
        for s in meta.get("model_sources", []):
            api.validate_model_instance_version_string(s)
        if meta.get("language") not in api.valid_push_language_types:
            problems.append(f"language {meta.get('language')!r} not in {api.valid_push_language_types}")
        if meta.get("kernel_type") not in api.valid_push_kernel_types:
            problems.append(f"kernel_type {meta.get('kernel_type')!r} not in {api.valid_push_kernel_types}")
    except ValueError as e:
        problems.append(f"kaggle: {e}")
    return problems


def _dataset_source_problems(meta: dict, datasets_dir: Path, api) -> list[str]:
    """Each dataset the kernel names: built locally, then :func:`check_dataset_dir`."""
    problems, local = [], local_datasets(datasets_dir)
    for ds in meta.get("dataset_sources", []):
        if ds not in local:
            problems.append(f"dataset {ds} not built in {datasets_dir}/: run `make kernel-datasets`")
        else:
            problems += [f"dataset {ds}: {p}" for p in check_dataset_dir(local[ds], api)]
    return problems


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
        return problems + _code_dataset_problems(ddir)
    if slug.startswith(WHEELS_SLUG_PREFIX):
        return problems + _wheels_dataset_problems(ddir)
    return problems + _artefacts_dataset_problems(ddir)


def _code_dataset_problems(ddir: Path) -> list[str]:
    """The code dataset: our wheel and the requirements file."""
    problems = []
    if not list(ddir.glob(PACKAGE_WHEEL_GLOB)):
        problems.append("no lmsys_arena wheel")
    if not (ddir / REQUIREMENTS_FILE).exists():
        problems.append(f"no {REQUIREMENTS_FILE}")
    return problems


def _wheels_dataset_problems(ddir: Path) -> list[str]:
    """A wheels dataset: its wheelset file and, when full, every wheel it lists."""
    ws = read_json(ddir / WHEELSET_FILE) if (ddir / WHEELSET_FILE).exists() else {}
    if not ws:
        return [f"no {WHEELSET_FILE}"]
    if ws.get("wheels") != "full":
        return []
    missing = [f for f in ws.get("files", []) if not (ddir / f).exists()]
    return [f"{f} listed in {WHEELSET_FILE} but missing" for f in missing]


def _artefacts_dataset_problems(ddir: Path) -> list[str]:
    """An artefacts dataset: the plan, each run's config and model folders, the bundled assets."""
    plan_file = ddir / PLAN_FILE
    if not plan_file.exists():
        return [f"no {PLAN_FILE}"]
    problems, plan = [], read_json(plan_file)
    for run, info in plan["runs"].items():
        shipped = Run(ddir / "runs" / run)
        if not shipped.config_file.exists():
            problems.append(f"runs/{run}/{shipped.config_file.name} missing")
        for model in info.get("models") or [shipped.fold_dir(f).name for f in info.get("folds", [])]:
            if not (shipped.path / model).is_dir():
                problems.append(f"runs/{run}/{model}/ missing")
    for run, asset in assets_of_kind(plan, "bundled"):
        if not (ddir / asset["path"]).exists():
            problems.append(f"bundled {asset['path']} ({run}) missing")
    return problems
