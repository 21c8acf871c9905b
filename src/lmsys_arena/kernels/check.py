"""`make check-kernels`: every kernel's metadata and files (:mod:`.metadata_check`, with the kaggle CLI's own
validators), the code dataset installed offline into an empty venv (:mod:`.install_check`), the wheel set of
each image resolved offline for that image's Python and platform (:mod:`.resolve_check`), and a simulated
run of each kernel (:mod:`.simulate`). With no kernels built yet (a fresh clone) it checks a demo kernel
(xgb + tiny, blended) in a temporary project. Results print with :func:`.check_result.format_results`.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from lmsys_arena.io import read_json
from lmsys_arena.kernels.check_result import CheckResult
from lmsys_arena.kernels.entry import PLAN_FILE
from lmsys_arena.kernels.image import IMAGES, WHEELS_SLUG_PREFIX, get_image
from lmsys_arena.kernels.install_check import check_wheelhouse
from lmsys_arena.kernels.metadata_check import check_metadata, plan_needs_gpu
from lmsys_arena.kernels.plan import (
    CODE_SLUG,
    KERNELS_DIR,
    PLACEHOLDER_USER,
    KernelOptions,
    build_kernel,
    datasets_under,
    kernel_dirs,
)
from lmsys_arena.kernels.resolve_check import check_resolve
from lmsys_arena.kernels.wheels import WHEELSET_FILE
from lmsys_arena.runs import Run

log = logging.getLogger(__name__)


def check_kernels(
    names: list[str] | None = None,
    *,
    out: Path = KERNELS_DIR,
    data: Path | None = None,
    simulate: bool = True,
    wheel_check: bool = True,
    timeout: int = 600,
) -> list[CheckResult]:
    """The datasets' checks (``wheel_check``), then each kernel's metadata and, with ``simulate``, a run of
    it on ``data`` (default: the data its runs were trained on)."""
    from lmsys_arena.kernels.simulate import simulate_kernel, simulation_data

    datasets = datasets_under(out)
    kdirs = kernel_dirs(names, out)
    results = check_wheel_datasets(datasets, llm=_llm_by_image(kdirs)) if wheel_check else []
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


def _llm_by_image(kdirs: list[Path]) -> dict[str, bool]:
    """The images the kernels target, each with whether one of its kernels has an LLM run."""
    plans = [read_json(k / PLAN_FILE) for k in kdirs if (k / PLAN_FILE).exists()]
    llm_by_image: dict[str, bool] = {}
    for p in plans:
        img = get_image(p.get("image")).name
        llm_by_image[img] = llm_by_image.get(img, False) or plan_needs_gpu(p)
    return llm_by_image


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
        wres = _check_wheels_dataset(wdir, code, llm)
        results += [wres] if wres else []
    return results


def _check_wheels_dataset(wdir: Path, code: Path, llm: bool | dict[str, bool]) -> CheckResult | None:
    """One wheels dataset resolved for its image; None when no checked kernel targets that image."""
    wws = read_json(wdir / WHEELSET_FILE) if (wdir / WHEELSET_FILE).exists() else {}
    name = wws.get("image", wdir.name[len(WHEELS_SLUG_PREFIX) + 1 :])
    img = IMAGES.get(name)
    if isinstance(llm, dict) and name not in llm:
        log.info("%s: no checked kernel targets the %s image; not checked", wdir, name)
        return None
    wres = CheckResult(f"datasets/{wdir.name} ({name} image, Python {img.python if img else '?'})")
    if img is None:
        wres.problems.append(f"unknown image {name!r}: one of {sorted(IMAGES)}")
        return wres
    wheels = sorted(wdir.glob("*.whl"))
    size = sum(p.stat().st_size for p in wheels) / 2**20
    wres.notes.append(f"{len(wheels)} wheels, {size:.1f} MiB: {', '.join(p.name.split('-')[0] for p in wheels)}")
    if wws.get("wheels") != "full":
        wres.warnings.append("minimal (no wheels): the resolve check is skipped")
        return wres
    problems, notes = check_resolve(wdir, code, img, llm=llm.get(name, False) if isinstance(llm, dict) else llm)
    wres.problems += problems
    wres.notes += notes
    wres.notes += [f"image note: {n}" for n in img.notes]
    return wres


def demo_check(data: Path | None = None, rows: int = 400, wheels: str = "full") -> list[CheckResult]:
    """No kernels built yet (e.g. a fresh clone): build and check a demo kernel in a temporary project —
    xgb + the ``tiny`` LLM on ``rows`` rows of the project's data (default: the bundled sample; 2 folds),
    blended; the full wheelhouse."""
    from lmsys_arena.data import default_data_dir
    from lmsys_arena.kernels.artefacts import build_datasets

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
            _train_demo_blend(data, rows)
            build_kernel("demo", opts=KernelOptions(user=PLACEHOLDER_USER))
            build_datasets(["demo"], wheels=wheels)
            return check_kernels(["demo"], data=data)
        finally:
            os.chdir(old_cwd)


def _train_demo_blend(data: Path, rows: int) -> None:
    """In the current folder: 2 folds of ``data``, xgb and ``tiny`` trained and inferred, blended as ``demo``."""
    from lmsys_arena.config import load_config
    from lmsys_arena.data import Competition
    from lmsys_arena.ensemble import ensemble_runs
    from lmsys_arena.folds import make_folds, write_folds
    from lmsys_arena.run_inputs import RunSpec
    from lmsys_arena.runner import infer_run, train_run

    write_folds(make_folds(Competition(data).train(), k=2, seed=42), Path("folds") / f"{data.name}.csv")
    members = [("xgb", {"num_boost_round": 30, "early_stopping_rounds": 10}), ("tiny", {})]
    for name, over in members:
        cfg = load_config(name, over)
        for key in ("search_space", "tune"):
            cfg.pop(key, None)
        train_run(cfg, Run.named(name).path, RunSpec(data=str(data), max_rows=rows))
        infer_run(Run.named(name).path)
    ensemble_runs([m for m, _ in members], "demo")
