"""The fold loop every model family plugs into: train per fold, out-of-fold predictions,
fold-averaged test predictions, scoring and the submission file.

    python -m lmsys_arena train --model xgb          # train_run
    python -m lmsys_arena train --model xgb --full   # refit_run: all rows, one model, runs/xgb-full/
    python -m lmsys_arena infer --run xgb-sample     # infer_run
    python -m lmsys_arena score --run xgb-sample     # score_run

A family (:mod:`lmsys_arena.families`) trains and predicts one fold; the run folder's layout is
:mod:`lmsys_arena.runs`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena import dist, families, golden
from lmsys_arena.config import config_hash
from lmsys_arena.data import CLASS_NAMES, WEIGHT_COL, Competition, load_extra, load_pseudo, prompt_key
from lmsys_arena.deadline import deadline_passed
from lmsys_arena.folds import read_folds
from lmsys_arena.io import Busy, read_json, write_csv, write_json
from lmsys_arena.metrics import accuracy, log_loss, softmax, validate_submission
from lmsys_arena.predictions import PROB_COLS, frame_from_logits
from lmsys_arena.run_inputs import RunSpec, run_config
from lmsys_arena.runs import Run, config_diff
from lmsys_arena.teacher import resolve_distill_teacher

log = logging.getLogger(__name__)


def train_run(
    cfg: dict,
    run_dir: str | Path,
    spec: RunSpec,
    *,
    only_folds: list[int] | None = None,
    fresh: bool = False,
    on_fold_end: Callable[[int, float], None] | None = None,
) -> dict:
    """Train one model per fold (resuming finished folds), write OOF predictions and metrics.

    ``on_fold_end(fold, fold_logloss)`` is called after each fold (Optuna reports and prunes there).
    Returns the metrics dict.
    """
    run = Run(run_dir)
    fam = families.of(cfg).load()  # a missing extra (torch for llm) fails before anything is written
    dist.init()  # under torchrun: the process group, so that the ranks wait for rank 0 to prepare the run
    cfg = resolve_distill_teacher(cfg, spec.data)
    _preflight(fam, cfg)
    inputs = _read_inputs(spec)  # bad data or folds fail before the run folder is touched
    n_folds = int(inputs[1].max()) + 1
    bad = [f for f in only_folds or [] if f < 0 or f >= n_folds]
    if bad:
        raise ValueError(f"--only-folds {bad}: not in the folds file (folds 0..{n_folds - 1})")
    if dist.world_size() > 1:  # the ranks must agree on the folds they train: the run is theirs alone
        with run.lock("train") if dist.is_main_process() else contextlib.nullcontext():
            run.prepare(run_config(cfg, spec), fresh, spec)
            with run.logging_to_file():
                return _train_folds(cfg, fam, run, spec, inputs, only_folds, on_fold_end, fold_locks=False)
    # other train commands may share the run (one a GPU, say): each fold is trained by the one holding its lock
    with run.lock("train", while_folds_train=not fresh):
        run.prepare(run_config(cfg, spec), fresh, spec)
    with run.logging_to_file():
        return _train_folds(cfg, fam, run, spec, inputs, only_folds, on_fold_end, fold_locks=True)


def _preflight(fam, cfg: dict) -> None:
    """The family's refusals of what this machine cannot train (a GPU-only option on a CPU, ...), before the run
    folder is written."""
    hook = getattr(fam, "preflight", None)
    if hook:
        hook(cfg)


def _read_inputs(spec: RunSpec):
    """(train rows, their folds, the train-only rows: EXTRA rows then pseudo rows, each with its loss weight)."""
    comp = spec.competition()
    train = comp.train(skip_bad=spec.skip_bad)
    fold_of = read_folds(spec.resolved_folds_file(), train)
    extra = load_extra(spec.extra, train, skip_bad=spec.skip_bad) if spec.extra else train.iloc[:0]
    if spec.extra and spec.extra_weight != 1.0:
        extra[WEIGHT_COL] = float(spec.extra_weight)
    if spec.pseudo:
        known = pd.concat([train, extra], ignore_index=True) if len(extra) else train
        pseudo = load_pseudo(
            spec.pseudo,
            known,
            min_prob=spec.pseudo_min_prob,
            weight=spec.pseudo_weight,
            skip_bad=spec.skip_bad,
        )
        extra = pd.concat([extra, pseudo], ignore_index=True) if len(extra) else pseudo
    return train, fold_of, extra


def _describe_train_only(rows: pd.DataFrame) -> str:
    """``+12 extra, +40 pseudo`` (the train-only rows by source)."""
    counts = rows["source"].value_counts(sort=False) if len(rows) else {}
    return ", ".join(f"+{n} {source}" for source, n in dict(counts).items()) or "+0 extra"


def _train_folds(cfg: dict, fam, run: Run, spec: RunSpec, inputs, only_folds, on_fold_end, fold_locks: bool) -> dict:
    train, fold_of, extra = inputs
    if spec.max_rows and spec.max_rows < len(train):
        keep = np.sort(np.random.default_rng(spec.seed).choice(len(train), spec.max_rows, replace=False))
        train, fold_of = train.iloc[keep].reset_index(drop=True), fold_of.iloc[keep].reset_index(drop=True)
        log.info("row budget: %d of the train rows (seeded sample, same folds; extra rows kept)", spec.max_rows)
    folds = only_folds if only_folds is not None else list(range(int(fold_of.max()) + 1))
    extra_keys = prompt_key(extra) if len(extra) else None
    log.info(
        "run %s: family %s, %d train rows (%s, train-only), folds %s",
        run.name,
        cfg["family"],
        len(train),
        _describe_train_only(extra),
        folds,
    )

    busy = []
    for f in folds:
        with contextlib.ExitStack() as held:
            if fold_locks and not run.fold_done_file(f).exists():
                try:
                    held.enter_context(run.fold_lock(f))
                except Busy:
                    busy.append(f)
                    continue
            if run.fold_done_file(f).exists():  # also when another command finished it while this one waited
                fold_loss = _fold_loss(run.read_fold_frame(f))
                log.info("fold %d: already done (log loss %.5f), skipping", f, fold_loss)
            else:
                fold_loss = _train_fold(cfg, fam, run, spec, (train, fold_of, extra, extra_keys), f)
        if on_fold_end is not None:
            on_fold_end(f, fold_loss)
    if busy:
        log.info("folds %s: being trained by other train commands of this run, left to them", busy)
    return _write_oof(run, fold_locks)


def _train_fold(cfg: dict, fam, run: Run, spec: RunSpec, inputs, f: int) -> float:
    """Train fold ``f``; its valid.parquet (written last) marks it done. Returns its log loss."""
    train, fold_of, extra, extra_keys = inputs
    run.fold_dir(f).mkdir(parents=True, exist_ok=True)
    tr, va = fold_split(train, fold_of, extra, extra_keys, f)
    t0 = time.time()
    logits = fam.fit_fold(cfg, tr, va, run.fold_dir(f), spec.seed + f)
    frame = frame_from_logits(va["id"], logits, fold=f, label=va["label"].to_numpy())
    if dist.is_main_process():
        keep = golden.pick(va)
        rows = va.iloc[keep]
        tol = families.of(cfg).golden_tolerance
        golden.write(run.fold_dir(f), rows, logits[keep], golden.family_features(fam, cfg, rows), tol)
        run.write_fold_frame(f, frame)
    dist.barrier()
    fold_loss = _fold_loss(frame)
    log.info(
        "fold %d: log loss %.5f, accuracy %.4f, %d train / %d valid rows, %.1fs",
        f,
        fold_loss,
        accuracy(frame["label"], frame[PROB_COLS].to_numpy()),
        len(tr),
        len(va),
        time.time() - t0,
    )
    return fold_loss


def _write_oof(run: Run, locked: bool) -> dict:
    """oof.parquet and metrics.json of every done fold of the run (also those another command trained), written
    under the run's lock where other train commands may share the run. Returns the metrics."""
    with run.lock("train", while_folds_train=True) if locked else contextlib.nullcontext():
        done = run.done_folds()
        if not done:
            raise Busy(f"train {run.name}: no fold is done yet and the folds asked for are being trained by other "
                       "commands; nothing is left for this one")  # fmt: skip
        oof = pd.concat([run.read_fold_frame(f) for f in done], ignore_index=True)
        metrics = score_frame(oof)
        if dist.is_main_process():
            run.write_oof(oof)
            run.merge_metrics(metrics)
    log.info("run %s: OOF log loss %.5f over %d rows (folds %s)", run.name, metrics["oof_logloss"], len(oof), done)
    return metrics


