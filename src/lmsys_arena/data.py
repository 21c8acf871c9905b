"""Load Kaggle LMSYS arena CSVs into one tidy frame.

One loader for train, test and external files::

    python -c "from lmsys_arena.data import load_battles; print(load_battles('input/sample/train.csv'))"

Each row becomes:

    id          str    as written in the file (ints or hex strings, never reformatted: "007" stays "007")
    prompt      list[str]  one item per turn (JSON null -> "")
    response_a  list[str]
    response_b  list[str]
    model_a, model_b  str ("" when the file has no such column, e.g. test.csv)
    label       int8   0 = A wins, 1 = B wins, 2 = tie, -1 = unlabelled (test)
    source      str    "train", "test", "extra", "pseudo" or the file stem

Optional columns, only when the file has them (:data:`SOFT_COLS`, :data:`WEIGHT_COL`):

    soft_a, soft_b, soft_tie  float64  soft targets: P(A wins), P(B wins), P(tie), summing to 1; NaN on a
                                       row without them (its ``label`` is its target). A file with soft
                                       columns but no winner columns gets ``label`` = their argmax.
    weight      float64  the row's loss weight (set per source by the runner; absent or NaN: 1)

Text cells are JSON lists of strings/nulls. ``\\ud83d\\ude00``-style escapes are joined into
one character; lone surrogates (``\\ud83d`` alone, which cannot be encoded as UTF-8) become
U+FFFD. A cell that does not start with ``[`` is taken as one plain-text turn (counted), unless
the whole cell is a JSON object, number, ``true``, ``false`` or ``null`` (e.g. ``{"a": 1}`` or
``5``): that is a bad cell, not text.

Bad input raises :class:`DataError` naming the file, the row id (and CSV record) and the
column: missing column, a file with no data rows, empty or duplicate id, a ``[...]`` cell that
is not a JSON list of strings, a JSON object/number cell, an empty cell, winner columns that
are not one-hot. With ``skip_bad=True`` bad rows are dropped, counted and reported instead;
nothing is ever dropped silently. ``lenient_text=True`` (used for test files, where a failed
load means a failed Kaggle submission) takes any unparsable text cell as one plain-text turn
instead, counted (JSON object/number cells with a WARNING naming the first row id and column).

Labelled rows (train, extra) whose prompt and both responses are empty in every turn (null,
``""`` or whitespace) carry nothing to learn from: they are dropped with a WARNING (count and
first ids, also in the :class:`LoadReport`). Unlabelled (test) rows are always kept: every test
id needs a prediction.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.cells import (  # noqa: F401 - DataError, parse_turns, fix_surrogates are this module's API
    LABEL_COLUMNS,
    TEXT_COLUMNS,
    DataError,
    JSONValueCell,
    _id_problems,
    _labels,
    _read_csv,
    _required_columns,
    fix_surrogates,
    parse_turns,
)

log = logging.getLogger(__name__)

CLASS_NAMES = ("winner_model_a", "winner_model_b", "winner_tie")
# soft targets of a row (A wins, B wins, tie): the one declaration of their column names, in CSVs and frames
SOFT_COLS = ("soft_a", "soft_b", "soft_tie")
WEIGHT_COL = "weight"  # per-row loss weight in a training frame (absent or NaN: 1)
SOFT_SUM_TOL = 1e-3  # a soft-target row must sum to 1 within this (it is then renormalised)
COMPETITION_NAME = "lmsys-chatbot-arena"  # Kaggle's slug, and the folder name of the real data in input/
PROGRESS_MIN_ROWS = 20_000  # show a tqdm bar (rows/s, ETA) for files at least this long


@dataclass
class LoadReport:
    path: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: list[str] = field(default_factory=list)  # one message per skipped row
    plain_text_cells: int = 0  # cells that were not JSON and were taken as one turn
    padded_turns: int = 0  # rows whose prompt/response turn counts differed
    json_value_cells: int = 0  # (lenient) JSON object/number cells taken as one plain-text turn
    json_value_first: str = ""  # where the first of them is: "row id=... (CSV record n) column '...'"
    empty_rows: list[str] = field(default_factory=list)  # ids of rows whose texts are all empty
    empty_rows_dropped: bool = False  # True: those rows were dropped (labelled files); False: kept (test)

    def summary(self) -> str:
        s = f"read {self.rows_read} rows from {self.path}, kept {self.rows_kept}"
        if self.skipped:
            s += f", skipped {len(self.skipped)} bad rows (first: {self.skipped[0]})"
        if self.plain_text_cells:
            s += f", {self.plain_text_cells} non-JSON cells taken as one turn"
        if self.json_value_cells:
            s += f" ({self.json_value_cells} of them JSON objects/numbers, first at {self.json_value_first})"
        if self.padded_turns:
            s += f", {self.padded_turns} rows with unequal turn counts padded with ''"
        if self.empty_rows:
            what = "dropped" if self.empty_rows_dropped else "kept"
            s += f", {what} {len(self.empty_rows)} rows with all texts empty (first ids: {self.empty_rows[:5]})"
        return s


def load_battles(
    path: str | Path,
    *,
    skip_bad: bool = False,
    require_labels: bool | None = None,
    source: str | None = None,
    lenient_text: bool = False,
    drop_empty: bool | None = None,
) -> pd.DataFrame:
    """Read a Kaggle-format CSV (train, test or external rows) into the tidy frame above.

    ``require_labels``: True demands winner columns, False ignores them, None uses them
    when present. ``source`` fills a ``source`` column (default: the file stem).
    ``drop_empty``: drop rows whose texts are all empty (None: when labels are read).
    The :class:`LoadReport` is in ``df.attrs["load_report"]``.
    """
    path = Path(path)
    df, report = _load(
        path, skip_bad=skip_bad, require_labels=require_labels, lenient_text=lenient_text, drop_empty=drop_empty
    )
    df["source"] = source or path.stem
    log.info(report.summary())
    if report.skipped:
        for msg in report.skipped[:20]:
            log.warning("skipped: %s", msg)
        if len(report.skipped) > 20:
            log.warning("... and %d more skipped rows", len(report.skipped) - 20)
    if report.json_value_cells:
        log.warning(
            "%s: %d text cells are a JSON object/number (or true/false/null), not a JSON list of strings; "
            "each was taken as one plain-text turn (first: %s)",
            path,
            report.json_value_cells,
            report.json_value_first,
        )
    if report.empty_rows and report.empty_rows_dropped:
        log.warning(
            "%s: dropped %d rows whose prompt and both responses are empty in every turn (first ids: %s)",
            path,
            len(report.empty_rows),
            report.empty_rows[:10],
        )
    df.attrs["load_report"] = report
    return df


def _parse_texts(raw: pd.DataFrame, report: LoadReport, lenient: bool, skip: set[int], ids: pd.Series):
    """Turn lists per text column, plus {row: (column, reason)} for cells that fail to parse."""
    n = len(raw)
    out = {c: [None] * n for c in TEXT_COLUMNS}
    bad: dict[int, tuple[str, str]] = {}
    cells = [raw[c].to_numpy() for c in TEXT_COLUMNS]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=n, unit="rows", desc=f"parse {Path(report.path).name}", disable=n < PROGRESS_MIN_ROWS, mininterval=0.5
    )
    step = 4096
    for start in range(0, n, step):
        for i in range(start, min(start + step, n)):
            if i in skip:
                continue
            for c, col in zip(TEXT_COLUMNS, cells):
                try:
                    turns, plain = parse_turns(col[i])
                except ValueError as e:
                    if not lenient:
                        bad[i] = (c, str(e))
                        break
                    turns, plain = [fix_surrogates(col[i])], True
                    if isinstance(e, JSONValueCell):
                        if not report.json_value_cells:
                            report.json_value_first = f"row id={ids.iat[i]!r} (CSV record {i + 2}) column '{c}'"
                        report.json_value_cells += 1
                if plain:
                    report.plain_text_cells += 1
                out[c][i] = turns
        bar.update(min(step, n - start))
    bar.close()
    return out, bad


def _pad_turns(out: dict, keep: np.ndarray, report: LoadReport) -> None:
    """Give prompt/response_a/response_b the same number of turns (missing turns are '')."""
    cols = [out[c] for c in TEXT_COLUMNS]
    for i in np.flatnonzero(keep):
        p, a, b = cols[0][i], cols[1][i], cols[2][i]
        if len(p) == len(a) == len(b):
            continue
        report.padded_turns += 1
        m = max(len(p), len(a), len(b))
        for col in cols:
            col[i] = col[i] + [""] * (m - len(col[i]))


def _all_empty(out: dict, i: int) -> bool:
    """Whether every turn of the prompt and both responses of row ``i`` is empty or whitespace."""
    return all(not t or t.isspace() for c in TEXT_COLUMNS for t in out[c][i])


def _load(
    path: Path,
    *,
    skip_bad: bool,
    require_labels: bool | None,
    lenient_text: bool = False,
    drop_empty: bool | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    raw = _read_csv(path)
    report = LoadReport(path=str(path), rows_read=len(raw))
    with_labels = _required_columns(raw, path, require_labels)
    if not len(raw):
        raise DataError(f"{path}: no rows (only a header)")
    ids = raw["id"].str.strip()
    bad = _id_problems(ids)
    out, text_bad = _parse_texts(raw, report, lenient_text, skip=set(bad), ids=ids)
    for i, problem in text_bad.items():
        bad.setdefault(i, problem)
    labels = np.full(len(raw), -1, dtype=np.int8)
    if with_labels:
        labels, label_bad = _labels(raw)
        for i, problem in label_bad.items():
            bad.setdefault(i, problem)
    soft = None
    if any(c in raw.columns for c in SOFT_COLS):
        missing = [c for c in SOFT_COLS if c not in raw.columns]
        if missing:
            raise DataError(f"{path}: soft-target column(s) {missing} missing (a soft row needs all of {SOFT_COLS})")
        soft, soft_bad = _soft_targets(raw)
        for i, problem in soft_bad.items():
            bad.setdefault(i, problem)
        if not with_labels:  # a soft-labelled file (make pseudo): the argmax stands for the label
            has = np.isfinite(soft).all(axis=1)
            labels = np.where(has, np.argmax(np.nan_to_num(soft), axis=1), -1).astype(np.int8)

    def message(i: int) -> str:
        column, reason = bad[i]
        return f"{path} row id={ids.iat[i]!r} (CSV record {i + 2}) column '{column}': {reason}"

    if bad and not skip_bad:
        first = min(bad)
        more = f" (and {len(bad) - 1} more bad rows; --skip-bad / SKIP_BAD=1 drops them)" if len(bad) > 1 else ""
        raise DataError(message(first) + more)
    report.skipped = [message(i) for i in sorted(bad)]
    keep = np.ones(len(raw), dtype=bool)
    keep[list(bad)] = False
    _pad_turns(out, keep, report)
    empty = [int(i) for i in np.flatnonzero(keep) if _all_empty(out, i)]
    report.empty_rows = [ids.iat[i] for i in empty]
    report.empty_rows_dropped = bool(empty) and (with_labels if drop_empty is None else drop_empty)
    if report.empty_rows_dropped:
        keep[empty] = False
    if not keep.any():
        why = [f"{len(bad)} bad rows skipped (first: {report.skipped[0]})"] if bad else []
        if report.empty_rows_dropped:
            why.append(f"{len(empty)} rows with all texts empty dropped (first ids: {report.empty_rows[:5]})")
        raise DataError(f"{path}: no rows left of {len(raw)}: {'; '.join(why)}")
    df = pd.DataFrame(
        {
            "id": ids.to_numpy(dtype=object),
            "model_a": raw["model_a"].to_numpy(dtype=object) if "model_a" in raw.columns else "",
            "model_b": raw["model_b"].to_numpy(dtype=object) if "model_b" in raw.columns else "",
            **{c: out[c] for c in TEXT_COLUMNS},
            "label": labels,
        }
    )
    if soft is not None:
        df[list(SOFT_COLS)] = soft
    if not keep.all():
        df = df[keep].reset_index(drop=True)
    report.rows_kept = len(df)
    return df, report


def _soft_targets(raw: pd.DataFrame) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    """``(n, 3)`` soft targets from the :data:`SOFT_COLS` cells (all three empty: NaN, a row without
    them), renormalised, plus {row: (column, reason)} for bad rows."""
    text = raw[list(SOFT_COLS)].apply(lambda s: s.str.strip())
    empty = (text == "").to_numpy()
    num = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad: dict[int, tuple[str, str]] = {}
    ok = np.isfinite(num).all(axis=1) & (num >= 0).all(axis=1)
    total = np.where(ok, num.sum(axis=1), np.nan)
    ok &= np.abs(total - 1) <= SOFT_SUM_TOL
    for i in np.flatnonzero(~ok & ~empty.all(axis=1)):
        values = dict(zip(SOFT_COLS, text.iloc[i].tolist()))
        not_num = [c for c, v, e in zip(SOFT_COLS, num[i], empty[i]) if e or not np.isfinite(v)]
        if not_num:
            bad[int(i)] = (not_num[0], f"{values[not_num[0]]!r} is not a number (a soft row needs all three)")
        elif (num[i] < 0).any():
            bad[int(i)] = ("/".join(SOFT_COLS), f"soft targets {values} are negative")
        else:
            bad[int(i)] = ("/".join(SOFT_COLS), f"soft targets {values} sum to {num[i].sum():.6g}, not 1")
    out = np.full(num.shape, np.nan)
    out[ok] = num[ok] / num[ok].sum(axis=1, keepdims=True)
    return out, bad


def soft_targets(df: pd.DataFrame) -> np.ndarray | None:
    """The rows' soft targets ``(n, 3)`` (NaN rows: no soft target, the label is the target), or None when
    no row has one."""
    if not all(c in df.columns for c in SOFT_COLS):
        return None
    soft = df[list(SOFT_COLS)].to_numpy(dtype=np.float64)
    return soft if np.isfinite(soft).all(axis=1).any() else None


def target_matrix(df: pd.DataFrame) -> np.ndarray:
    """Every row's target distribution ``(n, 3)``: its soft targets, else the one-hot of its label."""
    y = df["label"].to_numpy()
    if (y < 0).any() and soft_targets(df) is None:
        raise ValueError(f"{int((y < 0).sum())} unlabelled rows have no soft targets")
    out = np.zeros((len(df), 3))
    out[np.arange(len(df))[y >= 0], y[y >= 0]] = 1.0
    soft = soft_targets(df)
    if soft is not None:
        has = np.isfinite(soft).all(axis=1)
        out[has] = soft[has]
    return out


