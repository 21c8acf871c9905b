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
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import time
import warnings
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

from lmsys_arena.config import apply_overrides, config_hash, get_dotted
from lmsys_arena.io import read_json, write_text

log = logging.getLogger(__name__)

STUDIES_DIR = Path("studies")
SPEC_KEYS = {"type", "low", "high", "log", "step", "choices", "times"}
TUNE_KEYS = ("search_space", "tune")  # config sections read here, not by the model
NOT_OBJECTIVE = TUNE_KEYS + ("threads", "log_every")  # settings that do not change a trial's result


# ----------------------------------------------------------------------------- search space
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
            raise ValueError(f"{where}: expected a mapping with 'type' and some of {sorted(SPEC_KEYS - {'type'})}, "
                             f"got {spec!r}")
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
            if v is not None and any(v == c and type(v) is type(c) for c in p.choices):
                out[p.name] = v
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


# ----------------------------------------------------------------------------- settings
@dataclass
class TuneSettings:
    """The config's optional ``tune:`` section (defaults suit the GBDT configs)."""

    folds: list[int] | None = None          # folds trained per trial (None: all)
    max_rows: int | None = None             # row budget: seeded sample of train rows per trial
    sampler: str = "tpe"                    # tpe | random
    startup_trials: int = 10                # random trials before TPE models the space
    pruner: str = "median"                  # median | hyperband | none
    prune_startup_trials: int = 5           # median: never prune before this many trials finished
    prune_warmup_folds: int = 0             # median: never prune before this many folds reported
    heartbeat_interval: int = 60            # seconds between a running trial's heartbeats
    grace_period: int | None = None         # stale after this many seconds without one (default 3x interval)
    max_retry: int = 2                      # re-runs of a trial whose worker died
    keep_runs: bool = True                  # keep runs/tune-<study>/trial-<n>/ (model files) after the trial
    enqueue_defaults: bool = True           # trial 0 of a new study = the config's own values (the baseline)

    @classmethod
    def from_cfg(cls, cfg: dict) -> "TuneSettings":
        raw = dict(cfg.get("tune") or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"config {cfg.get('name')!r} tune: unknown keys {unknown}; known: {sorted(known)}")
        s = cls(**raw)
        if s.sampler not in ("tpe", "random") or s.pruner not in ("median", "hyperband", "none"):
            raise ValueError(f"config {cfg.get('name')!r}: tune.sampler must be tpe|random and tune.pruner "
                             f"median|hyperband|none, got {s.sampler!r}, {s.pruner!r}")
        return s

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
    import optuna

    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: running trials count as bad guesses, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials, multivariate=True,
                                      constant_liar=True)


# ----------------------------------------------------------------------------- storage
def default_storage(study: str) -> str:
    return f"sqlite:///{STUDIES_DIR / study}.db"


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 (a dependency) when 3 is absent."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def open_storage(url: str, s: TuneSettings):
    """RDB storage with heartbeats: a dead worker's RUNNING trial becomes FAIL and is queued again."""
    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    kwargs = {"heartbeat_interval": s.heartbeat_interval, "grace_period": s.grace_period or 3 * s.heartbeat_interval}
    if retry_cls is not None:  # optuna >= 4.9
        kwargs["heartbeat_stale_trial_callback"] = retry_cls(max_retry=s.max_retry)
    else:
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=s.max_retry)
    engine = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 120}}  # workers wait for sqlite's write lock instead of failing
    return RDBStorage(normalize_url(url), engine_kwargs=engine, **kwargs)


def _sqlite_path(url: str) -> Path | None:
    rest = url.split(":///", 1)[1] if ":///" in url else ""
    return Path(rest) if rest and rest != ":memory:" else None


