"""The runs as the report reads them: each run's OOF rows joined with the texts of its data folder (RunView)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.predictions import PROB_COLS
from lmsys_arena.report.fold_models import _gbdt_extras, _llm_orders
from lmsys_arena.runs import Run

log = logging.getLogger("lmsys_arena.report")  # the package's name: log lines read as before the split

CLASSES = ("A wins", "B wins", "tie")
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class RunView:
    """One run as the report reads it: its OOF rows joined with their texts, and what its family adds."""

    name: str
    run: Run  # the run asked for
    source: Run  # the run whose OOF rows and fold models stand for it (a derived run's fold run)
    family: str
    cfg: dict
    data: str | None
    extra: str | None
    oof: pd.DataFrame  # id, fold, label, p_*, logit_* + prompt, response_a/b, model_a/b, source, lengths
    test: pd.DataFrame | None = None  # labelled test rows with the run's test.parquet predictions
    orders: dict | None = None  # {"ab": (n, 3) probs as A|B, "ba": (n, 3) probs as B|A (own order) or None}
    orders_note: str = ""
    importance: pd.DataFrame | None = None  # feature, gain share, mean |SHAP|
    importance_note: str = ""
    color: str = COLORS[0]
    notes: list[str] = field(default_factory=list)

    @property
    def y(self) -> np.ndarray:
        return self.oof["label"].to_numpy().astype(np.int64)

    @property
    def p(self) -> np.ndarray:
        return self.oof[PROB_COLS].to_numpy(dtype=np.float64)


def load_view(root: Path, name: str, data: str | None, texts: dict, *, shap_rows: int, seed: int) -> RunView:
    run = Run(root / name)
    source = run.oof_source()
    cfg = run.read_config()
    family = cfg.get("family", "?")
    data_dir, extra = _data_of(run, data)
    oof = source.read_oof(partial=True)
    if data_dir is None:
        raise FileNotFoundError(f"{run.path}: config.json names no data folder (a blend of blends?): pass --data")
    rows = _texts(data_dir, texts, skip_bad=bool((cfg.get("run") or {}).get("skip_bad")))
    joined = oof.merge(rows.drop(columns=["label"]), on="id", how="left", validate="one_to_one")
    missing = joined["prompt"].isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"{name}: {int(missing.sum())} of {len(oof)} OOF ids (e.g. {joined['id'][missing].iloc[0]!r}) are not in "
            f"{Path(data_dir) / 'train.csv'}: pass the run's data folder with --data (DATA=)"
        )
    view = RunView(name, run, source, family, cfg, data_dir, extra, joined)
    view.test = _labelled_test(run, data_dir)
    if family == "gbdt":
        _gbdt_extras(view, shap_rows, seed)
    elif family == "llm":
        _llm_orders(view)
        view.importance_note = "an LLM run: no feature importance (its inputs are tokens)"
    else:
        view.orders_note = f"a {family} run has no fold models of its own: no per-order predictions"
        view.importance_note = f"a {family} run: no feature importance of its own (see its members' reports)"
    return view


def _data_of(run: Run, data: str | None) -> tuple[str | None, str | None]:
    """(the data folder, the EXTRA file) of a run; a blend's are its first member's."""
    cfg = run.read_config()
    members = cfg.get("members") or []
    if members:
        d, e = _data_of(run.sibling(members[0]), None)
        return data or d, e
    spec = cfg.get("run") or {}
    return data or spec.get("data"), spec.get("extra")


def _texts(data_dir: str, cache: dict, skip_bad: bool) -> pd.DataFrame:
    """The train rows of ``data_dir`` (read once per report) with their lengths and turn counts."""
    from lmsys_arena.data import Competition

    if data_dir not in cache:
        comp = Competition(Path(data_dir))
        if not comp.train_csv.exists():
            raise FileNotFoundError(f"{comp.train_csv} not found: pass the run's data folder with --data (DATA=)")
        cache[data_dir] = with_lengths(comp.train(skip_bad=skip_bad))
    return cache[data_dir]


def with_lengths(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` + ``len_a``, ``len_b``, ``len_prompt`` (characters over all turns) and ``turns``."""
    chars = lambda col: rows[col].map(lambda turns: sum(len(t) for t in turns)).to_numpy(dtype=np.int64)
    return rows.assign(
        len_a=chars("response_a"),
        len_b=chars("response_b"),
        len_prompt=chars("prompt"),
        turns=rows["prompt"].map(len).to_numpy(dtype=np.int64),
    )


def _labelled_test(run: Run, data_dir: str) -> pd.DataFrame | None:
    """The run's test predictions joined with test.csv's labels, when test.csv has winner columns."""
    from lmsys_arena.data import Competition

    if not run.test_file.exists() or not (Path(data_dir) / "test.csv").exists():
        return None
    try:
        test = Competition(Path(data_dir)).test(check_sample="skip")
    except Exception as e:  # noqa: BLE001 - the report goes on without the test rows
        log.warning("%s: test.csv not read (%s): the report uses the OOF rows only", run.name, e)
        return None
    test = test[test["label"] >= 0]
    if not len(test):
        return None
    pred = run.read_test()
    out = pred.merge(test[["id", "label", "source"]], on="id", how="inner")
    return out if len(out) else None