def row_weights(df: pd.DataFrame) -> np.ndarray | None:
    """The rows' loss weights (NaN: 1), or None when every row weighs 1."""
    if WEIGHT_COL not in df.columns:
        return None
    w = np.nan_to_num(df[WEIGHT_COL].to_numpy(dtype=np.float64), nan=1.0)
    return None if (w == 1.0).all() else w


def text_key(df: pd.DataFrame) -> pd.Series:
    """A battle's identity by its texts (sha1 of its prompt and both responses, all turns): matches the same
    battle across files whatever its id."""
    import hashlib

    return pd.Series([hashlib.sha1(k.encode()).hexdigest() for k in _text_key(df)], index=df.index, dtype=object)


def prompt_key(df: pd.DataFrame) -> pd.Series:
    """Text identity of a battle's prompt (all turns), used to group folds."""
    return df["prompt"].map(lambda turns: "\x1e".join(t.strip() for t in turns))


def default_data_dir() -> Path:
    """``input/lmsys-chatbot-arena`` when it holds train.csv, else the bundled ``input/sample``."""
    full = Path("input") / COMPETITION_NAME
    return full if (full / "train.csv").exists() else Path("input/sample")


@dataclass
class Competition:
    """A competition-layout folder: train.csv, test.csv, sample_submission.csv."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def train_csv(self) -> Path:
        return self.root / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.root / "test.csv"

    @property
    def sample_submission_csv(self) -> Path:
        return self.root / "sample_submission.csv"

    def train(self, skip_bad: bool = False) -> pd.DataFrame:
        return load_battles(self.train_csv, skip_bad=skip_bad, require_labels=True, source="train")

    def test(self, skip_bad: bool = False, *, check_sample: str = "warn") -> pd.DataFrame:
        """Test rows; odd text cells never fail here (a failed load is a failed Kaggle submission).

        ``check_sample``: compare sample_submission.csv with the test ids and the submission
        columns (:meth:`check_sample_submission`): "warn" (default: a problem is a WARNING, so
        a Kaggle kernel never fails on it), "raise" (a :class:`DataError`) or "skip".
        """
        if check_sample not in ("warn", "raise", "skip"):
            raise ValueError(f"check_sample must be 'warn', 'raise' or 'skip', got {check_sample!r}")
        test = load_battles(self.test_csv, skip_bad=skip_bad, require_labels=False, source="test", lenient_text=True)
        if check_sample != "skip":
            self.check_sample_submission(test["id"], strict=check_sample == "raise")
        return test

    def check_sample_submission(self, test_ids=None, *, strict: bool = True) -> str | None:
        """Check sample_submission.csv: it exists, its columns are ``id,winner_model_a,winner_model_b,
        winner_tie`` and its ids are test.csv's (``test_ids``; default: read test.csv), each once.

        Returns None when it is fine, else the problem (one line naming the file). ``strict``: raise
        it as a :class:`DataError`; otherwise log it as a WARNING and return it (never raises).
        """
        try:
            problem = self._sample_submission_problem(test_ids)
        except Exception as e:  # lenient mode must never fail a Kaggle submission
            if strict:
                raise
            problem = f"{self.sample_submission_csv}: could not be checked ({type(e).__name__}: {e})"
        if problem is None:
            return None
        if strict:
            raise DataError(problem)
        log.warning("%s (not fatal here: predictions are written for test.csv's ids)", problem)
        return problem

    def _sample_submission_problem(self, test_ids) -> str | None:
        from lmsys_arena.metrics import SubmissionError, read_submission

        path = self.sample_submission_csv
        if not path.exists():
            return f"{path}: file not found (the competition's sample_submission.csv belongs next to {self.test_csv})"
        try:
            sample = read_submission(path)
        except SubmissionError as e:
            return str(e)
        expected = ["id", *CLASS_NAMES]
        if list(sample.columns) != expected:
            return f"{path}: columns {list(sample.columns)}, expected {expected}"
        ids = sample["id"].str.strip()
        dup = ids.duplicated(keep="first").to_numpy()
        if dup.any():
            i = int(np.argmax(dup))
            first = int(np.argmax((ids == ids.iat[i]).to_numpy()))
            return f"{path}: duplicate id {ids.iat[i]!r} at CSV record {i + 2} (first at CSV record {first + 2})"
        if test_ids is None:
            test_ids = self.test(check_sample="skip")["id"]
        want = pd.Index([str(i).strip() for i in test_ids])
        have = pd.Index(ids)
        missing, extra = want.difference(have), have.difference(want)
        if len(missing) or len(extra):
            return (
                f"{path}: ids differ from {self.test_csv}: {len(missing)} test ids missing (e.g. {list(missing[:3])}), "
                f"{len(extra)} ids not in test.csv (e.g. {list(extra[:3])})"
            )
        return None


def _text_key(d: pd.DataFrame) -> pd.Series:
    return pd.Series(
        [json.dumps([p, a, b]) for p, a, b in zip(d["prompt"], d["response_a"], d["response_b"])], index=d.index
    )


def load_extra(path: str | Path, train: pd.DataFrame, skip_bad: bool = False) -> pd.DataFrame:
    """External train-only rows (never validated on).

    Rows whose (prompt, response_a, response_b) already occur in ``train`` are dropped and
    counted; an id that collides with a train id (different battle, other numbering) gets an
    ``extra-`` prefix so ids stay unique within a training frame. The runner also drops, per
    fold, extra rows whose prompt is in that fold's validation rows.
    """
    extra = load_battles(path, skip_bad=skip_bad, require_labels=True, source="extra")
    dup = _text_key(extra).isin(set(_text_key(train)))
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
    if soft_targets(rows) is None:
        raise DataError(
            f"{path}: no soft targets (columns {', '.join(SOFT_COLS)}); a pseudo-label file is written by "
            f"`make pseudo TEACHER=<run> POOL=<csv>`"
        )
    missing = ~np.isfinite(rows[list(SOFT_COLS)].to_numpy(dtype=np.float64)).all(axis=1)
    if missing.any():
        first = rows["id"].iat[int(np.argmax(missing))]
        if not skip_bad:
            raise DataError(
                f"{path} row id={first!r}: no soft targets ({int(missing.sum())} such rows; a pseudo row needs "
                f"{', '.join(SOFT_COLS)}; --skip-bad / SKIP_BAD=1 drops them)"
            )
        log.warning("%s: dropped %d rows without soft targets (first id %r)", path, int(missing.sum()), first)
        rows = rows[~missing].reset_index(drop=True)
    n = len(rows)
    dup = text_key(rows).isin(set(text_key(known))) if len(known) else pd.Series(False, index=rows.index)
    if dup.any():
        log.info("pseudo: dropped %d rows whose texts are already in the train/extra rows", int(dup.sum()))
    rows = rows[~dup.to_numpy()].reset_index(drop=True)
    if min_prob > 0:
        conf = rows[list(SOFT_COLS)].to_numpy(dtype=np.float64).max(axis=1)
        low = conf < min_prob
        log.info("pseudo: %d of %d rows below the confidence threshold %g (max soft target) left out",
                 int(low.sum()), len(rows), min_prob)  # fmt: skip
        rows = rows[~low].reset_index(drop=True)
    clash = rows["id"].isin(set(known["id"])).to_numpy() if len(known) else np.zeros(len(rows), dtype=bool)
    if clash.any():
        rows.loc[clash, "id"] = "pseudo-" + rows.loc[clash, "id"]
        log.info("pseudo: %d ids also used in train/extra renamed with a 'pseudo-' prefix", int(clash.sum()))
    rows[WEIGHT_COL] = float(weight)
    log.info("pseudo: %d of %d rows of %s kept as train-only rows (weight %g)", len(rows), n, path, weight)
    return rows
