"""The command line's parser: every command and its flags (``build_parser``); the help text is the usage in
:mod:`lmsys_arena.cli`'s docstring."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

AddCommand = Callable[[str, str], argparse.ArgumentParser]  # (name, help) -> the command's parser


def build_parser() -> argparse.ArgumentParser:
    from lmsys_arena import cli  # its docstring is the usage shown by --help
    from lmsys_arena.versions import version_line

    common = argparse.ArgumentParser(add_help=False)  # accepted after the subcommand too
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO (default), WARNING, ERROR")
    ap = argparse.ArgumentParser(
        prog="lmsys_arena", description=cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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

    # in this order in the --help list
    for add_commands in (
        _training_commands,
        _derive_commands,
        _prediction_commands,
        _config_and_tuning_commands,
        _ensemble_command,
        _kaggle_commands,
        _serve_command,
    ):
        add_commands(command)
    return ap


# ---------------------------------------------------------------- flags shared by several commands


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
    """The train-only rows besides --extra: their weights and the pseudo-label file (run_inputs.RunSpec)."""
    p.add_argument("--extra-weight", type=float, default=1.0, help="loss weight of the --extra rows")
    p.add_argument("--pseudo", default=None, help="CSV of soft-labelled train-only rows (`make pseudo`)")
    p.add_argument("--pseudo-weight", type=float, default=1.0, help="loss weight of the --pseudo rows")
    p.add_argument(
        "--pseudo-min-prob",
        type=float,
        default=0.0,
        help="keep the pseudo rows whose largest soft target is at least this (0: all)",
    )


# ---------------------------------------------------------------- the commands, by group


def _training_commands(command: AddCommand) -> None:
    """folds, train, judge."""
    p = command("folds", "write folds/<data-name>.csv (id, fold)")
    _data_args(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)

    p = command("holdout", "keep a share of the prompts out: input/<data>-holdout/ + its labels (docs/data.md)")
    p.add_argument("--data", default=None, help="the data folder to split (default: as for train)")
    p.add_argument("--extra", default=None, help="EXTRA CSV: rows sharing a held-out prompt are dropped")
    p.add_argument("--frac", type=float, default=0.15, help="share of the prompts held out")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None, help="the split folder (default: <data>-holdout beside the data folder)")

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


def _derive_commands(command: AddCommand) -> None:
    """merge, export: one LLM run made from another (lmsys_arena.derive)."""
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
    p.add_argument(
        "--heads",
        choices=["keep", "mean"],
        default="keep",
        help="keep: every fold's text and aux head, their logits averaged over the one backbone pass; "
        "mean: the element-wise mean of the heads' weights",
    )
    p.add_argument("--fresh", action="store_true", help="replace an existing merged run")

    p = command("export", "a single-model LLM run with its adapter merged into the weights: runs/<run>-export/")
    p.add_argument("--run", required=True, help="a merged run or a refit")
    p.add_argument("--name", default=None, help="the exported run's name (default: <run>-export)")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="the saved weights' dtype")
    p.add_argument("--quant", choices=["8bit"], default=None, help="load the weights in 8-bit (bitsandbytes)")
    p.add_argument("--fresh", action="store_true", help="replace an existing exported run")


def _prediction_commands(command: AddCommand) -> None:
    """infer, pseudo, score, report, check."""
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
    p.add_argument(
        "--labels",
        default=None,
        help="CSV of held-out labels (id, label): score the run's test predictions on them instead "
        "(metrics.json 'holdout'; docs/ensemble.md#held-out-labels)",
    )

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


def _config_and_tuning_commands(command: AddCommand) -> None:
    """config, tune, best."""
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


def _ensemble_command(command: AddCommand) -> None:
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
    p.add_argument(
        "--fit-labels",
        default=None,
        help="CSV of held-out labels (id, label): fit the weights on the members' test predictions of those "
        "rows instead of on OOF (docs/ensemble.md#held-out-labels)",
    )


def _kaggle_commands(command: AddCommand) -> None:
    """kernels, kernel-datasets, check-kernels, push, submit (lmsys_arena.kernels)."""
    _kernels_command(command)
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


def _kernels_command(command: AddCommand) -> None:
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


def _serve_command(command: AddCommand) -> None:
    p = command("serve", "a local web page scoring one battle with a run's models (the serve extra; docs/serve.md)")
    p.add_argument("--run", required=True, help="run name in runs/, or a run folder's path")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
