"""One entry point: ``python -m lmsys_arena <command>`` (the Makefile calls this).

    python -m lmsys_arena folds  --data input/sample --folds 5 --seed 42
    python -m lmsys_arena train  --model xgb --run xgb [--extra extra.csv] [--set params.max_depth=8]
    python -m lmsys_arena infer  --run xgb
    python -m lmsys_arena score  --run xgb
    python -m lmsys_arena check  --sub submissions/xgb.csv [--data input/sample]
    python -m lmsys_arena tune   --model xgb --trials 40 [--storage URL] [--study NAME] [--workers 2]
    python -m lmsys_arena best   --study xgb
    python -m lmsys_arena ensemble --runs xgb lgbm --name blend
    python -m lmsys_arena kernels --runs blend ; kernel-datasets ; check-kernels ; push
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("lmsys_arena")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="folder with train.csv, test.csv, sample_submission.csv "
                   "(default: input/lmsys-chatbot-arena if present, else input/sample)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad rows (counted and reported) instead of failing")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="xgb", help="config name in configs/ or a path to a YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (dotted key)")
    p.add_argument("--params", default=None, help="params file of overrides, or 'best' for studies/<study>.best.yaml")
    p.add_argument("--study", default=None, help="study name for --params best (default: the model name)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lmsys_arena", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log-level", default="INFO")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("folds", help="write folds/<data-name>.csv (id, fold)")
    _data_args(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)

    p = sub.add_parser("train", help="train one model per fold; writes runs/<run>/")
    _data_args(p)
    _model_args(p)
    p.add_argument("--run", default=None, help="run name (default: the model name)")
    p.add_argument("--extra", default=None, help="CSV of external train-only rows (same columns as train.csv)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--only-folds", default=None, help="comma-separated folds to train, e.g. 0 or 0,1")
    p.add_argument("--fresh", action="store_true", help="delete runs/<run>/ first instead of resuming")

    p = sub.add_parser("infer", help="fold-averaged test predictions and submissions/<run>.csv")
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None, help="folder with test.csv (default: the run's data)")
    p.add_argument("--sub", default=None, help="submission path (default: submissions/<run>.csv)")

    p = sub.add_parser("score", help="per-fold and overall OOF log loss and accuracy -> runs/<run>/metrics.json")
    p.add_argument("--run", required=True)

    p = sub.add_parser("check", help="validate a submission CSV against the test ids")
    p.add_argument("--sub", required=True)
    _data_args(p)

    p = sub.add_parser("tune", help="create or resume an Optuna study")
    _data_args(p)
    _model_args(p)
    p.add_argument("--extra", default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--storage", default=None, help="SQLAlchemy URL (default sqlite:///studies/<study>.db)")
    p.add_argument("--workers", type=int, default=1)

    p = sub.add_parser("best", help="write studies/<study>.best.yaml, print the summary, save plots")
    p.add_argument("--study", required=True)
    p.add_argument("--storage", default=None)

    p = sub.add_parser("ensemble", help="fit simplex blend weights on OOF; apply to test; write a run + submission")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--name", default="blend")
    p.add_argument("--space", choices=["logprob", "prob"], default="logprob",
                   help="blend log-probabilities (weighted geometric mean, default) or probabilities")
    p.add_argument("--no-temperature", action="store_true", help="do not fit a temperature")
    p.add_argument("--common-rows", action="store_true",
                   help="blend on the OOF rows all runs share (e.g. an LLM run trained on fold 0 only)")
    p.add_argument("--oof-only", action="store_true",
                   help="fit and score on OOF only (members without test.parquet yet); no submission")

    p = sub.add_parser("kernels", help="build kernels/<name>/ for the given runs (one kernel per run)")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--name", default=None, help="kernel name (one run only; default: the run name)")
    p.add_argument("--budget-hours", type=float, default=8.5, help="LLM time guard from kernel start")
    p.add_argument("--model-source", action="append", default=[], metavar="RUN=OWNER/MODEL/FRAMEWORK/VARIATION/VER",
                   help="Kaggle model handle for an LLM run's backbone")
    p.add_argument("--llm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every LLM run in the kernel (e.g. 8-bit weights)")
    p.add_argument("--fallback", default=None, help="GBDT run for rows the LLM does not reach in time")
    p.add_argument("--public", action="store_true")
    p.add_argument("--machine-shape", default="NvidiaTeslaT4", help="Kaggle accelerator (NvidiaTeslaT4 = T4 x2)")
    p = sub.add_parser("kernel-datasets", help="build the code+wheels and artefacts dataset folders")
    p.add_argument("--names", nargs="*", default=None, help="kernels to package (default: all in kernels/)")
    p.add_argument("--wheels", choices=["full", "minimal"], default="full",
                   help="full: package + dependency wheels for Kaggle; minimal: the package wheel only")
    p = sub.add_parser("check-kernels", help="validate every kernel offline, incl. a local simulated run")
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--data", default=None, help="competition folder for the simulation (default: input/sample "
                   "unless input/lmsys-chatbot-arena exists)")
    p.add_argument("--no-sim", action="store_true", help="skip the simulated run")
    p.add_argument("--no-wheel-check", action="store_true", help="skip the empty-venv offline install")
    p = sub.add_parser("push", help="kaggle datasets version/create + kaggle kernels push")
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--message", default=None, help="dataset version notes")
    return ap


def _resolve_data(args) -> str:
    from lmsys_arena.runner import default_data_dir

    return Path(args.data).as_posix() if args.data else default_data_dir().as_posix()


def _resolve_config(args) -> dict:
    from lmsys_arena.config import load_config, load_params_file, parse_set_args

    overrides = {}
    if args.params:
        path = args.params
        if path == "best":
            path = Path("studies") / f"{args.study or Path(args.model).stem}.best.yaml"
            if not path.exists():
                raise SystemExit(f"{path} not found: run `make best STUDY={path.name[:-10]}` first")
        overrides.update(load_params_file(path))
        log.info("params from %s: %s", path, overrides)
    overrides.update(parse_set_args(args.set))
    return load_config(args.model, overrides)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from lmsys_arena.io import setup_logging

    setup_logging(args.log_level)
    try:
        _dispatch(args)
    except Exception as e:  # clear one-line errors for users; tracebacks with --log-level DEBUG
        from lmsys_arena.data import DataError
        from lmsys_arena.metrics import SubmissionError

        if isinstance(e, (DataError, SubmissionError, OSError, ValueError, KeyError, RuntimeError)) \
                and args.log_level.upper() != "DEBUG":
            log.error("%s: %s (--log-level DEBUG shows the traceback)", type(e).__name__, e)
            sys.exit(2)
        raise


def _dispatch(args) -> None:
    cmd = args.command
    if cmd == "folds":
        from lmsys_arena.data import Competition
        from lmsys_arena.folds import folds_path, make_folds, write_folds

        comp = Competition(Path(_resolve_data(args)))
        train = comp.train(skip_bad=args.skip_bad)
        write_folds(make_folds(train, k=args.folds, seed=args.seed), folds_path(comp.name), labels=train["label"])
    elif cmd == "train":
        from lmsys_arena.runner import RunSpec, format_metrics, train_run

        cfg = _resolve_config(args)
        spec = RunSpec(data=_resolve_data(args), extra=args.extra, seed=args.seed, skip_bad=args.skip_bad)
        only = [int(f) for f in args.only_folds.split(",")] if args.only_folds else None
        run = args.run or cfg["name"]
        metrics = train_run(cfg, Path("runs") / run, spec, only_folds=only, fresh=args.fresh)
        print(format_metrics(run, metrics))
    elif cmd == "infer":
        from lmsys_arena.runner import infer_run

        infer_run(Path("runs") / args.run, data=args.data, submission=args.sub)
    elif cmd == "score":
        from lmsys_arena.runner import format_metrics, score_run

        print(format_metrics(args.run, score_run(Path("runs") / args.run)))
    elif cmd == "check":
        import pandas as pd

        from lmsys_arena.data import Competition
        from lmsys_arena.metrics import validate_submission

        comp = Competition(Path(_resolve_data(args)))
        sub = pd.read_csv(args.sub, dtype={"id": str})
        validate_submission(sub, comp.test(skip_bad=args.skip_bad)["id"], name=args.sub)
        print(f"{args.sub}: valid submission ({len(sub)} rows) for {comp.test_csv}")
    elif cmd in ("tune", "best"):
        from lmsys_arena import tune

        tune.cli(args, resolve_config=_resolve_config, resolve_data=_resolve_data)
    elif cmd == "ensemble":
        from lmsys_arena import ensemble

        ensemble.cli(args)
    elif cmd in ("kernels", "kernel-datasets", "check-kernels", "push"):
        from lmsys_arena import kernels

        kernels.cli(args)
    else:  # pragma: no cover - argparse guards this
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
