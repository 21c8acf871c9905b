"""Kaggle T4 x2 kernels for trained runs: build, package as datasets, check offline, push.

    make kernels RUNS=blend [NAME=...]        # kernels/<name>/: kernel-metadata.json, <slug>.py, kernel_plan.json
    make kernel-datasets [WHEELS=minimal]    # kernels/datasets/<code>/ (wheels) and <name>-artefacts/ (models)
    make check-kernels                       # metadata, files, offline wheel install, simulated run on CPU
                                             # (no kernels yet: a demo kernel, xgb + tiny, in a temp project)
    make push                                # kaggle datasets create/version + kaggle kernels push
    make submit NAME=blend [VERSION=3]       # kaggle competitions submit -k <kernel> -v <version>

    python -m lmsys_arena kernels --runs blend --budget-hours 8.5 \\
        --model-source gemma9b=google/gemma-2/transformers/gemma-2-9b-it/2
    python -m lmsys_arena kernels --runs gemma9b --fallback xgb --llm-set infer.quant=8bit

A kernel is built from one run: a leaf run (GBDT or LLM) or a blend (``make ensemble``), whose member
tree is resolved and stored in ``kernel_plan.json`` (members, weights, temperature, the folds each run
has, what each run's family needs (an LLM: where its backbone comes from), the time budget, the fallback).
The entry script is :mod:`lmsys_arena.kernels.entry`, copied verbatim.

One module a job: :mod:`.plan` (the plan, kernel-metadata.json, ids), :mod:`.requirements` (what a kernel installs
on its image), :mod:`.wheels` (wheelhouse, the code and wheels datasets), :mod:`.artefacts`
(``<user>/lmsys-arena-<name>-artefacts``: the plan, ``runs/<run>/`` config and fold folders, bundled backbones),
:mod:`.check` (the ``check-kernels`` stage: :mod:`.check_result`, :mod:`.metadata_check`, :mod:`.install_check`,
:mod:`.resolve_check`, :mod:`.simulate`), :mod:`.publish` (push, submit), :mod:`.entry`. A family takes part
through its hooks ``kernel_assets``, ``bundle_assets`` and ``prepare_for_kernel`` (:mod:`lmsys_arena.families`); a
family without them needs nothing but its model folders.

The Kaggle user comes from ``KAGGLE_USERNAME`` or ``~/.kaggle/kaggle.json`` (``$KAGGLE_CONFIG_DIR``); without
one the ids carry the placeholder ``your-kaggle-username`` (``check-kernels`` warns, ``push`` refuses).

Importing this package imports no sub-module: the entry script (stdlib only before its install step) is
imported from a venv that has our wheel alone; the names below load their module on first use.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_EXPORTS = {
    "plan": (
        "KERNELS_DIR",
        "DATASETS_DIR",
        "PLACEHOLDER_USER",
        "CODE_SLUG",
        "ENTRY_TEMPLATE",
        "MACHINE_SHAPES",
        "KernelError",
        "KernelOptions",
        "kaggle_username",
        "slugify",
        "kernel_slug",
        "artefacts_slug",
        "kernel_dirs",
        "resolve_plan",
        "kernel_metadata",
        "build_kernel",
    ),
    "requirements": (
        "PROVIDED",
        "TRAIN_ONLY",
        "PINNED",
        "kernel_requirements",
        "framework_requirements",
        "split_requirements",
        "requirement_name",
        "is_provided",
    ),
    "wheels": (
        "build_package_wheel",
        "resolve_wheelhouse",
        "target_args",
        "wheels_dataset_id",
        "build_wheels_dataset",
        "build_code_datasets",
        "build_code_dataset",
    ),
    "image": ("IMAGES", "KaggleImage", "get_image"),
    "artefacts": ("build_artefacts_dataset", "build_datasets"),
    "check_result": ("CheckResult", "format_results"),
    "metadata_check": ("check_metadata", "check_dataset_dir", "plan_needs_gpu"),
    "install_check": ("check_wheelhouse",),
    "resolve_check": ("check_resolve", "build_stub_wheels"),
    "check": ("check_kernels", "check_wheel_datasets", "demo_check"),
    "simulate": ("simulate_kernel", "simulation_data"),
    "publish": ("kaggle_credentials", "push", "submit"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["cli"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def cli(args: argparse.Namespace) -> None:
    from lmsys_arena.config import parse_assignments
    from lmsys_arena.kernels import check, plan, publish
    from lmsys_arena.kernels.artefacts import build_datasets
    from lmsys_arena.kernels.check_result import format_results

    cmd = args.command
    if cmd == "kernels":
        if args.name and len(args.runs) > 1:
            raise ValueError("--name needs a single run; build one kernel per run, or `make ensemble` first")
        opts = plan.KernelOptions(
            budget_hours=args.budget_hours,
            model_sources=parse_assignments(args.model_source, flag="--model-source", yaml_values=False),
            llm_overrides={**plan.DEFAULT_LLM_OVERRIDES, **parse_assignments(args.llm_set, flag="--llm-set")},
            fallback=args.fallback,
            private=not args.public,
            machine_shape=args.machine_shape,
            image=args.image,
        )
        for run in args.runs:
            print(plan.build_kernel(run, args.name, opts))
    elif cmd == "kernel-datasets":
        for d in build_datasets(args.names or None, wheels=args.wheels):
            print(d)
    elif cmd == "check-kernels":
        if not args.names and not list(plan.KERNELS_DIR.glob(f"*/{plan.METADATA_FILE}")):
            results = check.demo_check(args.data)
        else:
            results = check.check_kernels(
                args.names or None, data=args.data, simulate=not args.no_sim, wheel_check=not args.no_wheel_check
            )
        print(format_results(results))
        if not all(r.ok for r in results):
            raise SystemExit(1)
    elif cmd in ("push", "submit"):
        try:
            if cmd == "push":
                publish.push(args.names or None, message=args.message)
            else:
                publish.submit(args.name, args.version, args.message)
        except plan.KernelError as e:
            print(f"{cmd}: {e}", file=sys.stderr)
            raise SystemExit(1) from None
