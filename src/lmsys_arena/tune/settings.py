"""The ``tune:`` section of a config (how a study runs) and the Optuna sampler and pruner it makes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lmsys_arena.schema import build, option


@dataclass
class TuneSettings:
    """The config's ``tune:`` section: how a study trains and compares trials (defaults suit the GBDTs)."""

    folds: list[int] | None = option(None, "folds trained per trial (null: all)")
    max_rows: int | None = option(
        None, "row budget: a seeded sample of this many train rows per trial (extra rows kept)"
    )
    sampler: Literal["tpe", "random"] = option("tpe", "tpe: multivariate TPE with a constant liar for parallel workers")
    startup_trials: int = option(10, "random trials before TPE models the space")
    pruner: Literal["median", "hyperband", "none"] = option(
        "median", "stops a trial after a fold if its running mean is bad"
    )
    prune_startup_trials: int = option(5, "median: never prune before this many trials finished")
    prune_warmup_folds: int = option(0, "median: never prune before this many folds reported")
    heartbeat_interval: int = option(60, "seconds between a running trial's heartbeats")
    grace_period: int | None = option(
        None, "a trial is stale after this many seconds without a heartbeat (null: 3 intervals)"
    )
    max_retry: int = option(2, "re-runs of a trial whose worker died")
    keep_runs: bool = option(True, "keep runs/tune-<study>/trial-<n>/ (model files) after the trial")
    enqueue_defaults: bool = option(True, "trial 0 of a new study is the config's own values (the baseline)")

    @classmethod
    def from_cfg(cls, cfg: dict) -> TuneSettings:
        return build(cls, cfg.get("tune"), prefix="tune.", where=lambda _k: f"config {cfg.get('name')!r}")

    def objective_key(self) -> dict:
        return {"folds": self.folds, "max_rows": self.max_rows}


def make_pruner(s: TuneSettings, n_steps: int):
    import optuna

    if s.pruner == "none":
        return optuna.pruners.NopPruner()
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(n_steps, 1), reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=s.prune_startup_trials, n_warmup_steps=s.prune_warmup_folds)


def make_sampler(s: TuneSettings, seed: int):
    """The study's sampler: TPE or random, with a fresh generator per trial seeded by ``(seed, trial
    number)`` (lmsys_arena.tune.sampler): a resumed study draws new points, a rerun from scratch the
    same ones."""
    from lmsys_arena.tune.sampler import TrialSeededSampler

    return TrialSeededSampler(s, seed)
