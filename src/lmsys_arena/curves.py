"""Training curves (``train.report_to``, both families): a writer of one fold's scalars, and a reader.

    make train MODEL=xgb SET="train.report_to=tensorboard"
    tensorboard --logdir runs/xgb                    # one curve per fold folder

Where they go: ``runs/<run>/fold<k>/tensorboard/`` (a full refit's: ``runs/<run>/model/tensorboard/``),
TensorBoard event files written with tensorboardX (no torch or TensorFlow needed), or with ``wandb`` a wandb
run in ``runs/<run>/fold<k>/wandb/``, offline unless ``WANDB_MODE`` says otherwise. Scalar tags:

* llm: ``train/loss`` (the smoothed loss of the log line), ``train/lr``, ``train/head_lr``,
  ``train/tokens_per_s`` (all GPUs, since the previous log line) at each log step (``train.log_every``),
  ``valid/logloss`` (the fold's validation rows, swap-TTA as scored) at the last step;
* gbdt: ``train/logloss`` and ``valid/logloss`` (the booster's multi-class log loss, no TTA) at each
  boosting round, step = the number of trees (1, 2, ...).

:func:`read_scalars` reads a run's event files back: ``{"fold0": {"valid/logloss": [(step, value), ...]}}``.
Importing this module imports neither library; the options' type and help are declared here once.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

ReportTo = Literal["none", "tensorboard", "wandb"]
REPORT_TO_HELP = (
    "training curves (not in config_hash): none, tensorboard (<fold>/tensorboard/, needs the report extra; "
    "tensorboard --logdir runs/<run>) or wandb (<fold>/wandb/, offline unless WANDB_MODE is set)"
)
KEY = "train.report_to"
EVENT_DIR = "tensorboard"
WANDB_DIR = "wandb"
EVENT_FILE = "tfevents"  # in every event file's name: events.out.tfevents.<time>.<host><suffix>


def require(report_to: str, key: str = KEY) -> None:
    """Fail now, naming ``key`` and what to install, if the library ``report_to`` needs is missing."""
    if report_to == "tensorboard":
        _import_writer(key)
    elif report_to == "wandb":
        _import_wandb(key)
    elif report_to != "none":
        raise ValueError(f"{key}: must be one of none, tensorboard, wandb, got {report_to!r}")


def _import_writer(key: str):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ModuleNotFoundError(
            f"{key}: tensorboard needs the tensorboardX package, which is not installed: "
            "pip install 'lmsys-arena[report]' (`make setup` installs it), or set train.report_to=none"
        ) from None
    return SummaryWriter


def _import_wandb(key: str):
    try:
        import wandb
    except ImportError:
        raise ModuleNotFoundError(
            f"{key}: wandb needs the wandb package, which is not installed: pip install wandb, "
            "or set train.report_to=tensorboard / none"
        ) from None
    return wandb


def event_dir(fold_dir: str | Path) -> Path:
    """Where a fold's (or a refit model folder's) TensorBoard event files go."""
    return Path(fold_dir) / EVENT_DIR


class Curves:
    """The scalars of one fold (or refit model) folder; every method is a no-op with ``report_to: none``
    or ``enabled=False`` (the other ranks of a multi-GPU run).

    ``fresh``: the fold trains from scratch, so curves of an earlier, killed attempt are removed (a resumed
    LLM fold keeps them: :func:`read_scalars` keeps the last value written at a step). Use as a context
    manager, or call :meth:`close` (which flushes)."""

    def __init__(
        self,
        report_to: str = "none",
        fold_dir: str | Path | None = None,
        *,
        fresh: bool = True,
        enabled: bool = True,
        config: dict | None = None,
        key: str = KEY,
    ):
        self.report_to = report_to if enabled and fold_dir is not None else "none"
        self._tb = self._wandb = None
        if self.report_to == "none":
            require(report_to, key)  # a bad value still fails
            return
        fold_dir = Path(fold_dir)
        if self.report_to == "tensorboard":
            SummaryWriter = _import_writer(key)
            d = event_dir(fold_dir)
            if fresh and d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True, exist_ok=True)
            # a unique suffix: two writers opened in the same second never share (and truncate) a file
            self._tb = SummaryWriter(str(d), flush_secs=30, filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}")
            log.info("training curves -> %s (tensorboard --logdir %s)", d, fold_dir.parent)
        elif self.report_to == "wandb":
            wandb = _import_wandb(key)
            d = fold_dir / WANDB_DIR
            if fresh and d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True, exist_ok=True)
            run = fold_dir.parent.name
            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "lmsys-arena",
                dir=str(d),
                mode=os.environ.get("WANDB_MODE") or "offline",
                name=f"{run}-{fold_dir.name}",
                group=run,
                config=config,
            )
            log.info("training curves -> wandb run %s in %s", f"{run}-{fold_dir.name}", d)
        else:
            require(self.report_to, key)

    @property
    def active(self) -> bool:
        return self._tb is not None or self._wandb is not None

    def log(self, scalars: dict[str, float], step: int) -> None:
        """Scalars (tag -> value) at ``step``; steps of a tag must not decrease (wandb drops those)."""
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, float(value), int(step))
        if self._wandb is not None:
            self._wandb.log({tag: float(v) for tag, v in scalars.items()}, step=int(step))

    def log_series(self, series: dict[str, list[float]], start: int = 1) -> None:
        """Per-step series (tag -> values of steps ``start``, ``start + 1``, ...), e.g. a booster's rounds."""
        n = max((len(v) for v in series.values()), default=0)
        for i in range(n):
            self.log({tag: v[i] for tag, v in series.items() if i < len(v)}, start + i)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> Curves:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ reading


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def event_files(directory: str | Path) -> list[Path]:
    d = Path(directory)
    return sorted(f for f in d.iterdir() if f.is_file() and EVENT_FILE in f.name) if d.is_dir() else []


def read_scalars(run_dir: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """A run's curves: fold folder name (``fold0``, ..., ``model`` for a full refit) -> tag -> ``[(step,
    value), ...]`` in step order. Where several values of a tag share a step (a resumed fold repeats the
    steps after its last checkpoint) the last one written is kept. ``{}`` when the run has no event files."""
    run_dir = Path(run_dir)
    dirs = [
        d
        for d in (run_dir.glob(f"*/{EVENT_DIR}") if run_dir.is_dir() else [])
        if not d.parent.name.startswith(".") and event_files(d)
    ]
    if not dirs:
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError:
        raise ModuleNotFoundError(
            "reading training curves needs the tensorboard package, which is not installed: "
            "pip install 'lmsys-arena[report]'"
        ) from None
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for d in sorted(dirs, key=lambda p: _natural(p.parent.name)):
        events: dict[str, list] = {}
        for f in event_files(d):
            acc = EventAccumulator(str(f), size_guidance={SCALARS: 0}, purge_orphaned_data=False)
            acc.Reload()
            for tag in acc.Tags().get("scalars", []):
                events.setdefault(tag, []).extend(acc.Scalars(tag))
        tags = {}
        for tag, evs in sorted(events.items()):
            by_step: dict[int, float] = {}
            for e in sorted(evs, key=lambda e: e.wall_time):  # stable: a file's own order where times tie
                by_step[int(e.step)] = float(e.value)
            tags[tag] = sorted(by_step.items())
        out[d.parent.name] = tags
    return out
