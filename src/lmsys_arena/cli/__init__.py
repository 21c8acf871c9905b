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

import logging
import sys

from lmsys_arena.cli.commands import UsageError, dispatch
from lmsys_arena.cli.parser import build_parser

# The package's parts: parser (every command and its flags), resolve (--model, --params, --set -> a config),
# commands (one handler per command); this module maps their errors to exit codes.

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_USAGE", "UsageError", "build_parser", "main"]

log = logging.getLogger("lmsys_arena")

EXIT_FAILED, EXIT_USAGE, EXIT_BAD_INPUT = 1, 2, 3


def main(argv: list[str] | None = None) -> None:
    from lmsys_arena.io import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level.upper())
    try:
        dispatch(args)
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
