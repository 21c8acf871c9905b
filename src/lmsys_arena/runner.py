"""The fold loop every model family plugs into: train per fold, out-of-fold predictions,
fold-averaged test predictions, scoring and the submission file.

A family is a module with two functions::

    fit_fold(cfg, train, valid, fold_dir, seed) -> logits for ``valid`` (n, 3)
    predict(cfg, df, fold_dir) -> logits for ``df`` (n, 3)   # swap-TTA per cfg["tta"]

``runs/<run>/`` holds ``config.json`` (resolved), ``fold<k>/`` (the family's model files plus
``valid.parquet``, written last, which marks the fold done so a re-run resumes after it),
``oof.parquet``, ``test.parquet`` and ``metrics.json``.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from lmsys_arena.config import config_hash
from lmsys_arena.data import CLASS_NAMES, Competition, load_extra, prompt_key
from lmsys_arena.folds import folds_path, read_folds
from lmsys_arena.io import read_json, write_csv, write_json, write_parquet
from lmsys_arena.metrics import accuracy, log_loss, log_softmax, softmax, validate_submission

log = logging.getLogger(__name__)

PROB_COLS = ["p_a", "p_b", "p_tie"]
LOGIT_COLS = ["logit_a", "logit_b", "logit_tie"]
FAMILIES = {"gbdt": "lmsys_arena.gbdt", "llm": "lmsys_arena.llm.family"}


def family_module(cfg: dict):
    fam = cfg["family"]
    if fam not in FAMILIES:
        raise ValueError(f"unknown family {fam!r}; known: {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[fam])


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def default_data_dir() -> Path:
    full = Path("input/lmsys-chatbot-arena")
    return full if (full / "train.csv").exists() else Path("input/sample")


@dataclass
class RunSpec:
    """Where a run's inputs come from; stored in ``config.json`` so infer/score can find them."""

    data: str
    extra: str | None = None
    folds_file: str | None = None
    seed: int = 42
    skip_bad: bool = False
    max_rows: int | None = None  # row budget (tuning): a seeded sample of train rows, taken before the fold split
    folds_sha1: str | None = None  # recorded by run_config (the folds file's content); not an input

    def competition(self) -> Competition:
        return Competition(Path(self.data))

    def resolved_folds_file(self) -> Path:
        return Path(self.folds_file) if self.folds_file else folds_path(self.competition().name)


def frame_from_logits(ids, logits: np.ndarray, **extra_cols) -> pd.DataFrame:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (len(ids), 3) or not np.isfinite(logits).all():
        raise ValueError(f"model returned bad logits: shape {logits.shape}, finite={np.isfinite(logits).all()}")
    p = softmax(logits)
    df = pd.DataFrame({"id": list(ids), **extra_cols})
    df[PROB_COLS] = p
    df[LOGIT_COLS] = logits
    return df


def train_run(cfg: dict, run_dir: str | Path, spec: RunSpec, *, only_folds: list[int] | None = None,
              fresh: bool = False, on_fold_end: Callable[[int, float], None] | None = None) -> dict:
    """Train one model per fold (resuming finished folds), write OOF predictions and metrics.

    ``on_fold_end(fold, fold_logloss)`` is called after each fold (Optuna reports and prunes there).
    Returns the metrics dict.
    """
    run_dir = Path(run_dir)
    full_cfg = run_config(cfg, spec)
    _check_or_reset_run_dir(run_dir, full_cfg, fresh)

    comp = spec.competition()
    train = comp.train(skip_bad=spec.skip_bad)
    fold_of = read_folds(spec.resolved_folds_file(), train)
    extra = load_extra(spec.extra, train, skip_bad=spec.skip_bad) if spec.extra else train.iloc[:0]
    if spec.max_rows and spec.max_rows < len(train):
        keep = np.sort(np.random.default_rng(spec.seed).choice(len(train), spec.max_rows, replace=False))
        train, fold_of = train.iloc[keep].reset_index(drop=True), fold_of.iloc[keep].reset_index(drop=True)
        log.info("row budget: %d of the train rows (seeded sample, same folds; extra rows kept)", spec.max_rows)
    n_folds = int(fold_of.max()) + 1
    folds = only_folds if only_folds is not None else list(range(n_folds))
    bad = [f for f in folds if f < 0 or f >= n_folds]
    if bad:
        raise ValueError(f"folds {bad} not in the folds file (0..{n_folds - 1})")
    extra_keys = prompt_key(extra) if len(extra) else None
    fam = family_module(cfg)
    log.info("run %s: family %s, %d train rows (+%d extra, train-only), folds %s", run_dir.name, cfg["family"],
             len(train), len(extra), folds)

    for f in folds:
        fold_dir = run_dir / f"fold{f}"
        done = fold_dir / "valid.parquet"
        if done.exists():
            fold_loss = _fold_loss(pd.read_parquet(done))
            log.info("fold %d: already done (log loss %.5f), skipping", f, fold_loss)
        else:
            fold_dir.mkdir(parents=True, exist_ok=True)
            tr, va = fold_split(train, fold_of, extra, extra_keys, f)
            t0 = time.time()
            logits = fam.fit_fold(cfg, tr, va, fold_dir, spec.seed + f)
            frame = frame_from_logits(va["id"], logits, fold=f, label=va["label"].to_numpy())
            if is_main_process():
                write_parquet(done, frame)
            barrier()
            fold_loss = _fold_loss(frame)
            log.info("fold %d: log loss %.5f, accuracy %.4f, %d train / %d valid rows, %.1fs", f, fold_loss,
                     accuracy(frame["label"], frame[PROB_COLS].to_numpy()), len(tr), len(va), time.time() - t0)
        if on_fold_end is not None:
            on_fold_end(f, fold_loss)

    oof = pd.concat([pd.read_parquet(run_dir / f"fold{f}" / "valid.parquet") for f in folds], ignore_index=True)
    metrics = score_frame(oof)
    if is_main_process():
        write_parquet(run_dir / "oof.parquet", oof)
        _merge_metrics(run_dir, metrics)
    log.info("run %s: OOF log loss %.5f over %d rows (folds %s)", run_dir.name, metrics["oof_logloss"], len(oof), folds)
    return metrics


