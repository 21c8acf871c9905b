"""What the page serves: a run's models, its train rows (the row picker) and OOF predictions, and the
answer to one submitted form (the page's context; bad input an error message, never an exception)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.runs import Run
from lmsys_arena.serve.battle import FIELDS, InputError, battle_frame, form_texts, parse_turns
from lmsys_arena.serve.predictors import load_predictor

log = logging.getLogger(__package__)  # one logger for the page, as before the split into modules


class Service:
    """A run's models, its train rows (the row picker) and OOF predictions; :meth:`handle` answers one form."""

    def __init__(self, run_dir: str | Path):
        self.run = Run(run_dir)
        cfg, spec = self.run.model_config()
        if spec is None:
            raise ValueError(f"{self.run.path} is a blend: serve one of its members ({', '.join(self.run.members())})")
        if not self.run.model_dirs():
            raise FileNotFoundError(
                f"{self.run.path} has no trained models: run `make train RUN={self.run.name}` first"
            )
        self.cfg, self.family = cfg, cfg.get("family")
        t0 = time.time()
        self.predictor = load_predictor(self.run, cfg)
        self.n_models = len(self.run.model_dirs())
        log.info(
            "%s: %d model(s) of family %s loaded in %.1fs", self.run.name, self.n_models, self.family, time.time() - t0
        )
        self.rows, self.data_note = self._train_rows(spec)
        self.oof = self._oof()
        self.lock = threading.Lock()  # one prediction at a time (boosters and torch modules are shared)

    def _train_rows(self, spec) -> tuple[pd.DataFrame | None, str]:
        comp = spec.competition()
        if not comp.train_csv.exists():
            return None, f"{comp.train_csv} is not here: the row picker is off"
        try:
            rows = comp.train(skip_bad=spec.skip_bad)
        except Exception as e:  # the page still scores pasted battles
            log.warning("%s: not loaded (%s: %s); the row picker is off", comp.train_csv, type(e).__name__, e)
            return None, f"{comp.train_csv} could not be read: the row picker is off"
        return rows.set_index("id", drop=False), f"{len(rows):,} rows of {comp.train_csv}"

    def _oof(self) -> pd.DataFrame | None:
        try:
            return self.run.read_oof(partial=True).set_index("id")
        except (FileNotFoundError, ValueError):
            return None

    def row(self, row_id: str) -> pd.DataFrame:
        if self.rows is None:
            raise InputError(f"no row picker: {self.data_note}")
        row_id = row_id.strip()
        if not row_id:
            raise InputError("row id is empty")
        if row_id not in self.rows.index:
            raise InputError(f"row id {row_id!r} is not in the run's train data ({self.data_note})")
        return self.rows.loc[[row_id]].reset_index(drop=True)

    def handle(self, form: dict) -> dict:
        """The page's context for a submitted form (``action``: predict the texts, ``row``: the row
        ``row_id``, ``random``: a random row). Never raises: an error is ``ctx["error"]``."""
        t0 = time.time()
        action = form.get("action") or "predict"
        ctx = {"fmt": form.get("fmt") or "text", "row_id": form.get("row_id") or ""}
        ctx.update({f: form.get(f) or "" for f, _ in FIELDS})
        what = "pasted battle"
        try:
            rows, what = self._battle(action, ctx)
            with self.lock:
                notes = self.predictor.check(rows, from_data=action != "predict")
                pred = self.predictor.predict(rows)
            pred.notes = notes + pred.notes
            ctx["pred"], ctx["turns"] = pred, len(rows["prompt"].iat[0])
            log.info(
                "served %s (%d turns, %d chars): P(A)=%r P(B)=%r P(tie)=%r in %.0f ms",
                what,
                ctx["turns"],
                sum(len(t) for f, _ in FIELDS for t in rows[f].iat[0]),
                *map(float, pred.p),
                1000 * (time.time() - t0),
            )
        except InputError as e:
            ctx["error"] = str(e)
            log.info("refused %s: %s", what, e)
        except Exception as e:  # shown as one line; the traceback goes to the server log only
            ctx["error"] = f"prediction failed: {type(e).__name__}: {e}"
            log.exception("failed on %s", what)
        return ctx

    def _battle(self, action: str, ctx: dict) -> tuple[pd.DataFrame, str]:
        """The battle to score and how the log names it: a picked row (its texts and info put in ``ctx``
        for the form) or the pasted texts."""
        if action in ("row", "random"):
            if action == "random":
                if self.rows is None:
                    raise InputError(f"no row picker: {self.data_note}")
                ctx["row_id"] = str(self.rows.index[np.random.default_rng().integers(len(self.rows))])
            rows = self.row(ctx["row_id"])
            ctx["fmt"], texts = form_texts(rows.iloc[0])
            ctx.update(texts)
            ctx["row"] = self._row_info(rows.iloc[0])
            return rows, f"row {rows['id'].iat[0]!r}"
        if action == "predict":
            turns = [parse_turns(ctx[f], ctx["fmt"], label) for f, label in FIELDS]
            return battle_frame(*turns), "pasted battle"
        raise InputError(f"unknown action {action!r}")

    def _row_info(self, row) -> dict:
        info = {"id": str(row["id"]), "label": int(row["label"]), "model_a": row["model_a"], "model_b": row["model_b"]}
        if self.oof is not None and info["id"] in self.oof.index:
            o = self.oof.loc[info["id"]]
            info["oof"] = (float(o["p_a"]), float(o["p_b"]), float(o["p_tie"]))
            info["fold"] = int(o["fold"])
        return info