@contextlib.contextmanager
def claim_lock(storage, url: str, study: str):
    """A cross-process mutex around "count trials, then start one" (so k workers stop at exactly TRIALS).

    sqlite: an flock beside the file (one machine). PostgreSQL/MySQL: an advisory lock on the
    database (many machines); the server drops it if the worker dies. Other URLs: no lock, and
    concurrent workers may overshoot the target by up to k-1 trials.
    """
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    if dialect == "sqlite":
        path = _sqlite_path(url)
        if path is None:
            yield
            return
        with open(f"{path}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if dialect not in ("postgresql", "mysql"):
        yield
        return
    from sqlalchemy import text

    key = zlib.crc32(f"lmsys-tune:{study}".encode()) - 2**31
    lock, unlock = (("SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)") if dialect == "postgresql"
                    else ("SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)"))
    with storage.engine.connect() as conn:
        conn.execute(text(lock), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text(unlock), {"k": key})
            conn.commit()


class _Releasable:
    """Enter once, release early (when the trial has started) or at exit, whichever comes first."""

    def __init__(self, cm):
        self._cm, self._held = cm, False

    def __enter__(self):
        self._cm.__enter__()
        self._held = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self._cm.__exit__(None, None, None)

    def __exit__(self, *exc):
        self.release()
        return False


# ----------------------------------------------------------------------------- study
@dataclass
class StudyJob:
    """Everything a worker process needs (picklable)."""

    cfg: dict
    spec: object  # runner.RunSpec
    study: str
    storage: str
    target: int
    seed: int
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
    from lmsys_arena.runner import run_config

    base = {k: v for k, v in job.cfg.items() if k not in NOT_OBJECTIVE}
    full = run_config(base, job.spec)
    return {"model": job.cfg.get("name"), "objective_hash": config_hash({**full, **job.settings.objective_key()}),
            "data": full["run"]["data"], "extra": full["run"]["extra"], **job.settings.objective_key()}


def create_or_load(job: StudyJob, storage=None):
    """Create the study, or resume it after checking it was made for the same objective."""
    import optuna

    storage = storage or open_storage(job.storage, job.settings)
    ident = objective_identity(job)
    study = optuna.create_study(study_name=job.study, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(job.settings, _sampler_seed(job)),
                                pruner=make_pruner(job.settings, _n_steps(job)))
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
        raise RuntimeError(f"study {job.study!r} in {job.storage} was made for another objective "
                           f"(model {study.user_attrs.get('model')!r}, data {study.user_attrs.get('data')!r}, "
                           f"folds {study.user_attrs.get('folds')}, max_rows {study.user_attrs.get('max_rows')}); "
                           f"the config, data or tune budget changed: use another STUDY name")
    return study


def _sampler_seed(job: StudyJob) -> int:
    """Local workers: seed + worker index. Shared RDB servers: also the host and pid, so workers on
    other machines started with the same SEED do not propose the same points."""
    if job.storage.startswith("sqlite:"):
        return job.seed
    return (job.seed + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())) % 2**31