def run_config(cfg: dict, spec: RunSpec) -> dict:
    """The resolved config stored in ``config.json`` (its hash decides whether a run dir can resume)."""
    run = {"data": spec.data, "extra": spec.extra, "folds_file": str(spec.resolved_folds_file()),
           "seed": spec.seed, "skip_bad": spec.skip_bad}
    if spec.max_rows:  # only when set, so runs written before this option keep their hash
        run["max_rows"] = spec.max_rows
    # the folds file's content, so re-running `make folds` with other FOLDS/SEED refuses to mix splits
    run["folds_sha1"] = _file_sha1(spec.resolved_folds_file())
    model_cfg = {k: v for k, v in cfg.items() if k not in ("search_space", "tune")}  # read by `make tune` only
    return {**model_cfg, "run": run}


def _file_sha1(path: Path) -> str | None:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12] if path.exists() else None


def fold_split(train: pd.DataFrame, fold_of: pd.Series, extra: pd.DataFrame, extra_keys: pd.Series | None,
               fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, validation rows) of one fold: the other folds plus the extra rows whose prompt is
    not in the validation rows (``extra_keys``: ``prompt_key(extra)``, None without extra rows)."""
    is_valid = (fold_of == fold).to_numpy()
    va = train[is_valid].reset_index(drop=True)
    return pd.concat([train[~is_valid], _extra_for_fold(extra, extra_keys, va, fold)], ignore_index=True), va


def _extra_for_fold(extra: pd.DataFrame, extra_keys: pd.Series | None, valid: pd.DataFrame, fold: int) -> pd.DataFrame:
    """Extra (train-only) rows for one fold, without those whose prompt is in the fold's validation rows."""
    if extra_keys is None:
        return extra
    leak = extra_keys.isin(set(prompt_key(valid))).to_numpy()
    if leak.any():
        log.info("fold %d: %d extra rows share a prompt with the validation fold: left out", fold, int(leak.sum()))
    return extra[~leak]


def _fold_loss(frame: pd.DataFrame) -> float:
    return log_loss(frame["label"], frame[PROB_COLS].to_numpy())


def _check_or_reset_run_dir(run_dir: Path, full_cfg: dict, fresh: bool) -> None:
    cfg_file = run_dir / "config.json"
    if run_dir.exists() and fresh:
        if is_main_process():
            log.info("--fresh: removing %s", run_dir)
            shutil.rmtree(run_dir)
        barrier()
    if cfg_file.exists():
        old = read_json(cfg_file)
        old.pop("config_hash", None)
        if config_hash(old) != config_hash(full_cfg):
            raise RuntimeError(f"{run_dir} was trained with a different config; use another RUN name, "
                               f"or FRESH=1 to retrain from scratch (diff: {_diff(old, full_cfg)})")
        return
    if is_main_process():
        write_json(cfg_file, {**full_cfg, "config_hash": config_hash(full_cfg)})


