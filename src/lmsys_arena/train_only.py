"""Train-only rows beside a competition's train.csv: EXTRA files and pseudo-labelled rows, never validated on.

Both drop the rows whose texts are already in the rows they join and give a clashing id a prefix, so ids stay
unique within a training frame. The runner also drops, per fold, rows whose prompt is in that fold's
validation rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.battles import load_battles
from lmsys_arena.cells import DataError
from lmsys_arena.keys import text_key, texts_json
from lmsys_arena.targets import SOFT_COLS, WEIGHT_COL, soft_targets

log = logging.getLogger("lmsys_arena.data")  # the data layer's name: log lines read as before the split


def load_extra(path: str | Path, train: pd.DataFrame, skip_bad: bool = False) -> pd.DataFrame:
    """External train-only rows (never validated on).

    Rows whose (prompt, response_a, response_b) already occur in ``train`` are dropped and
    counted; an id that collides with a train id (different battle, other numbering) gets an
    ``extra-`` prefix so ids stay unique within a training frame. The runner also drops, per
    fold, extra rows whose prompt is in that fold's validation rows.
    """
    extra = load_battles(path, skip_bad=skip_bad, require_labels=True, source="extra")
    dup = texts_json(extra).isin(set(texts_json(train)))
    if dup.any():
        log.info("extra: dropped %d rows whose texts are already in train", int(dup.sum()))
    extra = extra[~dup].reset_index(drop=True)
    clash = extra["id"].isin(set(train["id"])).to_numpy()
    if clash.any():
        extra.loc[clash, "id"] = "extra-" + extra.loc[clash, "id"]
        log.info("extra: %d ids also used in train renamed with an 'extra-' prefix", int(clash.sum()))
    return extra


def load_pseudo(
    path: str | Path,
    known: pd.DataFrame,
    *,
    min_prob: float = 0.0,
    weight: float = 1.0,
    skip_bad: bool = False,
) -> pd.DataFrame:
    """Soft-labelled train-only rows (``make pseudo``'s CSV: id, texts, :data:`SOFT_COLS`), never validated on.

    Every row needs soft targets; ``label`` is their argmax and ``source`` is ``pseudo``. Rows whose texts occur
    in ``known`` (the train and extra rows) are dropped and counted; ids that collide get a ``pseudo-`` prefix;
    rows whose largest soft target is below ``min_prob`` are dropped (counted); ``weight`` fills
    :data:`WEIGHT_COL`. The runner also drops, per fold, rows whose prompt is in that fold's validation rows.
    """
    path = Path(path)
    rows = load_battles(path, skip_bad=skip_bad, require_labels=False, source="pseudo", drop_empty=True)
    rows = _rows_with_soft_targets(rows, path, skip_bad)
    n = len(rows)
    rows = _drop_known_texts(rows, known)
    if min_prob > 0:
        rows = _drop_unconfident(rows, min_prob)
    clash = rows["id"].isin(set(known["id"])).to_numpy() if len(known) else np.zeros(len(rows), dtype=bool)
    if clash.any():
        rows.loc[clash, "id"] = "pseudo-" + rows.loc[clash, "id"]
        log.info("pseudo: %d ids also used in train/extra renamed with a 'pseudo-' prefix", int(clash.sum()))
    rows[WEIGHT_COL] = float(weight)
    log.info("pseudo: %d of %d rows of %s kept as train-only rows (weight %g)", len(rows), n, path, weight)
    return rows


def _rows_with_soft_targets(rows: pd.DataFrame, path: Path, skip_bad: bool) -> pd.DataFrame:
    """The pseudo rows that carry soft targets: a file without any is refused, so is a row without them
    (unless ``skip_bad``: dropped with a WARNING)."""
    if soft_targets(rows) is None:
        raise DataError(
            f"{path}: no soft targets (columns {', '.join(SOFT_COLS)}); a pseudo-label file is written by "
            f"`make pseudo TEACHER=<run> POOL=<csv>`"
        )
    missing = ~np.isfinite(rows[list(SOFT_COLS)].to_numpy(dtype=np.float64)).all(axis=1)
    if not missing.any():
        return rows
    first = rows["id"].iat[int(np.argmax(missing))]
    if not skip_bad:
        raise DataError(
            f"{path} row id={first!r}: no soft targets ({int(missing.sum())} such rows; a pseudo row needs "
            f"{', '.join(SOFT_COLS)}; --skip-bad / SKIP_BAD=1 drops them)"
        )
    log.warning("%s: dropped %d rows without soft targets (first id %r)", path, int(missing.sum()), first)
    return rows[~missing].reset_index(drop=True)


def _drop_known_texts(rows: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """``rows`` less those whose texts occur in ``known`` (counted in the log)."""
    dup = text_key(rows).isin(set(text_key(known))) if len(known) else pd.Series(False, index=rows.index)
    if dup.any():
        log.info("pseudo: dropped %d rows whose texts are already in the train/extra rows", int(dup.sum()))
    return rows[~dup.to_numpy()].reset_index(drop=True)


def _drop_unconfident(rows: pd.DataFrame, min_prob: float) -> pd.DataFrame:
    """``rows`` less those whose largest soft target is below ``min_prob`` (counted in the log)."""
    conf = rows[list(SOFT_COLS)].to_numpy(dtype=np.float64).max(axis=1)
    low = conf < min_prob
    log.info("pseudo: %d of %d rows below the confidence threshold %g (max soft target) left out",
             int(low.sum()), len(rows), min_prob)  # fmt: skip
    return rows[~low].reset_index(drop=True)
