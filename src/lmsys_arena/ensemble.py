"""Blend finished runs: simplex weights (+ an optional temperature) fitted on their OOF predictions.

    make ensemble RUNS="xgb lgbm gemma2-9b" NAME=blend
    python -m lmsys_arena ensemble --runs xgb lgbm --name blend [--space prob] [--no-temperature] [--common-rows]

Each member contributes its log-probabilities (``log_softmax`` of the run's ``logit_*`` columns).
``space=logprob`` (default) blends ``T * sum_i w_i log p_i`` (a weighted geometric mean, sharpened or
softened by the temperature ``T``); ``space=prob`` blends ``sum_i w_i p_i`` and then applies ``T``.
Weights live on the simplex (``w_i >= 0``, ``sum w_i = 1``, scipy SLSQP). The same weights are then
applied to the members' ``test.parquet``.

The blend is a run like any other: ``runs/<name>/`` gets ``config.json`` (family ``blend``, members,
weights, temperature, space), ``oof.parquet``, ``test.parquet`` and ``metrics.json`` (``oof_logloss``),
and ``submissions/<name>.csv`` is validated and written. So it can be scored (``make score``), blended
again, or put into a Kaggle kernel (``make kernels RUNS=<name>``).

Members must cover the same OOF rows with the same folds. A run trained on some folds only (e.g. an
LLM run with ``ONLY_FOLDS=0``) is refused unless ``--common-rows`` is given: then the weights are fitted
on the rows every member covers (logged, and recorded in ``config.json``), which is the honest choice
when an expensive model was validated on one fold only.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.metrics import log_loss, log_softmax, softmax
from lmsys_arena.predictions import frame_from_logprobs, frame_logprobs
from lmsys_arena.runs import Run

log = logging.getLogger(__name__)

SPACES = ("logprob", "prob")
T_BOUNDS = (0.2, 5.0)


@dataclass
class Blend:
    """What a blend run stores in ``config.json`` (and what the Kaggle kernel re-applies)."""

    name: str
    members: list[str]
    weights: list[float]
    temperature: float = 1.0
    space: str = "logprob"
    common_rows: bool = False
    family: str = "blend"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: dict) -> Blend:
        keys = {"name", "members", "weights", "temperature", "space", "common_rows", "family", "extra"}
        return cls(**{k: v for k, v in cfg.items() if k in keys})


# --------------------------------------------------------------------------- blending math


def combine(logps: list[np.ndarray], weights, temperature: float = 1.0, space: str = "logprob") -> np.ndarray:
    """Blend the members' log-probabilities (each (n, 3)); returns normalised log-probabilities.

    A member with NaN on a row (an LLM that ran out of time there) drops out of that row's blend and
    the other weights are renormalised; a row no member covers stays NaN.
    """
    if space not in SPACES:
        raise ValueError(f"unknown blend space {space!r}; use one of {SPACES}")
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(logps):
        raise ValueError(f"{len(w)} weights for {len(logps)} members")
    lp = np.stack([np.asarray(x, dtype=np.float64) for x in logps])  # (k, n, 3)
    ok = np.isfinite(lp).all(axis=2)  # (k, n)
    if ok.all():
        wr = np.broadcast_to(w[:, None], ok.shape)
    else:
        wr = w[:, None] * ok
        tot = wr.sum(axis=0)
        wr = np.divide(wr, tot, out=np.zeros_like(wr), where=tot > 0) * w.sum()
        lp = np.where(ok[:, :, None], lp, 0.0)
    if space == "logprob":
        z = np.einsum("kn,knc->nc", wr, lp)
    else:
        z = np.log(np.clip(np.einsum("kn,knc->nc", wr, np.exp(lp)), 1e-300, None))
    out = log_softmax(temperature * z)
    out[~ok.any(axis=0)] = np.nan
    return out


def fold_average_logprobs(per_fold_logits: list[np.ndarray]) -> np.ndarray:
    """Average the folds' probabilities row by row over the folds that reached the row (NaN: none did)."""
    p = np.stack([softmax(np.nan_to_num(np.asarray(x, dtype=np.float64))) for x in per_fold_logits])
    ok = np.stack([np.isfinite(np.asarray(x, dtype=np.float64)).all(axis=1) for x in per_fold_logits])
    n = ok.sum(axis=0)
    mean = np.einsum("fn,fnc->nc", ok.astype(np.float64), p) / np.maximum(n, 1)[:, None]
    out = np.log(np.clip(mean, 1e-15, 1.0))
    out[n == 0] = np.nan
    return out


def evaluate_tree(name: str, runs: dict, preds: dict[str, np.ndarray]) -> np.ndarray:
    """Log-probabilities of run ``name``: a leaf's predictions, or its blend's members recursively."""
    info = runs[name]
    if "members" not in info:  # a trained run
        return preds[name]
    lps = [evaluate_tree(m, runs, preds) for m in info["members"]]
    return combine(lps, info["weights"], info.get("temperature", 1.0), info.get("space", "logprob"))


