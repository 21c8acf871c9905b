"""Optuna studies for every model family: resumable, prunable, shared by many workers.

    make tune MODEL=xgb TRIALS=40 WORKERS=2                       # sqlite:///studies/xgb.db
    make tune MODEL=gemma2-9b-it TRIALS=30 STORAGE=postgresql://user@host/optuna   # one per GPU machine
    make best STUDY=xgb                       # studies/xgb.best.yaml + .history.png + .importance.png
    make train MODEL=xgb PARAMS=best          # retrain with the best parameters

The objective is the OOF log loss of ``runner.train_run`` (the code ``make train`` runs), on the
folds / row budget of the config's ``tune:`` section; after each fold the running mean of the fold
losses is reported and the pruner may stop the trial. Each trial is a run in
``runs/tune-<study>/trial-<n>/``. The search space is data at the end of each config::

    search_space:                  # dotted config key: spec
      params.max_depth: {type: int, low: 3, high: 10}
      params.learning_rate: {type: float, low: 0.01, high: 0.2, log: true}
      model.lora.r: {type: categorical, choices: [8, 16, 32, 64]}
      model.lora.alpha: {type: categorical, choices: [1, 2], times: model.lora.r}   # alpha = r or 2r

``TRIALS`` is the study's total: workers (``WORKERS`` here, or more ``make tune`` on other
machines sharing one RDB storage) claim trials under a storage lock, so the study ends with
exactly ``TRIALS`` COMPLETE+PRUNED trials. A worker killed mid-trial stops sending heartbeats;
another worker marks its trial FAIL and runs it again (``RetryHeartbeatStaleTrialCallback``),
resuming the folds the dead one had finished when the run folder is on the same disk.

Trial ``n`` samples with a generator seeded by ``(SEED, n)`` (``lmsys_arena.tune.sampler``): a
resumed study or a rerun after a kill draws new points, and the same study from scratch with the
same seed proposes the same sequence.
"""

from __future__ import annotations

import logging
import os

from lmsys_arena.tune.report import best, format_summary, importances, save_plots, summarize
from lmsys_arena.tune.settings import TuneSettings, make_pruner, make_sampler
from lmsys_arena.tune.space import ParamSpec, default_params, model_config, parse_search_space, sample_overrides
from lmsys_arena.tune.storage import STUDIES_DIR, claim_lock, default_storage, normalize_url, open_storage
from lmsys_arena.tune.study import StudyJob, create_or_load, next_action, run_trial, run_worker, tune, visible_gpus


def cli(args, *, resolve_config, resolve_data) -> None:
    if args.command == "best":
        print(format_summary(best(args.study, args.storage)))
        return
    from lmsys_arena.run_inputs import RunSpec

    cfg = resolve_config(args)
    settings = TuneSettings.from_cfg(cfg)
    study = args.study or cfg["name"]
    if args.workers < 1 or args.trials < 1:
        raise ValueError(f"--workers and --trials must be >= 1, got {args.workers}, {args.trials}")
    threads = cfg.get("threads") or None
    if args.workers > 1 and not threads:  # k workers share the cores: one slice each
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        cfg = {**cfg, "threads": threads}
    job = StudyJob(
        cfg=cfg,
        spec=RunSpec(data=resolve_data(args), extra=args.extra, seed=args.seed, skip_bad=args.skip_bad),
        study=study,
        storage=args.storage or default_storage(study),
        target=args.trials,
        seed=args.seed,
        settings=settings,
        workers=args.workers,
        threads=threads,
        gpus=visible_gpus() if args.workers > 1 else [],
        log_level=logging.getLevelName(logging.getLogger().level),
    )
    print(format_summary(tune(job)))
    print(f"next: make best STUDY={study}")


__all__ = [
    "importances",
    "save_plots",
    "summarize",
    "make_pruner",
    "make_sampler",
    "default_params",
    "model_config",
    "STUDIES_DIR",
    "normalize_url",
    "create_or_load",
    "run_trial",
    "format_summary",
    "default_storage",
    "visible_gpus",
    "ParamSpec",
    "TuneSettings",
    "StudyJob",
    "parse_search_space",
    "sample_overrides",
    "tune",
    "best",
    "run_worker",
    "next_action",
    "open_storage",
    "claim_lock",
]
