"""The commands' handlers: ``dispatch(args)`` runs the one the parser picked. Each is a thin call into the
module doing the work, imported on use so that ``--help`` and small commands start fast."""

from __future__ import annotations

from pathlib import Path

from lmsys_arena.cli.resolve import load_model_family, resolve_config, resolve_data


class UsageError(ValueError):
    """A command line that cannot work (exit code 2)."""


def dispatch(args) -> None:
    handler = HANDLERS.get(args.command, _kernels)  # the rest: kernels, kernel-datasets, check-kernels, push, submit
    handler(args)


# ---------------------------------------------------------------- data and training


def _folds(args) -> None:
    from lmsys_arena.data import Competition, DataError
    from lmsys_arena.folds import folds_path, make_folds, write_folds

    comp = Competition(Path(resolve_data(args)))
    train = comp.train(skip_bad=args.skip_bad)
    try:
        folds = make_folds(train, k=args.folds, seed=args.seed)
    except ValueError as e:
        raise DataError(f"{comp.train_csv}: {e}") from None
    write_folds(folds, folds_path(comp.name), labels=train["label"])


def _train(args) -> None:
    from lmsys_arena.run_inputs import RunSpec
    from lmsys_arena.runner import format_metrics, train_run
    from lmsys_arena.runs import RUNS_DIR, default_run_name

    cfg = resolve_config(args)
    data = resolve_data(args)
    spec = RunSpec(
        data=data,
        extra=args.extra,
        seed=args.seed,
        skip_bad=args.skip_bad,
        extra_weight=args.extra_weight,
        pseudo=args.pseudo,
        pseudo_weight=args.pseudo_weight,
        pseudo_min_prob=args.pseudo_min_prob,
    )
    _check_train_only_args(args)
    only = _folds_list(args.only_folds)
    run = args.run or default_run_name(args.model, data)
    if args.full:
        _refit(args, cfg, spec, run, only)
        return
    metrics = train_run(cfg, RUNS_DIR / run, spec, only_folds=only, fresh=args.fresh)
    print(format_metrics(run, metrics))


def _refit(args, cfg: dict, spec, run: str, only: list[int] | None) -> None:
    """``train --full``: one model on every row, with the schedule of the fold run ``run``."""
    from lmsys_arena.runner import refit_run
    from lmsys_arena.runs import RUNS_DIR

    if only:
        raise UsageError("--full trains one model on every row: it takes no --only-folds")
    done = refit_run(cfg, RUNS_DIR / f"{run}-full", spec, RUNS_DIR / run, fresh=args.fresh)
    print(f"{run}-full: refit of {run} on {done['rows']} rows in {done['seconds']}s")


def _judge(args) -> None:
    from lmsys_arena.llm.judge import OVERRIDES
    from lmsys_arena.run_inputs import RunSpec
    from lmsys_arena.runner import format_metrics, train_run
    from lmsys_arena.runs import RUNS_DIR, default_run_name

    # the judge's settings first, so that the user's --set still wins
    args.set = [f"{k}={'null' if v is None else str(v).lower()}" for k, v in OVERRIDES.items()] + args.set
    if load_model_family(args.model) != "llm":
        raise UsageError(f"judge takes an llm config (family: llm), got --model {args.model}")
    cfg = resolve_config(args)
    data = resolve_data(args)
    model = Path(args.model).stem if args.model.endswith((".yaml", ".yml")) else Path(args.model).name
    run = args.run or default_run_name(f"{model}-judge", data)
    spec = RunSpec(data=data, seed=args.seed, skip_bad=args.skip_bad)
    metrics = train_run(cfg, RUNS_DIR / run, spec, only_folds=_folds_list(args.only_folds), fresh=args.fresh)
    print(format_metrics(run, metrics))


def _check_train_only_args(args) -> None:
    if args.extra_weight < 0 or args.pseudo_weight < 0:
        raise UsageError(
            f"--extra-weight and --pseudo-weight must be >= 0, got {args.extra_weight}, {args.pseudo_weight}"
        )
    if not 0 <= args.pseudo_min_prob <= 1:
        raise UsageError(f"--pseudo-min-prob must be in [0, 1], got {args.pseudo_min_prob}")
    if not args.pseudo and (args.pseudo_weight != 1.0 or args.pseudo_min_prob):
        raise UsageError("--pseudo-weight / --pseudo-min-prob need --pseudo (PSEUDO=<csv>)")
    if not args.extra and args.extra_weight != 1.0:
        raise UsageError("--extra-weight needs --extra (EXTRA=<csv>)")