def refit_run(cfg: dict, run_dir: str | Path, spec: RunSpec, source_dir: str | Path, *, fresh: bool = False) -> dict:
    """A full-data refit of the fold run ``source_dir``: one model on every train row (+ extra rows), no
    validation fold, in ``run_dir/model/``; the family's ``refit_config`` carries the fold runs' schedule over
    (a GBDT: the folds' mean best round). Refused when the fold run was trained with another config or other
    inputs. Returns what it trained (rows, seconds)."""
    run, source = Run(run_dir), Run(source_dir)
    info = families.of(cfg)
    fam = info.load()
    dist.init()
    cfg = resolve_distill_teacher(cfg, spec.data)
    _preflight(fam, cfg)
    inputs = _read_inputs(spec)
    want = run_config(cfg, spec)
    if not source.exists():
        raise FileNotFoundError(f"{source.path}: no such fold run; train it first (`make train RUN={source.name}`)")
    have = {k: v for k, v in source.read_config().items() if k not in ("config_hash", "provenance")}
    if config_hash(have) != config_hash(want):
        raise RuntimeError(
            f"{source.path} was trained with another config or other input files than this refit asks for "
            f"(diff: {config_diff(have, want)}); refit with the fold run's own MODEL/SET/DATA/EXTRA"
        )
    folds = source.done_folds()
    if not folds:
        raise FileNotFoundError(f"{source.path} has no finished folds to refit from")
    hook = getattr(fam, "refit_config", None)
    refit_cfg = hook(cfg, [source.fold_dir(f) for f in folds]) if hook else cfg
    derived = {"from": source.name, "how": "refit", "config_hash": source.read_config()["config_hash"], "folds": folds}
    full_cfg = {**run_config(refit_cfg, spec), "derived": derived}
    with run.lock("refit") if dist.is_main_process() else contextlib.nullcontext():
        run.prepare(full_cfg, fresh, spec)
        with run.logging_to_file():
            if run.model_done_file.exists():
                log.info("%s: already trained (%s)", run.name, run.model_done_file)
                return read_json(run.model_done_file)
            train, _fold_of, extra = inputs
            rows = pd.concat([train, extra], ignore_index=True)
            log.info(
                "refit %s of %s: one model on %d rows (%d train, %s), no validation fold",
                run.name, source.name, len(rows), len(train), _describe_train_only(extra),
            )  # fmt: skip
            run.model_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            fam.fit_fold(refit_cfg, rows, rows.iloc[:0], run.model_dir, spec.seed)
            done = {"rows": len(rows), "train_rows": len(train), "extra_rows": len(extra),
                    "seconds": round(time.time() - t0, 1)}  # fmt: skip
            if dist.is_main_process():
                write_golden(fam, refit_cfg, run.model_dir, train)
                write_json(run.model_done_file, done)
            dist.barrier()
            log.info("refit %s: trained in %.1fs -> %s", run.name, done["seconds"], run.model_dir)
            return done