def fit_blend(
    logps: list[np.ndarray], labels, *, space: str = "logprob", temperature: bool = True
) -> tuple[np.ndarray, float]:
    """Simplex weights (and a temperature in ``T_BOUNDS``) minimising the OOF log loss."""
    from scipy.optimize import minimize

    y = np.asarray(labels).astype(np.int64)
    k = len(logps)
    rows = np.arange(len(y))

    def loss(x: np.ndarray) -> float:
        t = x[k] if temperature else 1.0
        return float(-combine(logps, x[:k], t, space)[rows, y].mean())

    x0 = np.r_[np.full(k, 1.0 / k), [1.0] if temperature else []]
    bounds = [(0.0, 1.0)] * k + ([T_BOUNDS] if temperature else [])
    cons = [{"type": "eq", "fun": lambda x: x[:k].sum() - 1.0}]
    best = None
    starts = [x0] + [np.r_[np.eye(k)[i], x0[k:]] for i in range(k)] if k > 1 else [x0]
    for s in starts:  # a few starts: SLSQP is local, the loss is smooth but not always convex in (w, T)
        res = minimize(
            loss, s, method="SLSQP", bounds=bounds, constraints=cons, options={"maxiter": 500, "ftol": 1e-12}
        )
        if best is None or res.fun < best.fun:
            best = res
    w = np.clip(best.x[:k], 0, None)
    w = w / w.sum()
    return w, float(best.x[k]) if temperature else 1.0


# --------------------------------------------------------------------------- run loading / alignment


def align_oof(frames: dict[str, pd.DataFrame], *, common_rows: bool = False) -> pd.DataFrame:
    """One frame of ``id, fold, label`` on the rows all members share, in the first member's order.

    Refuses members with different row sets (unless ``common_rows``) or different fold assignments.
    """
    names = list(frames)
    first = frames[names[0]]
    ids = pd.Index(first["id"])
    for n in names[1:]:
        other = pd.Index(frames[n]["id"])
        if set(other) != set(ids):
            msg = (
                f"runs {names[0]!r} and {n!r} cover different OOF rows: {len(ids)} vs {len(other)} rows, "
                f"{len(ids.intersection(other))} in common (folds {_folds(first)} vs {_folds(frames[n])})"
            )
            if not common_rows:
                raise ValueError(
                    msg + "; retrain on the same folds, or pass --common-rows to fit the blend on the shared rows only"
                )
            log.warning("%s: --common-rows, keeping the shared rows", msg)
        ids = ids.intersection(other, sort=False)
    if len(ids) == 0:
        raise ValueError(f"runs {names} share no OOF rows")
    base = first.set_index("id").loc[ids, ["fold", "label"]]
    for n in names[1:]:
        other = frames[n].set_index("id").loc[ids, ["fold", "label"]]
        for col in ("fold", "label"):
            diff = base[col].to_numpy() != other[col].to_numpy()
            if diff.any():
                i = int(np.argmax(diff))
                raise ValueError(
                    f"runs {names[0]!r} and {n!r} disagree on {col} for id={ids[i]!r} "
                    f"({base[col].iloc[i]} vs {other[col].iloc[i]}): they were trained on different "
                    f"{'folds files' if col == 'fold' else 'data'}; refit them on the same folds"
                )
    return base.reset_index()


def _folds(frame: pd.DataFrame) -> list[int]:
    return sorted(int(f) for f in frame["fold"].unique())


def align_test(frames: dict[str, pd.DataFrame]) -> pd.Index:
    names = list(frames)
    ids = pd.Index(frames[names[0]]["id"])
    for n in names[1:]:
        other = pd.Index(frames[n]["id"])
        if set(other) != set(ids):
            raise ValueError(
                f"test predictions of {names[0]!r} and {n!r} cover different ids "
                f"({len(ids)} vs {len(other)}, {len(ids.intersection(other))} in common): "
                f"re-run `make infer` for both on the same test.csv"
            )
    return ids


def _stack(frames: dict[str, pd.DataFrame], ids: pd.Index) -> list[np.ndarray]:
    return [frame_logprobs(f.set_index("id").loc[ids].reset_index()) for f in frames.values()]


# --------------------------------------------------------------------------- the command