def _n_steps(job: StudyJob) -> int:
    """Folds per trial (the pruner's resource)."""
    if job.settings.folds:
        return len(job.settings.folds)
    path = job.spec.resolved_folds_file()
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make folds` first")
    import pandas as pd

    return int(pd.read_csv(path, usecols=["fold"])["fold"].nunique())


def _counts(study) -> dict:
    from optuna.trial import TrialState

    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


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
                log.info("worker %d: target reached counting running trials; waiting for them (a dead worker's "
                         "trial is retried here after %ss without heartbeat)", job.worker,
                         job.settings.grace_period or 3 * job.settings.heartbeat_interval)
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
    log.info("study %s: %d/%d trials (%d pruned, %d failed), best %s; ETA %s",
             job.study, n, job.target, c[S.PRUNED], c[S.FAIL], best, eta)


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
        metrics = train_run(cfg, run_dir, spec, only_folds=job.settings.folds, fresh=resumed is None,
                            on_fold_end=on_fold_end)
    except optuna.TrialPruned:
        log.info("trial %d: pruned after %d folds (running mean %.5f), %.0fs", trial.number, len(losses),
                 statistics.fmean(losses), time.time() - t0)
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
    from lmsys_arena.runner import run_config

    frozen = trial.study._storage.get_trial(trial._trial_id)  # optuna 5's Trial has no public system_attrs
    history = frozen.system_attrs.get("retry_history") or []
    for prev in reversed(history):
        old = job.runs_dir / f"trial-{prev}"
        cfg_file = old / "config.json"
        if not cfg_file.exists():
            continue
        want = run_config(apply_overrides(model_config(job.cfg), trial.user_attrs.get("overrides", {})),
                          _with_budget(job.spec, job.settings))
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
    log.info("study %s (%s): target %d trials, %d workers on this machine, %s threads%s each; trial runs in %s/",
             job.study, job.storage, job.target, job.workers, job.threads or "all",
             " and 1 GPU" if job.workers > 1 and job.gpus else "", job.runs_dir)
    if job.workers > len(job.gpus) > 0:
        log.warning("%d workers share %d GPUs: several trials per GPU", job.workers, len(job.gpus))
    if job.workers == 1:
        run_worker(job)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=run_worker, args=(_replace(job, worker=i, seed=job.seed + i),),
                             name=f"tune-worker-{i}") for i in range(job.workers)]
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
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def _replace(job: StudyJob, **kw) -> StudyJob:
    from dataclasses import replace

    return replace(job, **kw)


# ----------------------------------------------------------------------------- best / report
def summarize(study) -> dict:
    from optuna.trial import TrialState as S

    c = _counts(study)
    out = {"study": study.study_name, "complete": c[S.COMPLETE], "pruned": c[S.PRUNED], "failed": c[S.FAIL],
           "running": c[S.RUNNING], "waiting": c[S.WAITING]}
    if c[S.COMPLETE]:
        best = study.best_trial
        out.update(value=best.value, trial=best.number,
                   params=best.user_attrs.get("overrides") or dict(best.params))
    base = [t for t in study.get_trials(deepcopy=False, states=(S.COMPLETE,)) if t.user_attrs.get("baseline")]
    if base:
        out["baseline"] = base[0].value
    return out


def importances(study) -> dict:
    import optuna

    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as e:  # too few finished trials or a constant space
        log.info("no parameter importances: %s", e)
        return {}


def save_plots(study, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    written = []
    plots = {"history": ovm.plot_optimization_history, "importance": ovm.plot_param_importances}
    for kind, fn in plots.items():
        path = stem.with_name(f"{stem.name}.{kind}.png")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            from lmsys_arena.io import atomic_path

            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=110, format="png")
            plt.close(fig)
            written.append(path)
        except (RuntimeError, ValueError) as e:
            log.info("no %s plot: %s", kind, e)
    return written


def best(study_name: str, storage_url: str | None = None, out_dir: Path = STUDIES_DIR) -> dict:
    """Write ``studies/<study>.best.yaml`` ({value, trials, params}) and the plots; return the summary."""
    import optuna
    import yaml

    url = storage_url or default_storage(study_name)
    if url.startswith("sqlite:") and (p := _sqlite_path(url)) is not None and not p.exists():
        raise FileNotFoundError(f"{p} not found: run `make tune STUDY={study_name}` first (or pass STORAGE=...)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=normalize_url(url))
    summary = summarize(study)
    if "value" not in summary:
        raise RuntimeError(f"study {study_name!r} has no complete trial yet ({summary})")
    summary["importances"] = importances(study)
    doc = {"value": summary["value"], "baseline": summary.get("baseline"),
           "trials": summary["complete"] + summary["pruned"], "pruned": summary["pruned"],
           "failed": summary["failed"], "best_trial": summary["trial"], "study": study_name, "storage": url,
           "model": study.user_attrs.get("model"), "folds": study.user_attrs.get("folds"),
           "max_rows": study.user_attrs.get("max_rows"), "params": summary["params"]}
    path = out_dir / f"{study_name}.best.yaml"
    write_text(path, yaml.safe_dump(doc, sort_keys=False))
    summary["files"] = [str(path)] + [str(p) for p in save_plots(study, out_dir / study_name)]
    return summary


def format_summary(s: dict) -> str:
    lines = [f"study {s['study']}: best OOF log loss {s.get('value', float('nan')):.5f} (trial {s.get('trial')}); "
             f"{s['complete'] + s['pruned']} trials ({s['complete']} complete, {s['pruned']} pruned), "
             f"{s['failed']} failed"]
    if "baseline" in s and "value" in s:
        lines.append(f"  vs the config's own values (trial 0): {s['baseline']:.5f}, "
                     f"improvement {s['baseline'] - s['value']:.5f}")
    for k, v in (s.get("params") or {}).items():
        lines.append(f"  {k}: {v}")
    if s.get("importances"):
        lines.append("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items()))
    for f in s.get("files", []):
        lines.append(f"wrote {f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def cli(args, *, resolve_config, resolve_data) -> None:
    if args.command == "best":
        print(format_summary(best(args.study, args.storage)))
        return
    from lmsys_arena.runner import RunSpec

    cfg = resolve_config(args)
    settings = TuneSettings.from_cfg(cfg)
    study = args.study or cfg["name"]
    if args.workers < 1 or args.trials < 1:
        raise ValueError(f"--workers and --trials must be >= 1, got {args.workers}, {args.trials}")
    threads = cfg.get("threads") or None
    if args.workers > 1 and not threads:  # k workers share the cores: one slice each
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        cfg = {**cfg, "threads": threads}
    job = StudyJob(cfg=cfg, spec=RunSpec(data=resolve_data(args), extra=args.extra, seed=args.seed,
                                         skip_bad=args.skip_bad),
                   study=study, storage=args.storage or default_storage(study), target=args.trials, seed=args.seed,
                   settings=settings, workers=args.workers, threads=threads,
                   gpus=visible_gpus() if args.workers > 1 else [],
                   log_level=logging.getLevelName(logging.getLogger().level))
    print(format_summary(tune(job)))
    print(f"next: make best STUDY={study}")


__all__ = ["ParamSpec", "TuneSettings", "StudyJob", "parse_search_space", "sample_overrides", "tune", "best",
           "run_worker", "next_action", "open_storage", "claim_lock"]
