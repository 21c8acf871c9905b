"""Experiment configs are YAML data: one small file per experiment in ``configs/``.

A config states only what differs from the defaults of its family's schema (:mod:`lmsys_arena.schema`;
every option with its default and help: docs/config-reference.md). ``base: <config name or path>``
inherits another config (mappings merge key by key, the child's values win), so a variant is a few
lines. Overrides are dotted keys (``params.max_depth=8``) from ``--set`` or a params file (e.g. the best
parameters of an Optuna study). Unknown keys and wrong types fail here, before any data is read,
naming the key, the file or ``--set`` it came from, and the closest valid names.

    python -m lmsys_arena config gemma3-270m --set train.lr=1e-4     # the resolved config, defaults included
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import yaml

from lmsys_arena.schema import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


def config_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A config file: a path to a YAML file, or a name in ``configs/`` (or beside ``relative_to``)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        for cand in ([relative_to / p] if relative_to and not p.is_absolute() else []) + [p]:
            if cand.exists():
                return cand
    for folder in ([relative_to] if relative_to else []) + [CONFIG_DIR]:
        cand = folder / f"{name_or_path}.yaml"
        if cand.exists():
            return cand
    names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"no config {str(name_or_path)!r}; available: {names}")


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of options, got {type(data).__name__}")
    return data


def config_layers(name_or_path: str | Path) -> list[tuple[str, dict]]:
    """``[(file, its options), ...]``, the deepest ``base:`` first."""
    layers, seen = [], []
    path = config_path(name_or_path)
    while True:
        key = path.resolve()
        if key in seen:
            raise ConfigError(f"{path}: `base:` cycle: {' -> '.join(str(s) for s in seen + [key])}")
        seen.append(key)
        data = read_yaml(path)
        base = data.pop("base", None)
        layers.insert(0, (str(path), data))
        if base is None:
            return layers
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a config name or a path, got {base!r}")
        path = config_path(base, relative_to=path.parent)


def deep_merge(a: dict, b: dict) -> dict:
    """``b`` over ``a``: mappings merge key by key, anything else in ``b`` replaces ``a``'s value."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def set_dotted(cfg: dict, key: str, value) -> None:
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def get_dotted(cfg: dict, key: str, default=None):
    node = cfg
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    for k, v in overrides.items():
        set_dotted(cfg, k, v)
    return cfg


def nest(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        set_dotted(out, k, v)
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_assignments(items: list[str] | None, *, flag: str = "--set", yaml_values: bool = True) -> dict:
    """``["a.b=3", "c=true"]`` -> ``{"a.b": 3, "c": True}``: the one ``key=value`` parser (values parsed as
    YAML, or kept as stripped strings with ``yaml_values=False``)."""
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        if yaml_values:
            try:
                v = yaml.safe_load(v)
            except yaml.YAMLError as e:
                raise ConfigError(f"{flag} {item}: the value is not valid YAML: {e}") from None
        else:
            v = v.strip()
        out[k.strip()] = v
    return out


def load_params_file(path: str | Path) -> dict:
    """A params file (YAML or JSON) of dotted or nested keys -> flat dotted overrides."""
    data = read_yaml(Path(path))
    if "params" in data and isinstance(data["params"], dict) and "value" in data:
        data = data["params"]  # written by `make best`: {value, trials, params: {...}}
    return flatten(data)


def _source_finder(sources: dict[str, str], default: str):
    def where(key: str) -> str:
        key = key.split("[", 1)[0]
        if key in sources:
            return sources[key]
        below = [s for k, s in sources.items() if k.startswith(key + ".")]
        if below:
            return below[-1]
        parts = key.split(".")
        for i in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:i]) in sources:
                return sources[".".join(parts[:i])]
        return default

    return where


def load_config(
    name_or_path: str | Path, overrides: dict | None = None, *, sources: dict[str, str] | None = None
) -> dict:
    """The resolved config (every option, defaults included) of a config file and dotted ``overrides``.
    ``sources`` names where each override came from (``--set key=value``, a params file) for errors."""
    layers = config_layers(name_or_path)
    merged: dict = {}
    where_of: dict[str, str] = {}
    for source, data in layers:
        merged = deep_merge(merged, data)
        where_of.update({k: source for k in flatten(data)})
    if overrides:
        merged = deep_merge(merged, nest(overrides))
        where_of.update({k: (sources or {}).get(k, "--set") for k in overrides})
    top = layers[-1]
    if not top[1].get("name"):
        merged["name"] = Path(top[0]).stem
    return validate(merged, _source_finder(where_of, top[0]))


def validate(cfg: dict, where=None) -> dict:
    """Check a config mapping against its family's schema; returns it resolved (defaults filled in)."""
    from lmsys_arena import families, schema
    from lmsys_arena.tune.space import parse_search_space

    where = where or (lambda _k: f"config {cfg.get('name')!r}")
    if not cfg.get("family"):
        raise ConfigError(
            f"{where('family')}: a config must name its family (one of "
            f"{sorted(n for n, f in families.FAMILIES.items() if f.trains)})"
        )
    try:
        cls = families.get(cfg["family"]).config_class()
    except KeyError as e:
        raise ConfigError(f"{where('family')}: {e.args[0]}") from None
    resolved = dataclasses.asdict(schema.build(cls, cfg, where=where))
    for key, spec in resolved["search_space"].items():
        schema.resolve_path(cls, key, where=lambda _k, key=key: where(f"search_space.{key}"))
        if isinstance(spec, dict) and spec.get("times"):
            schema.resolve_path(cls, spec["times"], where=lambda _k, key=key: where(f"search_space.{key}"))
    if resolved["search_space"]:
        try:
            parse_search_space(resolved)
        except ValueError as e:
            raise ConfigError(f"{where('search_space')}: {e}") from None
    return resolved


def to_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=110)


def config_hash(cfg: dict) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
