"""Experiment configs are YAML data: one small file per experiment in ``configs/``.

A config names its model ``family`` (``gbdt`` or ``llm``) and that family's settings.
Overrides are dotted keys (``params.max_depth=8``), from the command line or from a
params file (e.g. the best parameters of an Optuna study).
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"


def config_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    p = CONFIG_DIR / f"{name_or_path}.yaml"
    if not p.exists():
        names = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no config {name_or_path!r}; available: {names}")
    return p


def load_config(name_or_path: str, overrides: dict | None = None) -> dict:
    path = config_path(name_or_path)
    cfg = yaml.safe_load(path.read_text()) or {}
    if "family" not in cfg:
        raise ValueError(f"{path}: config must name its 'family' (gbdt or llm)")
    cfg.setdefault("name", path.stem)
    return apply_overrides(cfg, overrides or {})


def set_dotted(cfg: dict, key: str, value) -> None:
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise KeyError(f"override {key!r}: {p!r} is not a section")
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


def parse_set_args(items: list[str] | None) -> dict:
    """``["a.b=3", "c=true"]`` -> ``{"a.b": 3, "c": True}`` (values parsed as YAML)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_params_file(path: str | Path) -> dict:
    """A params file (YAML or JSON) of dotted or nested keys -> flat dotted overrides."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if "params" in data and isinstance(data["params"], dict) and "value" in data:
        data = data["params"]  # written by `make best`: {value, trials, params: {...}}
    return flatten(data)


def config_hash(cfg: dict) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