def _diff(a: dict, b: dict) -> str:
    from lmsys_arena.config import flatten

    fa, fb = flatten({k: v for k, v in a.items() if k != "config_hash"}), flatten(b)
    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    return ", ".join(f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in keys[:5]) or "none"


def load_run_config(run_dir: str | Path) -> tuple[dict, RunSpec]:
    cfg = read_json(Path(run_dir) / "config.json")
    cfg.pop("config_hash", None)
    spec = RunSpec(**cfg.pop("run"))
    return cfg, spec


def infer_run(run_dir: str | Path, *, data: str | None = None, submission: str | Path | None = None) -> pd.DataFrame:
    """Fold-averaged test predictions -> ``test.parquet`` and a validated submission CSV."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir}/config.json not found: run `make train RUN={run_dir.name}` first")
    cfg, spec = load_run_config(run_dir)
    comp = Competition(Path(data)) if data else spec.competition()
    test = comp.test(skip_bad=spec.skip_bad)
    fam = family_module(cfg)
    fold_dirs = sorted((d for d in run_dir.glob("fold*") if (d / "valid.parquet").exists()), key=lambda d: int(d.name[4:]))
    if not fold_dirs:
        raise FileNotFoundError(f"{run_dir} has no trained folds: run `make train RUN={run_dir.name}` first")
    log.info("%s: averaging %d fold models (%s) over %d test rows from %s", run_dir.name, len(fold_dirs),
             ", ".join(d.name for d in fold_dirs), len(test), comp.test_csv)
    probs = []
    for d in fold_dirs:
        t0 = time.time()
        probs.append(softmax(fam.predict(cfg, test, d)))
        log.info("%s: predicted %d test rows in %.1fs", d.name, len(test), time.time() - t0)
    p = np.mean(probs, axis=0)
    frame = frame_from_logits(test["id"], np.log(np.clip(p, 1e-15, 1)))
    if not is_main_process():
        return frame
    write_parquet(run_dir / "test.parquet", frame)
    sub_path = Path(submission) if submission else Path("submissions") / f"{run_dir.name}.csv"
    write_submission(frame, sub_path, test["id"])
    return frame


def write_submission(frame: pd.DataFrame, path: str | Path, test_ids) -> pd.DataFrame:
    p = frame[PROB_COLS].to_numpy(dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    sub = pd.DataFrame({"id": frame["id"].to_numpy()})
    sub[list(CLASS_NAMES)] = p
    validate_submission(sub, test_ids, name=str(path))
    write_csv(path, sub)
    return sub


def score_frame(oof: pd.DataFrame) -> dict:
    p = oof[PROB_COLS].to_numpy()
    y = oof["label"].to_numpy()
    per_fold = {int(f): {"logloss": log_loss(g["label"], g[PROB_COLS].to_numpy()),
                         "accuracy": accuracy(g["label"], g[PROB_COLS].to_numpy()), "rows": len(g)}
                for f, g in oof.groupby("fold")}
    return {"oof_logloss": log_loss(y, p), "oof_accuracy": accuracy(y, p), "rows": len(oof), "folds": per_fold}


def score_run(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "oof.parquet").exists():
        raise FileNotFoundError(f"{run_dir}/oof.parquet not found: run `make train RUN={run_dir.name}` first")
    oof = pd.read_parquet(run_dir / "oof.parquet")
    metrics = score_frame(oof)
    _merge_metrics(run_dir, metrics)
    return metrics


def _merge_metrics(run_dir: Path, metrics: dict) -> None:
    path = run_dir / "metrics.json"
    old = read_json(path) if path.exists() else {}
    write_json(path, {**old, **metrics})


def format_metrics(name: str, metrics: dict) -> str:
    lines = [f"{name}: OOF log loss {metrics['oof_logloss']:.5f}, accuracy {metrics['oof_accuracy']:.4f}, "
             f"{metrics['rows']} rows"]
    for f, m in sorted(metrics["folds"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"  fold {f}: log loss {m['logloss']:.5f}  accuracy {m['accuracy']:.4f}  rows {m['rows']}")
    return "\n".join(lines)


def unswap_average(logits: np.ndarray, logits_swapped: np.ndarray) -> np.ndarray:
    """Swap-TTA: average p(x) with unswap(p(swap(x))); returns log-probabilities.

    ``logits_swapped`` are the model's outputs on the A/B-swapped rows, whose columns are
    (B wins, A wins, tie) from the original point of view.
    """
    p = softmax(logits)
    q = softmax(logits_swapped)[:, [1, 0, 2]]
    return np.log(np.clip((p + q) / 2, 1e-300, 1))


__all__ = ["train_run", "infer_run", "score_run", "RunSpec", "unswap_average", "log_softmax"]
