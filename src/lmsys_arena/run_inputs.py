"""A run's inputs: where they come from (:class:`RunSpec`, stored in ``config.json`` as "run") and the resolved
config whose hash decides whether a run folder may resume (:func:`run_config`). The folder itself is
:mod:`lmsys_arena.runs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmsys_arena.data import Competition
from lmsys_arena.versions import file_sha1

NOT_MODEL = ("search_space", "tune", "base")  # config keys read by `make tune` only / by the loader
# dotted keys that change how a run is watched, not its model: left out of config.json, so a run resumes
# (and keeps its config_hash) whatever their value (train.report_to: lmsys_arena.curves)
NOT_MODEL_DOTTED = ("train.report_to",)


@dataclass
class RunSpec:
    """Where a run's inputs come from; stored in ``config.json`` ("run") so infer/score find them."""

    data: str
    extra: str | None = None
    folds_file: str | None = None
    seed: int = 42
    skip_bad: bool = False
    max_rows: int | None = None  # row budget (tuning): a seeded sample of train rows, taken before the fold split
    extra_weight: float = 1.0  # loss weight of the EXTRA rows
    pseudo: str | None = None  # soft-labelled train-only rows (`make pseudo`'s CSV; data.load_pseudo)
    pseudo_weight: float = 1.0  # loss weight of the pseudo rows
    pseudo_min_prob: float = 0.0  # keep the pseudo rows whose largest soft target is at least this
    # recorded by run_config (the input files' content), not inputs
    folds_sha1: str | None = None
    train_sha1: str | None = None
    extra_sha1: str | None = None
    pseudo_sha1: str | None = None

    def competition(self) -> Competition:
        return Competition(Path(self.data))

    def resolved_folds_file(self) -> Path:
        from lmsys_arena.folds import folds_path

        return Path(self.folds_file) if self.folds_file else folds_path(self.competition().name)


def run_config(cfg: dict, spec: RunSpec) -> dict:
    """The resolved config stored in ``config.json`` (its hash decides whether a run folder can resume)."""
    run = {
        "data": spec.data,
        "extra": spec.extra,
        "folds_file": str(spec.resolved_folds_file()),
        "seed": spec.seed,
        "skip_bad": spec.skip_bad,
    }
    if spec.max_rows:
        run["max_rows"] = spec.max_rows
    if spec.extra_weight != 1.0:  # recorded only when used: the hashes of runs without them stay as they were
        run["extra_weight"] = spec.extra_weight
    if spec.pseudo:
        run.update(pseudo=spec.pseudo, pseudo_weight=spec.pseudo_weight, pseudo_min_prob=spec.pseudo_min_prob)
    # the inputs' content: a run refuses to resume on a changed train.csv, EXTRA file or folds file
    run["folds_sha1"] = file_sha1(spec.resolved_folds_file())
    run["train_sha1"] = file_sha1(spec.competition().train_csv)
    if spec.extra:
        run["extra_sha1"] = file_sha1(spec.extra)
    if spec.pseudo:
        run["pseudo_sha1"] = file_sha1(spec.pseudo)
    return {**_model_keys(cfg), "run": run}


def _model_keys(cfg: dict) -> dict:
    """``cfg`` without :data:`NOT_MODEL` and :data:`NOT_MODEL_DOTTED` (a section they leave empty goes too)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items() if k not in NOT_MODEL}
    for key in NOT_MODEL_DOTTED:
        section, _, name = key.partition(".")
        if isinstance(out.get(section), dict) and name in out[section]:
            del out[section][name]
            if not out[section]:
                del out[section]
    return out
