"""The run folder contract: every command that writes or reads ``runs/<run>/`` goes through here.

    runs/<run>/
      config.json     the resolved config + "run" (where the inputs came from: run_inputs) + "provenance"
                      (package versions, git commit, data file hashes) + "config_hash"
      fold<k>/        the family's model files; valid.parquet is written last and marks the fold done
      model/          the single model of a derived run (a full-data refit, merged folds, an export);
                      done.json is written last and marks it done
      oof.parquet     out-of-fold predictions of the done folds (FRAME columns below, + fold, label)
      test.parquet    fold-averaged test predictions (after `make infer`)
      metrics.json    OOF log loss / accuracy, per fold
      run.log         the log of every command run on this run

A derived run (``make train FULL=1``, ``make merge``, ``make export``) names the fold run it comes from in
config.json ("derived": from, how, that run's config_hash): it has no validation rows of its own, so its
out-of-fold predictions are that run's (an ensemble fits its weights on them). Every trained model folder
may hold ``golden.parquet`` (:mod:`lmsys_arena.golden`: a few rows with the features and predictions of
training time, checked again inside a kernel).

A blend (``make ensemble``) is a run too: its config.json names its members and weights, it has no
fold folders. Its prediction frames are those of :mod:`lmsys_arena.predictions` (``id``, then the
probabilities and logits of A wins, B wins, tie).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from lmsys_arena import dist
from lmsys_arena.config import config_hash, flatten
from lmsys_arena.data import COMPETITION_NAME
from lmsys_arena.io import Busy, exclusive_lock, lock_holder, read_json, write_json, write_parquet
from lmsys_arena.predictions import checked_frame
from lmsys_arena.run_inputs import RunSpec
from lmsys_arena.versions import provenance

log = logging.getLogger(__name__)

RUNS_DIR = Path("runs")
CONFIG_FILE, OOF_FILE, TEST_FILE, METRICS_FILE, LOG_FILE = (
    "config.json",
    "oof.parquet",
    "test.parquet",
    "metrics.json",
    "run.log",
)
FOLD_DONE = "valid.parquet"  # written last in a fold folder: the fold is done
MODEL_DIR, MODEL_DONE = "model", "done.json"  # a derived run's single model; done.json written last
# how long the short steps of a train command wait for another train command's (seconds of work at most)
TRAIN_STEP_WAIT_S = 60.0
BOOKKEEPING = ("config_hash", "run", "provenance", "derived")  # config.json keys that are not the model's config


def default_run_name(model: str, data: str | Path) -> str:
    """``<model>`` on the competition's own data, ``<model>-<data folder>`` on any other (the bundled
    sample included), so a quick-start run never blocks the same command on the real data."""
    stem = Path(model).stem if str(model).endswith((".yaml", ".yml")) else Path(str(model)).name
    data_name = Path(os.path.abspath(data)).name
    return stem if data_name == COMPETITION_NAME else f"{stem}-{data_name}"


class Run:
    """One run folder (``runs/<name>/``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def named(cls, name: str, root: str | Path = RUNS_DIR) -> Run:
        return cls(Path(root) / name)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    config_file = property(lambda self: self.path / CONFIG_FILE)
    oof_file = property(lambda self: self.path / OOF_FILE)
    test_file = property(lambda self: self.path / TEST_FILE)
    metrics_file = property(lambda self: self.path / METRICS_FILE)
    log_file = property(lambda self: self.path / LOG_FILE)

    def fold_dir(self, fold: int) -> Path:
        return self.path / f"fold{fold}"

    def fold_done_file(self, fold: int) -> Path:
        return self.fold_dir(fold) / FOLD_DONE

    def done_folds(self) -> list[int]:
        """Folds whose ``valid.parquet`` exists, in order."""
        return sorted(
            int(d.name[4:]) for d in self.path.glob("fold*") if d.name[4:].isdigit() and (d / FOLD_DONE).exists()
        )

    model_dir = property(lambda self: self.path / MODEL_DIR)
    model_done_file = property(lambda self: self.path / MODEL_DIR / MODEL_DONE)

    def model_dirs(self) -> list[Path]:
        """The folders of the run's finished models: its done folds, else its single model (a derived run)."""
        folds = self.done_folds()
        if folds:
            return [self.fold_dir(f) for f in folds]
        return [self.model_dir] if self.model_done_file.exists() else []

    def derived(self) -> dict | None:
        """``{"from": run, "how": refit | merge | export, ...}`` of a derived run (None otherwise)."""
        return self.read_config().get("derived") if self.exists() else None

    def oof_source(self) -> Run:
        """The run whose out-of-fold predictions stand for this one (itself, or a derived run's fold run)."""
        d = self.derived()
        return self.sibling(d["from"]).oof_source() if d and not self.oof_file.exists() else self

    def sibling(self, name: str) -> Run:
        return Run(self.path.parent / name)

    # ------------------------------------------------------------------ config.json

    def exists(self) -> bool:
        return self.config_file.exists()

    def read_config(self) -> dict:
        """config.json as written (bookkeeping included)."""
        if not self.config_file.exists():
            raise FileNotFoundError(
                f"{self.config_file} not found: train the run (`make train RUN={self.name}`) "
                f"or blend it (`make ensemble`) first"
            )
        return read_json(self.config_file)

    def model_config(self) -> tuple[dict, RunSpec | None]:
        """(the model's config without bookkeeping, the run's inputs; None for a blend)."""
        cfg = self.read_config()
        run = cfg.get("run")
        spec = RunSpec(**run) if run else None
        return {k: v for k, v in cfg.items() if k not in BOOKKEEPING}, spec

    def family(self):
        from lmsys_arena import families

        return families.of(self.read_config())

    def members(self) -> list[str]:
        """A blend's member runs ([] for a trained run)."""
        return list(self.read_config().get("members") or [])

    def data_dir(self) -> str | None:
        """The competition folder the run was trained on (a blend: its first member's), if it is here."""
        if not self.exists():
            return None
        members = self.members()
        if members:
            return self.sibling(members[0]).data_dir()
        data = (self.read_config().get("run") or {}).get("data")
        return data if data and (Path(data) / "test.csv").exists() else None

    def prepare(self, full_cfg: dict, fresh: bool, spec: RunSpec | None = None) -> None:
        """Before training (the run's lock held, its inputs already read and checked): an existing
        config.json must match ``full_cfg`` (else the run is refused, naming the differing keys), unless
        nothing was trained yet; ``fresh`` replaces the old run, which is moved aside until the new
        config.json is written; temporary files of killed writes are removed."""
        if not dist.is_main_process():
            dist.barrier()  # rank 0 prepares; then every rank checks what it wrote
            if not self.config_file.exists() or read_json(self.config_file).get("config_hash") != config_hash(full_cfg):
                raise RuntimeError(f"{self.path}: rank 0 did not prepare this run (see its error)")
            return
        try:
            self._prepare_main(full_cfg, fresh, spec)
        finally:
            dist.barrier()

    def _prepare_main(self, full_cfg: dict, fresh: bool, spec: RunSpec | None) -> None:
        if self.path.exists() and fresh:
            aside = self.path.with_name(f".{self.name}.replaced")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(self.path, aside)
            log.info("--fresh: %s moved aside, removed once the new run has started", self.path)
        if self.config_file.exists():
            old = {k: v for k, v in read_json(self.config_file).items() if k not in ("config_hash", "provenance")}
            if config_hash(old) != config_hash(full_cfg):
                if self.trained_anything() or self.busy_folds():
                    how = "was trained" if self.trained_anything() else "is being trained"
                    raise RuntimeError(
                        f"{self.path} {how} with a different config or other input files; use another RUN "
                        f"name, or FRESH=1 to retrain from scratch (diff: {config_diff(old, full_cfg)})"
                    )
                log.info("%s: nothing trained yet; its config.json is replaced (%s)", self.path,
                         config_diff(old, full_cfg))  # fmt: skip
                self.config_file.unlink()
        if not self.config_file.exists():
            write_json(self.config_file, {**full_cfg, "config_hash": config_hash(full_cfg),
                                          "provenance": provenance(spec)})  # fmt: skip
        self.remove_temporary_files()
        # the replaced run (also one left by a command killed while it replaced it)
        shutil.rmtree(self.path.with_name(f".{self.name}.replaced"), ignore_errors=True)

    def trained_anything(self) -> bool:
        dirs = [*self.path.glob("fold*"), self.model_dir]
        return any(f.is_file() for d in dirs if d.is_dir() for f in d.rglob("*"))

    def remove_temporary_files(self) -> None:
        """Leftovers of writes a kill interrupted (``.<name>.*.tmp`` files, ``.<dir>.*`` folders); not in the
        folds another ``train`` command is training now, whose writes are still going on."""
        training = {self.fold_dir(f) for f in self.busy_folds()}
        for p in sorted(self.path.rglob(".*"), reverse=True):
            if training.intersection(p.parents):
                continue
            if p.name.endswith(".tmp") and p.is_file():
                p.unlink()
            elif p.is_dir() and (p.parent.name.startswith("fold") or p.parent.name == MODEL_DIR):
                shutil.rmtree(p, ignore_errors=True)
            else:
                continue
            log.info("removed %s, left by an interrupted write", p)

    @contextlib.contextmanager
    def lock(self, what: str, *, while_folds_train: bool = False):
        """Exclusive use of this run by one command (``runs/.<run>.lock``, beside the folder so a fresh run
        keeps it); a second command is refused naming the holder, and so is any command while a ``train`` of
        this run trains a fold, except the short steps of another ``train`` (``while_folds_train``: preparing
        the run, writing its OOF), which wait up to TRAIN_STEP_WAIT_S for each other, as train commands started
        together or finishing together would otherwise refuse each other."""
        wait_s = TRAIN_STEP_WAIT_S if while_folds_train else 0.0
        with exclusive_lock(self.path.with_name(f".{self.name}.lock"), f"{what} {self.name}", wait_s):
            busy = {} if while_folds_train else self.busy_folds()
            if busy:
                fold, holder = next(iter(busy.items()))
                raise Busy(f"{what} {self.name}: refused, fold {fold} is being trained by {holder}; wait for it "
                           "to finish")  # fmt: skip
            yield

    def fold_lock_file(self, fold: int) -> Path:
        return self.path.with_name(f".{self.name}.fold{fold}.lock")

    def fold_lock(self, fold: int):
        """One ``train`` command trains fold ``fold`` at a time: several commands on one run share its folds
        (e.g. one per GPU), each taking the folds no other one holds."""
        return exclusive_lock(self.fold_lock_file(fold), f"train {self.name} fold {fold}")

    def busy_folds(self) -> dict[int, str]:
        """{fold: holder} of the folds another ``train`` command is training now."""
        prefix = f".{self.name}.fold"
        names = (
            p.name.removeprefix(prefix).removesuffix(".lock") for p in self.path.parent.glob(f"{glob.escape(prefix)}*")
        )
        holders = {f: lock_holder(self.fold_lock_file(f)) for f in sorted(int(n) for n in names if n.isdigit())}
        return {f: holder for f, holder in holders.items() if holder}

    def write_blend_config(self, cfg: dict) -> None:
        write_json(self.config_file, {**cfg, "provenance": provenance(None)})

    # ------------------------------------------------------------------ frames and metrics

    def read_fold_frame(self, fold: int) -> pd.DataFrame:
        return pd.read_parquet(self.fold_done_file(fold))

    def write_fold_frame(self, fold: int, frame: pd.DataFrame) -> None:
        write_parquet(self.fold_done_file(fold), frame)

    def read_oof(self, partial: bool = False) -> pd.DataFrame:
        """``oof.parquet``; with ``partial``, the done folds of a run still in progress when it has none; a
        derived run's are those of the fold run it comes from."""
        source = self.oof_source()
        if source is not self:
            how = self.derived()["how"]
            log.info("%s: a %s of %s, whose OOF predictions stand for it", self.name, how, source.name)
            return source.read_oof(partial)
        if not self.oof_file.exists() and partial and self.done_folds():
            folds = self.done_folds()
            log.info("%s: no %s, using folds %s", self.path, OOF_FILE, folds)
            return checked_frame(
                pd.concat([self.read_fold_frame(f) for f in folds], ignore_index=True), self.path / "_folds"
            )
        if not self.oof_file.exists():
            raise FileNotFoundError(f"{self.oof_file} not found: run `make train RUN={self.name}` first")
        return checked_frame(pd.read_parquet(self.oof_file), self.oof_file)

    def read_test(self) -> pd.DataFrame:
        if not self.test_file.exists():
            raise FileNotFoundError(f"{self.test_file} not found: run `make infer RUN={self.name}` first")
        return checked_frame(pd.read_parquet(self.test_file), self.test_file)

    def write_oof(self, frame: pd.DataFrame) -> None:
        write_parquet(self.oof_file, frame)

    def write_test(self, frame: pd.DataFrame) -> None:
        write_parquet(self.test_file, frame)

    def merge_metrics(self, metrics: dict) -> None:
        old = read_json(self.metrics_file) if self.metrics_file.exists() else {}
        write_json(self.metrics_file, {**old, **metrics})

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_file, metrics)

    @contextlib.contextmanager
    def logging_to_file(self):
        """Append this process's log records to ``run.log`` while the block runs (main process only); a
        warning repeated within the block (e.g. by every fold) is shown once."""
        from lmsys_arena.io import ONCE_PER_RUN

        ONCE_PER_RUN.seen.clear()
        if not dist.is_main_process():
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler.addFilter(ONCE_PER_RUN)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()


def config_diff(a: dict, b: dict, most: int = 5) -> str:
    fa, fb = flatten(a), flatten(b)
    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    return ", ".join(f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in keys[:most]) or "none"


__all__ = ["Run", "default_run_name"]
