"""`make check-kernels`: every kernel's metadata and files (with the kaggle CLI's own validators), the code
dataset installed offline into an empty venv, the wheel set of each image resolved offline for that image's
Python and platform (:func:`check_resolve`), and a simulated run of each kernel (:mod:`.simulate`). With no
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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lmsys_arena.data import COMPETITION_NAME
from lmsys_arena.io import read_json
from lmsys_arena.kernels.entry import PACKAGE_WHEEL_GLOB, PLAN_FILE, REQUIREMENTS_FILE
from lmsys_arena.kernels.image import IMAGES, WHEELS_SLUG_PREFIX, KaggleImage, get_image, normalize
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
    family_of,
    kernel_dirs,
    local_datasets,
    slugify,
)
from lmsys_arena.kernels.wheels import (
    TRAIN_ONLY,
    WHEELSET_FILE,
    _req_name,
    is_provided,
    is_renamed,
    target_args,
)
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
    plan = read_json(kdir / PLAN_FILE) if (kdir / PLAN_FILE).exists() else {}
    needs_gpu = plan_needs_gpu(plan)
    must = {"language": "python", "kernel_type": "script", "enable_internet": False}
    if needs_gpu:  # an LLM run; a GBDT-only kernel may run with or without one
        must["enable_gpu"] = True
    elif not isinstance(meta.get("enable_gpu"), bool):
        res.problems.append(f"enable_gpu is {meta.get('enable_gpu')!r}, expected true or false")
    for key, want in must.items():
        if meta.get(key) is not want and meta.get(key) != want:
            why = " (the plan has a GPU family)" if key == "enable_gpu" else ""
            res.problems.append(f"{key} is {meta.get(key)!r}, expected {want!r}{why}")
    pinning = meta.get("docker_image_pinning_type")
    if pinning is not None and pinning not in getattr(api, "valid_push_pinning_types", ["original", "latest"]):
        res.problems.append(f"docker_image_pinning_type {pinning!r} not in ['original', 'latest']")
    res.problems += _image_problems(meta, plan, datasets_dir)
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


def plan_needs_gpu(plan: dict) -> bool:
    """Whether any run of the plan belongs to a family that needs a GPU (an LLM)."""
    return any(family_of(e).gpu for e in (plan.get("runs") or {}).values())


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
    if slug.startswith(WHEELS_SLUG_PREFIX):
        ws = read_json(ddir / WHEELSET_FILE) if (ddir / WHEELSET_FILE).exists() else {}
        if not ws:
            problems.append(f"no {WHEELSET_FILE}")
        elif ws.get("wheels") == "full":
            missing = [f for f in ws.get("files", []) if not (ddir / f).exists()]
            problems += [f"{f} listed in {WHEELSET_FILE} but missing" for f in missing]
        return problems
    plan_file = ddir / PLAN_FILE
    if not plan_file.exists():
        return problems + [f"no {PLAN_FILE}"]
    plan = read_json(plan_file)
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
        image = wheelset.get("image")
        problems = []
        for line in r.stdout.splitlines():
            m = re.search(r"^(\S+) \S+ requires ([A-Za-z0-9_.\-]+), which is not installed", line)
            if m and (
                is_provided(m.group(2), image)
                or normalize(m.group(2)) in skipped
                or (m.group(1) == "lmsys-arena" and (_req_name(m.group(2)) in TRAIN_ONLY or is_renamed(m.group(2))))
                or (m.group(1) == "lmsys-arena" and wheelset.get("wheels") != "full")
            ):
                continue  # the image has it / another Python's wheel / training-only / Kaggle's name / minimal
            if line.strip() and "No broken requirements" not in line:
                problems.append(f"pip check: {line.strip()}")
        r = subprocess.run(
            [str(py), "-c", "import lmsys_arena, lmsys_arena.kernels.entry"],
            capture_output=True,
            text=True,
            env={**env, "PYTHONNOUSERSITE": "1"},
            cwd=tmp,
        )
        if r.returncode:
            problems.append(f"import in the empty venv failed: {r.stderr.strip()[-600:]}")
        return problems


def _dist_of(wheel: Path) -> str:
    return normalize(wheel.name.split("-")[0])


def _stub_version(specifiers: list[str]) -> str:
    """A version meeting every specifier (for a family the image has, e.g. nvidia-*)."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(",".join(s for s in specifiers if s))
    for s in spec:
        if s.operator in ("==", ">=", "~=", "===") and "*" not in s.version and spec.contains(s.version, True):
            return s.version
    return next((v for v in ("999", "0.0.1") if spec.contains(v, True)), "999")


