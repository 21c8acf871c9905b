"""One entry point: ``python -m lmsys_arena <command>`` (the Makefile calls this).

    python -m lmsys_arena folds  --data input/sample --folds 5 --seed 42
    python -m lmsys_arena train  --model xgb [--run NAME] [--extra extra.csv] [--set params.max_depth=8]
    python -m lmsys_arena train  --model xgb --full  # one model on all rows -> runs/<run>-full/
    python -m lmsys_arena judge  --model gemma3-270m  # the untrained LLM as a judge -> runs/gemma3-270m-judge/
    python -m lmsys_arena merge  --run gemma3-270m    # fold adapters -> one (runs/gemma3-270m-merged/)
    python -m lmsys_arena export --run gemma3-270m-merged [--quant 8bit]   # adapter merged into the weights
    python -m lmsys_arena infer  --run xgb-sample
    python -m lmsys_arena pseudo --teacher xgb --pool unlabelled.csv [--out pseudo.csv]   # soft-labelled rows
    python -m lmsys_arena score  --run xgb-sample
    python -m lmsys_arena report --runs xgb-sample tiny-sample [--name cmp]   # runs/<name>/report.html
    python -m lmsys_arena check  --sub submissions/xgb-sample.csv [--data input/sample]
    python -m lmsys_arena config gemma3-270m [--set train.lr=1e-4]    # the resolved config
    python -m lmsys_arena tune   --model xgb --trials 40 [--storage URL] [--study NAME] [--workers 2]
    python -m lmsys_arena best   --study xgb
    python -m lmsys_arena ensemble --runs xgb lgbm --name blend
    python -m lmsys_arena kernels --runs blend [--image original] ; kernel-datasets ; check-kernels ; push
    python -m lmsys_arena submit --name blend [--version 3]
    python -m lmsys_arena serve  --run xgb-sample [--port 7860]   # a local web page scoring one battle

Exit codes: 0 done, 1 failed (e.g. a missing run), 2 usage error, 3 bad data or config.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("lmsys_arena")

EXIT_FAILED, EXIT_USAGE, EXIT_BAD_INPUT = 1, 2, 3


class UsageError(ValueError):
    """A command line that cannot work (exit code 2)."""


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        help="folder with train.csv, test.csv, sample_submission.csv "
        "(default: input/lmsys-chatbot-arena if present, else input/sample)",
    )
    p.add_argument("--skip-bad", action="store_true", help="drop bad rows (counted and reported) instead of failing")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="xgb", help="config name in configs/ or a path to a YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (dotted key)")
    p.add_argument("--params", default=None, help="params file of overrides, or 'best' for studies/<study>.best.yaml")
    p.add_argument("--study", default=None, help="study name for --params best (default: the model name)")


def _train_only_args(p: argparse.ArgumentParser) -> None:
    """The train-only rows besides --extra: their weights and the pseudo-label file (runs.RunSpec)."""
    p.add_argument("--extra-weight", type=float, default=1.0, help="loss weight of the --extra rows")
    p.add_argument("--pseudo", default=None, help="CSV of soft-labelled train-only rows (`make pseudo`)")
    p.add_argument("--pseudo-weight", type=float, default=1.0, help="loss weight of the --pseudo rows")
    p.add_argument(
        "--pseudo-min-prob",
        type=float,
        default=0.0,
        help="keep the pseudo rows whose largest soft target is at least this (0: all)",
    )


def build_parser() -> argparse.ArgumentParser:
    from lmsys_arena.versions import version_line

    common = argparse.ArgumentParser(add_help=False)  # accepted after the subcommand too
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO (default), WARNING, ERROR")
    ap = argparse.ArgumentParser(
        prog="lmsys_arena", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL") or "INFO",
        help="DEBUG (shows tracebacks), INFO (default), WARNING, ERROR; env LOG_LEVEL",
    )
    ap.add_argument("--version", action="version", version=version_line())
    sub = ap.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    p = command("folds", "write folds/<data-name>.csv (id, fold)")
    _data_args(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)

    p = command("train", "train one model per fold; writes runs/<run>/")
    _data_args(p)
    _model_args(p)
    p.add_argument(
        "--run", default=None, help="run name (default: the model name, + -<data folder> off the competition data)"
    )
    p.add_argument("--extra", default=None, help="CSV of external train-only rows (same columns as train.csv)")
    _train_only_args(p)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--only-folds", default=None, help="comma-separated folds to train, e.g. 0 or 0,1")
    p.add_argument("--fresh", action="store_true", help="delete runs/<run>/ first instead of resuming")
    p.add_argument(
        "--full",
        action="store_true",
        help="refit on all train rows (+ extra) with the fold run's schedule, no validation fold: "
        "runs/<fold run>-full/ (the fold run is --run, or the default run name)",
    )

    p = command("judge", "zero-shot baseline: an llm config's untrained backbone as a judge; writes runs/<run>/")
    _data_args(p)
    _model_args(p)
    p.add_argument(
        "--run", default=None, help="run name (default: <model>-judge, + -<data folder> off the competition data)"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--only-folds", default=None, help="comma-separated folds to score, e.g. 0 (default: all)")
    p.add_argument("--fresh", action="store_true", help="delete runs/<run>/ first instead of resuming")

    p = command("merge", "one model from an LLM run's fold models: runs/<run>-merged/")
    p.add_argument("--run", required=True)
    p.add_argument("--name", default=None, help="the merged run's name (default: <run>-merged)")
    p.add_argument(
        "--method",
        choices=["concat", "svd", "mean"],
        default="concat",
        help="concat: the exact mean of the weight updates (rank r x folds); svd: that mean at --rank; "
        "mean: the element-wise mean of the LoRA A and B matrices",
    )
    p.add_argument("--rank", type=int, default=None, help="rank of --method svd (default: the folds' r)")
    p.add_argument("--fresh", action="store_true", help="replace an existing merged run")

    p = command("export", "a single-model LLM run with its adapter merged into the weights: runs/<run>-export/")
    p.add_argument("--run", required=True, help="a merged run or a refit")
    p.add_argument("--name", default=None, help="the exported run's name (default: <run>-export)")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="the saved weights' dtype")
    p.add_argument("--quant", choices=["8bit"], default=None, help="load the weights in 8-bit (bitsandbytes)")
    p.add_argument("--fresh", action="store_true", help="replace an existing exported run")

    p = command("infer", "fold-averaged test predictions and submissions/<run>.csv")
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None, help="folder with test.csv (default: the run's data)")
    p.add_argument("--sub", default=None, help="submission path (default: submissions/<run>.csv)")

    p = command("pseudo", "soft-labelled train-only rows: a pool of battles scored by a teacher run")
    p.add_argument("--teacher", required=True, help="the run that scores the pool (any family, a blend too)")
    p.add_argument("--pool", required=True, help="CSV of battles (train.csv's columns; winner columns ignored)")
    p.add_argument("--out", default=None, help="the CSV written (default: runs/<teacher>/pseudo/<pool stem>.csv)")
    p.add_argument("--skip-bad", action="store_true", help="drop bad pool rows (counted) instead of failing")

    p = command("score", "per-fold and overall OOF log loss and accuracy -> runs/<run>/metrics.json")
    p.add_argument("--run", required=True)

    p = command("report", "one self-contained HTML report comparing runs on their OOF rows (docs/report.md)")
    p.add_argument("--runs", nargs="+", required=True, help="run names in runs/")
    p.add_argument(
        "--name", default=None, help="writes runs/<name>/report.html (default: the run, or report-<run1>-<run2>...)"
    )
    p.add_argument("--data", default=None, help="folder with the runs' train.csv (default: each run's data)")
    p.add_argument("--max-errors", type=int, default=8, help="confident errors shown per run")
    p.add_argument("--shap-rows", type=int, default=400, help="OOF rows sampled for a GBDT run's SHAP values")

    p = command("check", "validate a submission CSV against the test ids")
    p.add_argument("--sub", required=True)
    _data_args(p)

    p = command("config", "print a resolved config (every option, defaults included), or the reference")
    p.add_argument("model", nargs="?", default=None, help="config name in configs/ or a path to a YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (dotted key)")
    p.add_argument("--params", default=None, help="params file of overrides, or 'best'")
    p.add_argument("--study", default=None, help="study name for --params best")
    p.add_argument("--reference", action="store_true", help="the Markdown reference of every option")
    p.add_argument("--out", default=None, help="write to this file instead of printing")

    p = command("tune", "create or resume an Optuna study")
    _data_args(p)
    _model_args(p)
    p.add_argument("--extra", default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--storage", default=None, help="SQLAlchemy URL (default sqlite:///studies/<study>.db)")
    p.add_argument("--workers", type=int, default=1)

    p = command("best", "write studies/<study>.best.yaml, print the summary, save plots")
    p.add_argument("--study", required=True)
    p.add_argument("--storage", default=None)

    p = command("ensemble", "fit simplex blend weights on OOF; apply to test; write a run + submission")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--name", default="blend")
    p.add_argument(
        "--space",
        choices=["logprob", "prob"],
        default="logprob",
        help="blend log-probabilities (weighted geometric mean, default) or probabilities",
    )
    p.add_argument("--no-temperature", action="store_true", help="do not fit a temperature")
    p.add_argument(
        "--common-rows",
        action="store_true",
        help="blend on the OOF rows all runs share (e.g. an LLM run trained on fold 0 only)",
    )
    p.add_argument(
        "--oof-only",
        action="store_true",
        help="fit and score on OOF only (members without test.parquet yet); no submission",
    )

    p = command("kernels", "build kernels/<name>/ for the given runs (one kernel per run)")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--name", default=None, help="kernel name (one run only; default: the run name)")
    p.add_argument("--budget-hours", type=float, default=8.5, help="LLM time guard from kernel start")
    p.add_argument(
        "--model-source",
        action="append",
        default=[],
        metavar="RUN=OWNER/MODEL/FRAMEWORK/VARIATION/VER",
        help="Kaggle model handle for an LLM run's backbone",
    )
    p.add_argument(
        "--llm-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every LLM run in the kernel (e.g. 8-bit weights)",
    )
    p.add_argument("--fallback", default=None, help="GBDT run for rows the LLM does not reach in time")
    p.add_argument("--public", action="store_true")
    p.add_argument("--machine-shape", default="NvidiaTeslaT4", help="Kaggle accelerator (NvidiaTeslaT4 = T4 x2)")
    p.add_argument(
        "--image",
        default=None,
        help="Kaggle image the kernel runs on: latest or original (default $LMSYS_KAGGLE_IMAGE, else latest)",
    )
    p = command("kernel-datasets", "build the code+wheels and artefacts dataset folders")
    p.add_argument("--names", nargs="*", default=None, help="kernels to package (default: all in kernels/)")
    p.add_argument(
        "--wheels",
        choices=["full", "minimal"],
        default="full",
        help="full: package + dependency wheels for Kaggle; minimal: the package wheel only",
    )
    p = command("check-kernels", "validate every kernel offline, incl. a local simulated run")
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument(
        "--data",
        default=None,
        help="competition folder for the simulation (default: input/sample unless input/lmsys-chatbot-arena exists)",
    )
    p.add_argument("--no-sim", action="store_true", help="skip the simulated run")
    p.add_argument("--no-wheel-check", action="store_true", help="skip the empty-venv offline install")
    p = command("push", "kaggle datasets version/create + kaggle kernels push")
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--message", default=None, help="dataset version notes")
    p = command("submit", "submit a pushed kernel version's output to the competition (kaggle CLI)")
    p.add_argument("--name", required=True, help="kernel name (a folder of kernels/)")
    p.add_argument("--version", default=None, help="kernel version (default: the one `push` recorded)")
    p.add_argument("--message", default=None, help="submission description")
    p = command("serve", "a local web page scoring one battle with a run's models (the serve extra; docs/serve.md)")
    p.add_argument("--run", required=True, help="run name in runs/, or a run folder's path")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    return ap


def resolve_data(args) -> str:
    from lmsys_arena.data import default_data_dir

    return Path(args.data).as_posix() if args.data else default_data_dir().as_posix()


def resolve_config(args) -> dict:
    """The config of ``--model`` with ``--params`` and ``--set`` applied (errors name their source)."""
    from lmsys_arena.config import load_config, load_params_file, parse_assignments

    overrides, sources = {}, {}
    if args.params:
        path = args.params
        if path == "best":
            path = Path("studies") / f"{args.study or Path(args.model).stem}.best.yaml"
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: run `make best STUDY={path.name[:-10]}` first")
        params = load_params_file(path)
        overrides.update(params)
        sources.update({k: f"params file {path}" for k in params})
        log.info("params from %s: %s", path, params)
    for item in args.set:
        key_value = parse_assignments([item], flag="--set")
        overrides.update(key_value)
        sources.update({k: f"--set {item}" for k in key_value})
    return load_config(args.model, overrides, sources=sources)


def main(argv: list[str] | None = None) -> None:
    from lmsys_arena.io import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level.upper())
    try:
        _dispatch(args)
    except Exception as e:  # clear one-line errors for users; tracebacks with --log-level DEBUG
        code = _exit_code(e)
        if code is None or args.log_level.upper() == "DEBUG":
            raise
        log.error("%s: %s (--log-level DEBUG shows the traceback)", type(e).__name__, e)
        sys.exit(code)


def _exit_code(e: Exception) -> int | None:
    from lmsys_arena.data import DataError
    from lmsys_arena.metrics import SubmissionError
    from lmsys_arena.schema import ConfigError

    if isinstance(e, UsageError):
        return EXIT_USAGE
    if isinstance(e, (DataError, SubmissionError, ConfigError)):
        return EXIT_BAD_INPUT
    if isinstance(e, (OSError, ValueError, KeyError, RuntimeError, ImportError)):
        return EXIT_FAILED
    return None


def _dispatch(args) -> None:
    cmd = args.command
    if cmd == "folds":
        from lmsys_arena.data import Competition
        from lmsys_arena.folds import folds_path, make_folds, write_folds

        comp = Competition(Path(resolve_data(args)))
        from lmsys_arena.data import DataError

        train = comp.train(skip_bad=args.skip_bad)
        try:
            folds = make_folds(train, k=args.folds, seed=args.seed)
        except ValueError as e:
            raise DataError(f"{comp.train_csv}: {e}") from None
        write_folds(folds, folds_path(comp.name), labels=train["label"])
    elif cmd == "train":
        from lmsys_arena.runner import format_metrics, train_run
        from lmsys_arena.runs import RUNS_DIR, RunSpec, default_run_name

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
            from lmsys_arena.runner import refit_run

            if only:
                raise UsageError("--full trains one model on every row: it takes no --only-folds")
            done = refit_run(cfg, RUNS_DIR / f"{run}-full", spec, RUNS_DIR / run, fresh=args.fresh)
            print(f"{run}-full: refit of {run} on {done['rows']} rows in {done['seconds']}s")
            return
        metrics = train_run(cfg, RUNS_DIR / run, spec, only_folds=only, fresh=args.fresh)
        print(format_metrics(run, metrics))
    elif cmd == "judge":
        from lmsys_arena.llm.judge import OVERRIDES
        from lmsys_arena.runner import format_metrics, train_run
        from lmsys_arena.runs import RUNS_DIR, RunSpec, default_run_name

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
    elif cmd in ("merge", "export"):
        from lmsys_arena import derive
        from lmsys_arena.runs import RUNS_DIR

        if cmd == "merge":
            out = derive.merge_run(RUNS_DIR / args.run, args.name, args.method, args.rank, fresh=args.fresh)
        else:
            out = derive.export_run(RUNS_DIR / args.run, args.name, args.dtype, args.quant, fresh=args.fresh)
        print(out.path)
    elif cmd == "infer":
        from lmsys_arena.runner import infer_run
        from lmsys_arena.runs import RUNS_DIR

        infer_run(RUNS_DIR / args.run, data=args.data, submission=args.sub)
    elif cmd == "pseudo":
        from lmsys_arena import teacher

        teacher.cli(args)
    elif cmd == "score":
        from lmsys_arena.runner import format_metrics, score_run
        from lmsys_arena.runs import RUNS_DIR

        print(format_metrics(args.run, score_run(RUNS_DIR / args.run)))
    elif cmd == "report":
        from lmsys_arena import report

        report.cli(args)
    elif cmd == "check":
        from lmsys_arena.data import Competition
        from lmsys_arena.metrics import read_submission, validate_submission

        comp = Competition(Path(resolve_data(args)))
        sub = read_submission(args.sub)
        validate_submission(sub, comp.test(skip_bad=args.skip_bad, check_sample="raise")["id"], name=args.sub)
        print(f"{args.sub}: valid submission ({len(sub)} rows) for {comp.test_csv}")
    elif cmd == "config":
        _config_command(args)
    elif cmd in ("tune", "best"):
        from lmsys_arena import tune

        tune.cli(args, resolve_config=resolve_config, resolve_data=resolve_data)
    elif cmd == "ensemble":
        from lmsys_arena import ensemble

        ensemble.cli(args)
    elif cmd == "serve":
        from lmsys_arena.runs import RUNS_DIR
        from lmsys_arena.serve import serve

        run_dir = Path(args.run) if "/" in args.run else RUNS_DIR / args.run  # a folder's path, or a name
        serve(run_dir, host=args.host, port=args.port)
    else:
        from lmsys_arena import kernels

        kernels.cli(args)


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


def load_model_family(model: str) -> str | None:
    """The ``family`` of the config ``model`` (a name in configs/ or a YAML path), its ``base:`` chain included."""
    from lmsys_arena.config import config_layers

    family = None
    for _source, data in config_layers(model):
        family = data.get("family", family)
    return family


def _folds_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(f) for f in text.split(",")]
    except ValueError:
        raise UsageError(f"--only-folds expects comma-separated fold numbers, got {text!r}") from None


def _config_command(args) -> None:
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


if __name__ == "__main__":
    main()