def write_golden(fam, cfg: dict, model_dir: Path, rows: pd.DataFrame) -> Path:
    """``golden.parquet`` of a single model: a few of ``rows`` scored by the saved model itself."""
    rows = rows.iloc[golden.pick(rows)].reset_index(drop=True)
    logits = fam.predict(cfg, rows, model_dir)
    tol = families.of(cfg).golden_tolerance
    return golden.write(model_dir, rows, logits, golden.family_features(fam, cfg, rows), tol)


def fold_split(
    train: pd.DataFrame, fold_of: pd.Series, extra: pd.DataFrame, extra_keys: pd.Series | None, fold: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, validation rows) of one fold: the other folds plus the train-only (extra, pseudo) rows
    whose prompt is not in the validation rows (``extra_keys``: ``prompt_key(extra)``, None without them)."""
    is_valid = (fold_of == fold).to_numpy()
    va = train[is_valid].reset_index(drop=True)
    return pd.concat([train[~is_valid], _extra_for_fold(extra, extra_keys, va, fold)], ignore_index=True), va


def _extra_for_fold(extra: pd.DataFrame, extra_keys: pd.Series | None, valid: pd.DataFrame, fold: int) -> pd.DataFrame:
    """Train-only (extra, pseudo) rows for one fold, without those whose prompt is in the fold's validation rows."""
    if extra_keys is None:
        return extra
    leak = extra_keys.isin(set(prompt_key(valid))).to_numpy()
    if leak.any():
        log.info("fold %d: %s rows share a prompt with the validation fold: left out", fold,
                 _describe_train_only(extra[leak]).replace("+", ""))  # fmt: skip
    return extra[~leak]


