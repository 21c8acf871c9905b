"""The search space of a study: the config's ``search_space:`` section as :class:`ParamSpec` specs,
sampled into dotted config overrides.

    search_space:                  # dotted config key: spec
      params.max_depth: {type: int, low: 3, high: 10}
      params.learning_rate: {type: float, low: 0.01, high: 0.2, log: true}
      model.lora.alpha: {type: categorical, choices: [1, 2], times: model.lora.r}   # alpha = r or 2r
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmsys_arena.config import get_dotted

SPEC_KEYS = {"type", "low", "high", "log", "step", "choices", "times"}
TUNE_KEYS = ("search_space", "tune")  # config sections read here, not by the model


@dataclass
class ParamSpec:
    """One searched config key: ``{type: float|int|categorical, low, high, log, step, choices, times}``.

    ``times: other.key`` makes the sampled value a multiplier of that key's (sampled or config)
    value; Optuna then sees the parameter as ``key/other.key``.
    """

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list | None = None
    times: str | None = None

    @property
    def name(self) -> str:
        return f"{self.key}/{self.times}" if self.times else self.key

    def validate(self, where: str) -> None:
        if self.type not in ("float", "int", "categorical"):
            raise ValueError(f"{where}: type must be float, int or categorical, got {self.type!r}")
        if self.type == "categorical":
            if not self.choices or not isinstance(self.choices, list):
                raise ValueError(f"{where}: categorical needs a non-empty list 'choices'")
            if any(v is not None for v in (self.low, self.high, self.step)) or self.log:
                raise ValueError(f"{where}: categorical takes only 'choices'")
            return
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{where}: {self.type} needs low < high, got low={self.low} high={self.high}")
        if self.choices is not None:
            raise ValueError(f"{where}: 'choices' is for categorical only")
        if self.log and (self.step is not None or self.low <= 0):
            raise ValueError(f"{where}: log scale needs low > 0 and no step")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError(f"{where}: int bounds and step must be whole numbers")

    def contains(self, v) -> bool:
        """Whether a number lies in this int/float range (on its step grid)."""
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not self.low <= v <= self.high:
            return False
        if self.type == "int" and not float(v).is_integer():
            return False
        return self.step is None or math.isclose((v - self.low) / self.step, round((v - self.low) / self.step))

    def suggest(self, trial):
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)


def parse_search_space(cfg: dict) -> list[ParamSpec]:
    """The config's ``search_space:`` as specs, checked against the config (typos fail here, not in trial 17)."""
    raw = cfg.get("search_space") or {}
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"config {cfg.get('name')!r} has no search_space: section (dotted key -> spec)")
    specs = []
    for key, spec in raw.items():
        where = f"config {cfg.get('name')!r} search_space.{key}"
        if not isinstance(spec, dict) or not set(spec) <= SPEC_KEYS or "type" not in spec:
            raise ValueError(
                f"{where}: expected a mapping with 'type' and some of {sorted(SPEC_KEYS - {'type'})}, got {spec!r}"
            )
        p = ParamSpec(key=key, **spec)
        p.validate(where)
        parent = key.rsplit(".", 1)[0] if "." in key else None
        if parent is not None and not isinstance(get_dotted(cfg, parent), dict):
            raise ValueError(f"{where}: the config has no section {parent!r}")
        if p.times and p.times not in raw and not isinstance(get_dotted(cfg, p.times), (int, float)):
            raise ValueError(f"{where}: 'times: {p.times}' is neither searched nor a number in the config")
        specs.append(p)
    return specs


def default_params(space: list[ParamSpec], cfg: dict) -> dict:
    """The config's own values as Optuna params (for the baseline trial); keys the config lacks, or
    values outside the space, are left to the sampler."""
    out = {}
    for p in space:
        v = get_dotted(cfg, p.key)
        if p.times and isinstance(v, (int, float)):
            base = get_dotted(cfg, p.times)
            v = v / base if isinstance(base, (int, float)) and base else None
            v = int(v) if v is not None and float(v).is_integer() else v
        if p.type == "categorical":
            same = [c for c in p.choices if v is not None and _same_choice(v, c)]
            if same:
                out[p.name] = same[0]
        elif p.contains(v):
            out[p.name] = int(v) if p.type == "int" else float(v)
    return out


def model_config(cfg: dict) -> dict:
    """The config without the tuning sections (what a trial's run trains with, before overrides)."""
    return {k: v for k, v in cfg.items() if k not in TUNE_KEYS}


def sample_overrides(trial, space: list[ParamSpec], cfg: dict) -> dict:
    """Suggest every parameter; return the dotted config overrides (``times`` resolved)."""
    raw = {p.key: p.suggest(trial) for p in space}
    out = {}
    for p in space:
        v = raw[p.key]
        if p.times:
            base = raw[p.times] if p.times in raw else get_dotted(cfg, p.times)
            v = v * base
            v = int(v) if float(v).is_integer() and isinstance(base, int) else v
        out[p.key] = v
    return out


def _same_choice(v, c) -> bool:
    """A config value equals a categorical choice: 1.0 (a float option) is the choice 1, True is not 1."""
    if isinstance(v, bool) or isinstance(c, bool):
        return v is c
    if isinstance(v, (int, float)) and isinstance(c, (int, float)):
        return float(v) == float(c)
    return v == c and type(v) is type(c)
