"""What a command line names, resolved: the data folder (``--data`` or the default) and the config
(``--model`` with ``--params`` and ``--set`` applied, or just its family)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("lmsys_arena")


def resolve_data(args) -> str:
    from lmsys_arena.data import default_data_dir

    return Path(args.data).as_posix() if args.data else default_data_dir().as_posix()


def resolve_config(args) -> dict:
    """The config of ``--model`` with ``--params`` and ``--set`` applied (errors name their source)."""
    from lmsys_arena.config import load_config

    overrides, sources = {}, {}
    if args.params:
        _add_params_file(args, overrides, sources)
    _add_set_items(args.set, overrides, sources)
    return load_config(args.model, overrides, sources=sources)


def _add_params_file(args, overrides: dict, sources: dict) -> None:
    """``--params``: a params file, or ``best`` for the study's ``studies/<study>.best.yaml``."""
    from lmsys_arena.config import load_params_file

    path = args.params
    if path == "best":
        path = Path("studies") / f"{args.study or Path(args.model).stem}.best.yaml"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `make best STUDY={path.name[:-10]}` first")
    params = load_params_file(path)
    overrides.update(params)
    sources.update({k: f"params file {path}" for k in params})
    log.info("params from %s: %s", path, params)


def _add_set_items(items: list[str], overrides: dict, sources: dict) -> None:
    """``--set KEY=VALUE`` items, applied after the params file (a later one wins)."""
    from lmsys_arena.config import parse_assignments

    for item in items:
        key_value = parse_assignments([item], flag="--set")
        overrides.update(key_value)
        sources.update({k: f"--set {item}" for k in key_value})


def load_model_family(model: str) -> str | None:
    """The ``family`` of the config ``model`` (a name in configs/ or a YAML path), its ``base:`` chain included."""
    from lmsys_arena.config import config_layers

    family = None
    for _source, data in config_layers(model):
        family = data.get("family", family)
    return family