def _fold_loss(frame: pd.DataFrame) -> float:
    return log_loss(frame["label"], frame[PROB_COLS].to_numpy())


def infer_run(run_dir: str | Path, *, data: str | None = None, submission: str | Path | None = None) -> pd.DataFrame:
    """Fold-averaged test predictions -> ``test.parquet`` and a validated submission CSV."""
    run = Run(run_dir)
    cfg, spec = run.model_config()
    if spec is None:
        raise ValueError(f"{run.path} is a blend: its test predictions come from `make ensemble`")
    with run.lock("infer") if dist.is_main_process() else contextlib.nullcontext(), run.logging_to_file():
        run.remove_temporary_files()
        comp = Competition(Path(data)) if data else spec.competition()
        test = comp.test(skip_bad=spec.skip_bad)
        p = predict_rows(run, cfg, test, f"test rows from {comp.test_csv}")
        frame = frame_from_logits(test["id"], np.log(np.clip(p, 1e-15, 1)))
        if not dist.is_main_process():
            return frame
        run.write_test(frame)
        write_submission(frame, Path(submission) if submission else submission_path(run.name), test["id"])
    return frame


def predict_rows(run: Run, cfg: dict, rows: pd.DataFrame, what: str = "rows") -> np.ndarray:
    """Probabilities ``(n, 3)`` of ``rows`` averaged over the run's models (its folds, or its single model), as
    ``make infer`` scores test.csv; every row must be scored (a passed LMSYS_DEADLINE or non-finite logits are
    an error, nothing is averaged). ``cfg``: the run's model config (``Run.model_config``)."""
    fam = families.of(cfg).load()
    models = run.model_dirs()
    if not models:
        raise FileNotFoundError(f"{run.path} has no trained models: run `make train RUN={run.name}` first")
    log.info(
        "%s: averaging %d model(s) (%s) over %d %s",
        run.name,
        len(models),
        ", ".join(m.name for m in models),
        len(rows),
        what,
    )
    probs = []
    for m in models:
        t0 = time.time()
        if deadline_passed():
            raise RuntimeError(
                f"{run.name}: LMSYS_DEADLINE has passed before {m.name}: nothing written (unset "
                f"it; the time guard with its fallbacks is the Kaggle kernel's, `make kernels`)"
            )
        logits = fam.predict(cfg, rows, m)
        unscored = int((~np.isfinite(np.asarray(logits, dtype=np.float64)).all(axis=1)).sum())
        if unscored:
            raise RuntimeError(
                f"{run.name} {m.name}: {unscored} of {len(rows)} rows not scored (LMSYS_DEADLINE, or "
                f"non-finite logits): nothing written (unset it, or build a kernel: `make kernels`)"
            )
        probs.append(softmax(logits))
        log.info("%s: predicted %d rows in %.1fs", m.name, len(rows), time.time() - t0)
    return np.mean(probs, axis=0)


def submission_path(run_name: str) -> Path:
    return Path("submissions") / f"{run_name}.csv"


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
    per_fold = {
        int(f): {
            "logloss": log_loss(g["label"], g[PROB_COLS].to_numpy()),
            "accuracy": accuracy(g["label"], g[PROB_COLS].to_numpy()),
            "rows": len(g),
        }
        for f, g in oof.groupby("fold")
    }
    return {"oof_logloss": log_loss(y, p), "oof_accuracy": accuracy(y, p), "rows": len(oof), "folds": per_fold}


def score_run(run_dir: str | Path) -> dict:
    run = Run(run_dir).oof_source()  # a derived run has no validation rows: its fold run's OOF
    if not run.oof_file.exists():
        raise FileNotFoundError(f"{run.oof_file} not found: run `make train RUN={run.name}` first")
    metrics = score_frame(run.read_oof())
    run.merge_metrics(metrics)
    return metrics


def format_metrics(name: str, metrics: dict) -> str:
    lines = [
        f"{name}: OOF log loss {metrics['oof_logloss']:.5f}, accuracy {metrics['oof_accuracy']:.4f}, "
        f"{metrics['rows']} rows"
    ]
    for f, m in sorted(metrics["folds"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"  fold {f}: log loss {m['logloss']:.5f}  accuracy {m['accuracy']:.4f}  rows {m['rows']}")
    return "\n".join(lines)
