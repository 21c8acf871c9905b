"""Creating, resuming and running a study: worker processes claim trials, each trial is a
``runner.train_run`` with the sampled overrides."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lmsys_arena.config import apply_overrides, config_hash
from lmsys_arena.io import read_json
from lmsys_arena.tune.report import _counts, summarize
from lmsys_arena.tune.settings import TuneSettings, make_pruner, make_sampler
from lmsys_arena.tune.space import TUNE_KEYS, default_params, model_config, parse_search_space, sample_overrides
from lmsys_arena.tune.storage import _Releasable, claim_lock, open_storage

log = logging.getLogger(__name__)

NOT_OBJECTIVE = TUNE_KEYS + ("threads", "log_every")  # settings that do not change a trial's result


@dataclass
class StudyJob:
    """Everything a worker process needs (picklable)."""

    cfg: dict
    spec: object  # run_inputs.RunSpec
    study: str
    storage: str
    target: int
    seed: int  # the sampler's: trial n draws from a generator seeded by (seed, n), in every worker
    settings: TuneSettings = field(default_factory=TuneSettings)
    worker: int = 0
    workers: int = 1
    threads: int | None = None
    gpus: list[str] = field(default_factory=list)  # visible GPUs; worker i gets gpus[i % len] alone
    log_level: str = "INFO"

    @property
    def runs_dir(self) -> Path:
        return Path("runs") / f"tune-{self.study}"


def objective_identity(job: StudyJob) -> dict:
    """What makes two trials comparable: the config (without the search space), data and tuning budget."""
    from lmsys_arena.run_inputs import run_config

    base = {k: v for k, v in job.cfg.items() if k not in NOT_OBJECTIVE}
    full = run_config(base, job.spec)
    return {
        "model": job.cfg.get("name"),
        "objective_hash": config_hash({**full, **job.settings.objective_key()}),
        "data": full["run"]["data"],
        "extra": full["run"]["extra"],
        **job.settings.objective_key(),
    }


def create_or_load(job: StudyJob, storage=None):
    """Create the study, or resume it after checking it was made for the same objective."""
    import optuna

    storage = storage or open_storage(job.storage, job.settings)
    ident = objective_identity(job)
    study = optuna.create_study(
        study_name=job.study,
        storage=storage,
        direction="minimize",
        load_if_exists=True,
        sampler=make_sampler(job.settings, job.seed),  # seeded per trial number: resuming draws new points
        pruner=make_pruner(job.settings, _n_steps(job)),
    )
    with claim_lock(storage, job.storage, job.study):  # workers on other machines may be creating it too
        old = study.user_attrs.get("objective_hash")
        if old is None:
            for k, v in ident.items():
                study.set_user_attr(k, v)
            if job.settings.enqueue_defaults and not study.get_trials(deepcopy=False):
                defaults = default_params(parse_search_space(job.cfg), job.cfg)
                study.enqueue_trial(defaults, user_attrs={"baseline": True})
                log.info("study %s: trial 0 = the config's values %s (the untuned baseline)", job.study, defaults)
    if old is not None and old != ident["objective_hash"]:
        raise RuntimeError(
            f"study {job.study!r} in {job.storage} was made for another objective "
            f"(model {study.user_attrs.get('model')!r}, data {study.user_attrs.get('data')!r}, "
            f"folds {study.user_attrs.get('folds')}, max_rows {study.user_attrs.get('max_rows')}); "
            f"the config, data or tune budget changed: use another STUDY name"
        )
    return study


def _n_steps(job: StudyJob) -> int:
    """Folds per trial (the pruner's resource)."""
    if job.settings.folds:
        return len(job.settings.folds)
    path = job.spec.resolved_folds_file()
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make folds` first")
    import pandas as pd

    return int(pd.read_csv(path, usecols=["fold"])["fold"].nunique())


def next_action(study, target: int) -> str:
    """``run`` a trial, ``wait`` for others' running trials (one may die and need a retry) or ``stop``."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState as S

    fail_stale_trials(study)
    c = _counts(study)
    if c[S.WAITING] or c[S.COMPLETE] + c[S.PRUNED] + c[S.RUNNING] < target:
        return "run"
    return "wait" if c[S.RUNNING] else "stop"


def run_worker(job: StudyJob) -> None:
    """One worker: claim a trial under the lock, run it, repeat until the study has ``target`` trials."""
    from lmsys_arena.deadline import deadline_passed
    from lmsys_arena.io import setup_logging

    if job.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(job.threads)
    if job.workers > 1 and job.gpus:  # before anything imports torch: one GPU per local worker
        os.environ["CUDA_VISIBLE_DEVICES"] = job.gpus[job.worker % len(job.gpus)]
    setup_logging(job.log_level)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat API
    storage = open_storage(job.storage, job.settings)
    study = create_or_load(job, storage)
    t0, done_here, waiting = time.time(), 0, False
    while not deadline_passed():
        with _Releasable(claim_lock(storage, job.storage, job.study)) as lock:
            action = next_action(study, job.target)
            if action == "run":

                def objective(trial, _lock=lock):
                    _lock.release()  # the trial is RUNNING in the storage: others count it now
                    return run_trial(trial, job)

                study.optimize(objective, n_trials=1, gc_after_trial=False)
                done_here += 1
        if action == "stop":
            break
        if action == "wait":
            if not waiting:
                log.info(
                    "worker %d: target reached counting running trials; waiting for them (a dead worker's "
                    "trial is retried here after %ss without heartbeat)",
                    job.worker,
                    job.settings.grace_period or 3 * job.settings.heartbeat_interval,
                )
            waiting = True
            time.sleep(min(5.0, job.settings.heartbeat_interval))
            continue
        waiting = False
        _log_progress(study, job, done_here, time.time() - t0)
    log.info("worker %d: done, %d trials here in %.0fs", job.worker, done_here, time.time() - t0)


def _log_progress(study, job: StudyJob, done_here: int, elapsed: float) -> None:
    from optuna.trial import TrialState as S

    c = _counts(study)
    n = c[S.COMPLETE] + c[S.PRUNED]
    rate = done_here / elapsed * job.workers if elapsed > 0 else 0.0  # trials/s of this machine's workers
    eta = f"{(job.target - n) / rate / 60:.0f} min" if rate > 0 else "?"
    best = f"{study.best_value:.5f} (trial {study.best_trial.number})" if c[S.COMPLETE] else "-"
    log.info(
        "study %s: %d/%d trials (%d pruned, %d failed), best %s; ETA %s",
        job.study,
        n,
        job.target,
        c[S.PRUNED],
        c[S.FAIL],
        best,
        eta,
    )


def run_trial(trial, job: StudyJob) -> float:
    """The objective: ``train_run`` on the sampled config; reports the running fold mean for pruning."""
    import optuna

    from lmsys_arena.runner import train_run

    space = parse_search_space(job.cfg)
    overrides = sample_overrides(trial, space, job.cfg)
    cfg = apply_overrides(model_config(job.cfg), overrides)
    run_dir = job.runs_dir / f"trial-{trial.number}"
    trial.set_user_attr("overrides", overrides)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    resumed = _adopt_failed_run(trial, job, run_dir)
    spec = _with_budget(job.spec, job.settings)
    log.info("trial %d: %s%s", trial.number, _fmt(overrides), f" (retry, resuming {resumed})" if resumed else "")
    losses: list[float] = []

    def on_fold_end(fold: int, loss: float) -> None:
        losses.append(loss)
        trial.report(statistics.fmean(losses), step=len(losses) - 1)
        if trial.should_prune():
            raise optuna.TrialPruned(f"fold {fold}: running mean {statistics.fmean(losses):.5f}")

    t0 = time.time()
    try:
        metrics = train_run(
            cfg, run_dir, spec, only_folds=job.settings.folds, fresh=resumed is None, on_fold_end=on_fold_end
        )
    except optuna.TrialPruned:
        log.info(
            "trial %d: pruned after %d folds (running mean %.5f), %.0fs",
            trial.number,
            len(losses),
            statistics.fmean(losses),
            time.time() - t0,
        )
        raise
    finally:
        if not job.settings.keep_runs:
            shutil.rmtree(run_dir, ignore_errors=True)
    value = float(metrics["oof_logloss"])
    log.info("trial %d: OOF log loss %.5f over %d folds, %.0fs", trial.number, value, len(losses), time.time() - t0)
    return value


def _with_budget(spec, s: TuneSettings):
    from dataclasses import replace

    return replace(spec, max_rows=s.max_rows) if s.max_rows else spec


def _adopt_failed_run(trial, job: StudyJob, run_dir: Path) -> str | None:
    """A retry of a dead worker's trial takes over its run folder (same params, so done folds resume)."""
    from lmsys_arena.run_inputs import run_config

    frozen = trial.study._storage.get_trial(trial._trial_id)  # optuna 5's Trial has no public system_attrs
    history = frozen.system_attrs.get("retry_history") or []
    for prev in reversed(history):
        old = job.runs_dir / f"trial-{prev}"
        cfg_file = old / "config.json"
        if not cfg_file.exists():
            continue
        want = run_config(
            apply_overrides(model_config(job.cfg), trial.user_attrs.get("overrides", {})),
            _with_budget(job.spec, job.settings),
        )
        saved = read_json(cfg_file)
        if saved.get("config_hash") != config_hash(want):
            return None
        shutil.rmtree(run_dir, ignore_errors=True)
        os.replace(old, run_dir)
        return old.name
    return None


def _fmt(overrides: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides.items())


def tune(job: StudyJob) -> dict:
    """Create/resume the study, run ``job.workers`` local worker processes, return the summary."""
    parse_search_space(job.cfg)
    study = create_or_load(job)  # creates tables and the study once, before workers race for it
    log.info(
        "study %s (%s): target %d trials, %d workers on this machine, %s threads%s each; trial runs in %s/",
        job.study,
        job.storage,
        job.target,
        job.workers,
        job.threads or "all",
        " and 1 GPU" if job.workers > 1 and job.gpus else "",
        job.runs_dir,
    )
    if job.workers > len(job.gpus) > 0:
        log.warning("%d workers share %d GPUs: several trials per GPU", job.workers, len(job.gpus))
    if job.workers == 1:
        run_worker(job)
    else:
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=run_worker, args=(_replace(job, worker=i),), name=f"tune-worker-{i}")
            for i in range(job.workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.name for p in procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"workers {bad} failed (see their log above); `make tune` again resumes the study")
    return summarize(study)


def visible_gpus() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES, else nvidia-smi), without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(g for g in out.splitlines() if g.startswith("GPU "))]


def _replace(job: StudyJob, **kw) -> StudyJob:
    from dataclasses import replace

    return replace(job, **kw)