def _holdout(args) -> None:
    from lmsys_arena.holdout import split_paths, write_split

    out = write_split(Path(resolve_data(args)), args.extra and Path(args.extra), args.frac, args.seed, args.out)
    labels, extra = split_paths(out)
    print(f"DATA={out}  LABELS={labels}" + (f"  EXTRA={extra}" if args.extra else ""))


def _folds_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(f) for f in text.split(",")]
    except ValueError:
        raise UsageError(f"--only-folds expects comma-separated fold numbers, got {text!r}") from None


# ---------------------------------------------------------------- runs made from runs


def _merge(args) -> None:
    from lmsys_arena import derive
    from lmsys_arena.runs import RUNS_DIR

    out = derive.merge_run(RUNS_DIR / args.run, args.name, args.method, args.rank, fresh=args.fresh, heads=args.heads)
    print(out.path)


def _export(args) -> None:
    from lmsys_arena import derive
    from lmsys_arena.runs import RUNS_DIR

    out = derive.export_run(RUNS_DIR / args.run, args.name, args.dtype, args.quant, fresh=args.fresh)
    print(out.path)


# ---------------------------------------------------------------- predictions and their checks


def _infer(args) -> None:
    from lmsys_arena.runner import infer_run
    from lmsys_arena.runs import RUNS_DIR

    infer_run(RUNS_DIR / args.run, data=args.data, submission=args.sub)


def _pseudo(args) -> None:
    from lmsys_arena import teacher

    teacher.cli(args)


def _score(args) -> None:
    from lmsys_arena.runner import format_metrics, score_run
    from lmsys_arena.runs import RUNS_DIR, Run

    if args.labels:
        from lmsys_arena.holdout import score_test

        m = score_test(Run(RUNS_DIR / args.run), args.labels)
        print(f"{args.run}: held-out log loss {m['logloss']:.5f}, accuracy {m['accuracy']:.4f}, {m['rows']} rows")
        return
    print(format_metrics(args.run, score_run(RUNS_DIR / args.run)))


def _report(args) -> None:
    from lmsys_arena import report

    report.cli(args)


def _check(args) -> None:
    from lmsys_arena.data import Competition
    from lmsys_arena.metrics import read_submission, validate_submission

    comp = Competition(Path(resolve_data(args)))
    sub = read_submission(args.sub)
    validate_submission(sub, comp.test(skip_bad=args.skip_bad, check_sample="raise")["id"], name=args.sub)
    print(f"{args.sub}: valid submission ({len(sub)} rows) for {comp.test_csv}")


# ---------------------------------------------------------------- configs, tuning, blends, deployment


def _config(args) -> None:
    from lmsys_arena.config import to_yaml
    from lmsys_arena.io import write_text

    if args.reference:
        from lmsys_arena.reference import markdown

        text = markdown()
    elif args.model:
        text = to_yaml(resolve_config(args))
    else:
        raise UsageError("config needs a MODEL (a config name or a YAML path), or --reference")
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")


def _tune(args) -> None:
    """tune and best."""
    from lmsys_arena import tune

    tune.cli(args, resolve_config=resolve_config, resolve_data=resolve_data)


def _ensemble(args) -> None:
    from lmsys_arena import ensemble

    ensemble.cli(args)


def _serve(args) -> None:
    from lmsys_arena.runs import RUNS_DIR
    from lmsys_arena.serve import serve

    run_dir = Path(args.run) if "/" in args.run else RUNS_DIR / args.run  # a folder's path, or a name
    serve(run_dir, host=args.host, port=args.port)


def _kernels(args) -> None:
    from lmsys_arena import kernels

    kernels.cli(args)


HANDLERS = {
    "folds": _folds,
    "holdout": _holdout,
    "train": _train,
    "judge": _judge,
    "merge": _merge,
    "export": _export,
    "infer": _infer,
    "pseudo": _pseudo,
    "score": _score,
    "report": _report,
    "check": _check,
    "config": _config,
    "tune": _tune,
    "best": _tune,
    "ensemble": _ensemble,
    "serve": _serve,
}