def ensemble_runs(
    runs: list[str],
    name: str,
    *,
    space: str = "logprob",
    temperature: bool = True,
    common_rows: bool = False,
    oof_only: bool = False,
    fit_labels: str | Path | None = None,
    runs_root: str | Path = "runs",
    submissions: str | Path = "submissions",
) -> dict:
    """Fit the blend, write ``runs/<name>/`` and ``submissions/<name>.csv``; returns the metrics dict.

    ``oof_only``: fit and score on OOF only (members without ``test.parquet`` yet); no test predictions and no
    submission are written, the weights in ``config.json`` still serve ``make kernels``. ``fit_labels``: fit the
    weights on the members' test predictions of the rows of that labels file (:mod:`lmsys_arena.holdout`)
    instead of on OOF; the OOF blend is still written, with those weights."""
    from lmsys_arena.runner import score_frame, write_submission

    runs_root = Path(runs_root)
    if len(set(runs)) != len(runs):
        raise ValueError(f"a run is listed twice: {runs}")
    if name in runs:
        raise ValueError(f"the blend name {name!r} is also a member; pick another --name")
    if fit_labels and oof_only:
        raise ValueError("--fit-labels fits on the members' test predictions: drop --oof-only")
    oofs = {r: Run(runs_root / r).read_oof(partial=True) for r in runs}
    tests = {} if oof_only else {r: Run(runs_root / r).read_test() for r in runs}
    base = align_oof(oofs, common_rows=common_rows)
    y = base["label"].to_numpy()
    oof_lps = _stack(oofs, pd.Index(base["id"]))
    member_loss = {r: log_loss(y, np.exp(lp)) for r, lp in zip(runs, oof_lps)}

    fit_lps, fit_y, holdout = oof_lps, y, None
    if fit_labels:
        from lmsys_arena.holdout import labelled_rows, read_labels

        test_ids = align_test(tests)
        pos, fit_y = labelled_rows(test_ids, read_labels(fit_labels), f"blend {name}")
        fit_lps = [lp[pos] for lp in _stack(tests, test_ids)]
        holdout = {r: log_loss(fit_y, np.exp(lp)) for r, lp in zip(runs, fit_lps)}
    if len(runs) == 1 and not temperature:
        weights, t = np.ones(1), 1.0
    else:
        weights, t = fit_blend(fit_lps, fit_y, space=space, temperature=temperature)
    blend = Blend(
        name=name,
        members=list(runs),
        weights=[float(w) for w in weights],
        temperature=t,
        space=space,
        common_rows=common_rows,
    )
    oof_lp = combine(oof_lps, weights, t, space)
    oof = frame_from_logprobs(base["id"], oof_lp, fold=base["fold"].to_numpy(), label=y)
    metrics = score_frame(oof)
    metrics.update(
        {
            "members": member_loss,
            "weights": dict(zip(runs, blend.weights)),
            "temperature": t,
            "best_member_logloss": min(member_loss.values()),
        }
    )
    if holdout is not None:
        metrics["holdout"] = {
            "labels": str(fit_labels),
            "rows": len(fit_y),
            "logloss": log_loss(fit_y, np.exp(combine(fit_lps, weights, t, space))),
            "members": holdout,
        }

    test = None
    if not oof_only:
        test_ids = align_test(tests)
        test = frame_from_logprobs(test_ids, combine(_stack(tests, test_ids), weights, t, space))

    run = Run(runs_root / name)
    if run.path.exists():
        run.remove_temporary_files()
    if oof_only and run.test_file.exists():
        run.test_file.unlink()  # stale: it belonged to other weights
    cfg = {
        **asdict(blend),
        "extra": {
            "oof_rows": len(oof),
            "member_oof_rows": {r: len(f) for r, f in oofs.items()},
            "test_rows": None if test is None else len(test),
            "oof_only": oof_only,
            "fit_labels": None if fit_labels is None else str(fit_labels),
        },
    }
    run.write_blend_config(cfg)
    run.write_oof(oof)
    run.write_metrics(metrics)
    if test is None:
        log.warning("--oof-only: no test predictions and no submission for %s", name)
        return metrics
    run.write_test(test)
    data = Run(runs_root / runs[0]).data_dir()
    if data is not None:
        from lmsys_arena.data import Competition

        comp_test = Competition(Path(data)).test()
        write_submission(test, Path(submissions) / f"{name}.csv", comp_test["id"])
    else:
        write_submission(test, Path(submissions) / f"{name}.csv", test["id"])
    return metrics


def format_table(name: str, metrics: dict) -> str:
    lines = [f"{'run':<28}{'OOF log loss':>14}{'weight':>9}"]
    for r, loss in metrics["members"].items():
        lines.append(f"{r:<28}{loss:>14.5f}{metrics['weights'][r]:>9.3f}")
    gain = metrics["best_member_logloss"] - metrics["oof_logloss"]
    lines.append(
        f"{name + ' (T={:.3f})'.format(metrics['temperature']):<28}{metrics['oof_logloss']:>14.5f}"
        f"{'':>9}  ({gain:+.5f} vs best member, {metrics['rows']} rows)"
    )
    if ho := metrics.get("holdout"):
        members = ", ".join(f"{r} {v:.5f}" for r, v in ho["members"].items())
        lines.append(
            f"weights fit on {ho['rows']} held-out rows ({ho['labels']}): blend {ho['logloss']:.5f}; {members}"
        )
    return "\n".join(lines)


def cli(args: argparse.Namespace) -> None:
    metrics = ensemble_runs(
        args.runs,
        args.name,
        space=getattr(args, "space", "logprob"),
        temperature=not args.no_temperature,
        common_rows=getattr(args, "common_rows", False),
        oof_only=getattr(args, "oof_only", False),
        fit_labels=getattr(args, "fit_labels", None),
    )
    print(format_table(args.name, metrics))