def build_stub_wheels(image: KaggleImage | str, dest: Path, also: dict[str, list[str]] | None = None) -> list[Path]:
    """One empty wheel per distribution the image has (its version, no dependencies), so that an offline
    resolve (``--no-index``) sees the image's packages as present; ``also``: names of the image's
    ``provided_prefixes`` families that something needs, with the specifiers placed on them."""
    img = get_image(image)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = dict(img.provided)
    for name, specs in (also or {}).items():
        if name not in wanted and img.has(name):
            wanted[name] = _stub_version(specs)
    out = []
    for name, version in sorted(wanted.items()):
        version = version.split("+")[0]
        stem = f"{name.replace('-', '_')}-{version}"
        path = dest / f"{stem}-py3-none-any.whl"
        info = f"{stem}.dist-info"
        files = {
            f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: lmsys-arena-stub\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n",
        }
        files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
        with zipfile.ZipFile(path, "w") as zf:
            for f, text in files.items():
                zf.writestr(f, text)
        out.append(path)
    return out


def _prefix_needs(wheels_dir: Path, img: KaggleImage) -> dict[str, list[str]]:
    """The image-family distributions (nvidia-*, ...) the shipped wheels depend on, with their specifiers."""
    from email.parser import Parser

    from packaging.requirements import Requirement

    env = img.markers()
    needs: dict[str, list[str]] = {}
    for whl in wheels_dir.glob("*.whl"):
        try:
            with zipfile.ZipFile(whl) as zf:
                meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
                msg = Parser().parsestr(zf.read(meta).decode("utf-8", "replace"))
        except (zipfile.BadZipFile, StopIteration):
            continue
        for line in msg.get_all("Requires-Dist") or []:
            req = Requirement(line)
            name = normalize(req.name)
            if img.provided_prefixes and name.startswith(img.provided_prefixes) and name not in img.provided:
                if not req.marker or req.marker.evaluate({**env, "extra": ""}):
                    needs.setdefault(name, []).append(str(req.specifier))
    return needs


def check_resolve(
    wheels_dir: Path, code_dir: Path | None = None, image: KaggleImage | str | None = None, llm: bool = True
) -> tuple[list[str], list[str]]:
    """(problems, notes): the kernel's requirements resolve offline for the image's Python and platform —
    ``pip install --dry-run --no-index`` on the shipped wheels, our wheel and stub wheels of what the image
    has (:func:`build_stub_wheels`). The requirements are the shipped list, those the image is expected to
    meet itself, and with ``llm`` the package's torch requirement (torch is never shipped)."""
    from packaging.requirements import Requirement

    ws = read_json(wheels_dir / WHEELSET_FILE)
    img = get_image(image or ws.get("image"))
    if ws.get("image") and ws["image"] != img.name:
        return [f"{wheels_dir.name} was built for the {ws['image']} image, not {img.name}"], []
    problems, notes = [], []
    if code_dir is not None and (code_dir / WHEELSET_FILE).exists():
        cws = read_json(code_dir / WHEELSET_FILE)
        if cws.get("image") == img.name and cws.get("requirements") != ws.get("requirements"):
            problems.append(f"{CODE_SLUG}'s {REQUIREMENTS_FILE} differs from {wheels_dir.name}'s: rebuild both")
    reqs = list(ws.get("requirements", [])) + list(ws.get("from_image", []))
    reqs += list(ws.get("framework", [])) if llm else []
    for r in ws.get("framework", []) if llm else []:  # torch: never shipped, so the image's must do
        name = _req_name(r)
        if not img.satisfies(name, str(Requirement(r).specifier)):
            problems.append(
                f"the {img.name} image's {name} {img.version_of(name)} does not meet {r} (lmsys-arena[llm]) and "
                f"{name} is never shipped: LLM kernels need another image (GBDT-only kernels do not need {name})"
            )
    if not reqs:
        return problems, ["nothing to resolve"]
    with tempfile.TemporaryDirectory(prefix="lmsys_resolve_") as tmp:
        t = Path(tmp)
        stubs = build_stub_wheels(img, t / "stubs", _prefix_needs(wheels_dir, img))
        (t / "req.txt").write_text("\n".join(reqs) + "\n")
        links = [wheels_dir, t / "stubs"] + ([code_dir] if code_dir else [])
        cmd = [sys.executable, "-m", "pip", "--isolated", "install", "-q", "--dry-run", "--ignore-installed"]
        cmd += ["--no-index", "--report", str(t / "report.json"), "--target", str(t / "target")]
        cmd += [a for d in links for a in ("--find-links", str(d))] + target_args(img) + ["-r", str(t / "req.txt")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode:
            err = "\n".join(ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip() and "WARNING" not in ln)
            return problems + [
                f"does not resolve for Python {img.python} ({img.abi}, manylinux x86_64): {err[-1200:]}"
            ], notes
        items = json.loads((t / "report.json").read_text())["install"]
        stub_names = {p.name for p in stubs}
        used = [it for it in items if it["download_info"]["url"].rsplit("/", 1)[-1] not in stub_names]
        shipped = {p.name for p in wheels_dir.glob("*.whl")}
        unused = sorted(shipped - {it["download_info"]["url"].rsplit("/", 1)[-1] for it in used})
        notes.append(
            f"resolves offline for Python {img.python} ({img.abi}, manylinux x86_64): {len(items)} distributions, "
            f"{len(items) - len(used)} from the image, {len(used)} shipped"
            + ("" if llm else " (no LLM run: torch not required)")
        )
        if unused:
            notes.append(f"{len(unused)} shipped wheels the resolve did not need: {', '.join(unused[:8])}")
    return problems, notes


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
    kdirs = kernel_dirs(names, out)
    results = []
    if wheel_check:
        plans = [read_json(k / PLAN_FILE) for k in kdirs if (k / PLAN_FILE).exists()]
        llm_by_image: dict[str, bool] = {}
        for p in plans:
            img = get_image(p.get("image")).name
            llm_by_image[img] = llm_by_image.get(img, False) or plan_needs_gpu(p)
        results += check_wheel_datasets(datasets, llm=llm_by_image)
    for kdir in kdirs:
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


def check_wheel_datasets(datasets: Path, llm: bool | dict[str, bool] = True) -> list[CheckResult]:
    """The code dataset installed offline into an empty venv (with the wheels of its image that fit this
    interpreter), and each ``lmsys-arena-wheels-<image>`` dataset resolved for its image (pass/fail each).
    ``llm``: whether the resolve must include the package's torch requirement; as a dict, per image, and
    only those images' datasets are checked (the images the checked kernels target)."""
    code = datasets / CODE_SLUG
    res = CheckResult(f"datasets/{CODE_SLUG}")
    results = [res]
    if not code.exists():
        res.problems.append("not built: run `make kernel-datasets`")
        return results
    ws = read_json(code / WHEELSET_FILE) if (code / WHEELSET_FILE).exists() else {}
    own = datasets / f"{WHEELS_SLUG_PREFIX}-{ws['image']}" if ws.get("image") else None
    t0 = time.time()
    res.problems += check_wheelhouse(code, own if own and own.exists() else None)
    res.notes.append(
        f"our wheel (+ the {ws.get('image', '?')} image's wheels that fit Python {sys.version_info.major}."
        f"{sys.version_info.minor}) installed offline into an empty venv in {time.time() - t0:.0f}s"
    )
    if ws.get("wheels") != "full":
        res.warnings.append("minimal wheelhouse (our wheel only): fine for checks, `make push` refuses it")
    for wdir in sorted(datasets.glob(f"{WHEELS_SLUG_PREFIX}-*")):
        wws = read_json(wdir / WHEELSET_FILE) if (wdir / WHEELSET_FILE).exists() else {}
        name = wws.get("image", wdir.name[len(WHEELS_SLUG_PREFIX) + 1 :])
        img = IMAGES.get(name)
        if isinstance(llm, dict) and name not in llm:
            log.info("%s: no checked kernel targets the %s image; not checked", wdir, name)
            continue
        wres = CheckResult(f"datasets/{wdir.name} ({name} image, Python {img.python if img else '?'})")
        results.append(wres)
        if img is None:
            wres.problems.append(f"unknown image {name!r}: one of {sorted(IMAGES)}")
            continue
        wheels = sorted(wdir.glob("*.whl"))
        size = sum(p.stat().st_size for p in wheels) / 2**20
        wres.notes.append(f"{len(wheels)} wheels, {size:.1f} MiB: {', '.join(p.name.split('-')[0] for p in wheels)}")
        if wws.get("wheels") != "full":
            wres.warnings.append("minimal (no wheels): the resolve check is skipped")
            continue
        problems, notes = check_resolve(wdir, code, img, llm=llm.get(name, False) if isinstance(llm, dict) else llm)
        wres.problems += problems
        wres.notes += notes
        wres.notes += [f"image note: {n}" for n in img.notes]
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
