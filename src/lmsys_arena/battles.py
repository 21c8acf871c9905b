""":func:`load_battles`: one Kaggle-format CSV (train, test or external rows) to the tidy frame described in
:mod:`lmsys_arena.data`.

The cells are parsed and checked by :mod:`lmsys_arena.cells` (texts, winner columns, header, ids) and
:mod:`lmsys_arena.targets` (soft targets); here the problems of a file are gathered per row, raised (the first,
naming file, row id, CSV record and column) or skipped and counted, and the kept rows assembled. What was
read, skipped, padded or dropped is in a :class:`LoadReport`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.cells import (
    TEXT_COLUMNS,
    DataError,
    JSONValueCell,
    _id_problems,
    _required_columns,
    fix_surrogates,
    parse_turns,
    read_csv_text,
    winner_labels,
)
from lmsys_arena.targets import SOFT_COLS, parse_soft_targets, soft_labels

log = logging.getLogger("lmsys_arena.data")  # the data layer's name: log lines read as before the split

PROGRESS_MIN_ROWS = 20_000  # show a tqdm bar (rows/s, ETA) for files at least this long

Problems = dict[int, tuple[str, str]]  # {row: (column, reason)} of a file's bad rows


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
    """Read a Kaggle-format CSV (train, test or external rows) into the tidy frame of :mod:`lmsys_arena.data`.

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
    _log_report(path, report)
    df.attrs["load_report"] = report
    return df


def _log_report(path: Path, report: LoadReport) -> None:
    """The load's summary (INFO), then WARNINGs for skipped rows, JSON-value cells and dropped empty rows."""
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


def _load(
    path: Path,
    *,
    skip_bad: bool,
    require_labels: bool | None,
    lenient_text: bool = False,
    drop_empty: bool | None = None,
) -> tuple[pd.DataFrame, LoadReport]:
    raw = read_csv_text(path)
    report = LoadReport(path=str(path), rows_read=len(raw))
    with_labels = _required_columns(raw, path, require_labels)
    if not len(raw):
        raise DataError(f"{path}: no rows (only a header)")
    ids = raw["id"].str.strip()
    bad = _id_problems(ids)  # a row keeps the first problem found: ids, then texts, labels, soft targets
    texts, text_bad = _parse_texts(raw, report, lenient_text, skip=set(bad), ids=ids)
    _add_problems(bad, text_bad)
    labels = np.full(len(raw), -1, dtype=np.int8)
    if with_labels:
        labels, label_bad = winner_labels(raw)
        _add_problems(bad, label_bad)
    soft, soft_bad = _soft_columns(raw, path)
    _add_problems(bad, soft_bad)
    if soft is not None and not with_labels:  # a soft-labelled file (make pseudo): the argmax stands for the label
        labels = soft_labels(soft)
    keep = _skip_bad_rows(path, ids, bad, skip_bad, report)
    _pad_turns(texts, keep, report)
    _drop_empty_rows(texts, keep, ids, report, drop=with_labels if drop_empty is None else drop_empty)
    if not keep.any():
        raise DataError(_nothing_left(path, len(raw), bad, report))
    df = _tidy_frame(raw, ids, texts, labels, soft, keep)
    report.rows_kept = len(df)
    return df, report


def _add_problems(bad: Problems, more: Problems) -> None:
    for i, problem in more.items():
        bad.setdefault(i, problem)


def _parse_texts(raw: pd.DataFrame, report: LoadReport, lenient: bool, skip: set[int], ids: pd.Series):
    """Turn lists per text column, plus {row: (column, reason)} for cells that fail to parse."""
    n = len(raw)
    out = {c: [None] * n for c in TEXT_COLUMNS}
    bad: Problems = {}
    cells = [raw[c].to_numpy() for c in TEXT_COLUMNS]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=n, unit="rows", desc=f"parse {Path(report.path).name}", disable=n < PROGRESS_MIN_ROWS, mininterval=0.5
    )
    step = 4096  # the bar is updated once a block of rows
    for start in range(0, n, step):
        for i in range(start, min(start + step, n)):
            if i in skip:
                continue
            problem = _parse_row(i, cells, out, report, lenient, ids)
            if problem:
                bad[i] = problem
        bar.update(min(step, n - start))
    bar.close()
    return out, bad


def _parse_row(i: int, cells: list, out: dict, report: LoadReport, lenient: bool, ids: pd.Series):
    """Parse row ``i``'s text cells into ``out``; the (column, reason) of its first bad cell (strict), else None.

    Lenient: a cell that fails to parse is one plain-text turn (a JSON object/number one is also noted)."""
    for c, col in zip(TEXT_COLUMNS, cells):
        try:
            turns, plain = parse_turns(col[i])
        except ValueError as e:
            if not lenient:
                return c, str(e)
            turns, plain = [fix_surrogates(col[i])], True
            if isinstance(e, JSONValueCell):
                if not report.json_value_cells:
                    report.json_value_first = f"row id={ids.iat[i]!r} (CSV record {i + 2}) column '{c}'"
                report.json_value_cells += 1
        if plain:
            report.plain_text_cells += 1
        out[c][i] = turns
    return None


def _soft_columns(raw: pd.DataFrame, path: Path) -> tuple[np.ndarray | None, Problems]:
    """The file's soft targets and their bad rows; (None, {}) for a file without soft-target columns. A file
    with only some of them is refused."""
    if not any(c in raw.columns for c in SOFT_COLS):
        return None, {}
    missing = [c for c in SOFT_COLS if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: soft-target column(s) {missing} missing (a soft row needs all of {SOFT_COLS})")
    return parse_soft_targets(raw)


def _skip_bad_rows(path: Path, ids: pd.Series, bad: Problems, skip_bad: bool, report: LoadReport) -> np.ndarray:
    """Which rows are kept: raises on the first bad row, unless ``skip_bad`` (then each is in ``report``)."""

    def message(i: int) -> str:
        column, reason = bad[i]
        return f"{path} row id={ids.iat[i]!r} (CSV record {i + 2}) column '{column}': {reason}"

    if bad and not skip_bad:
        first = min(bad)
        more = f" (and {len(bad) - 1} more bad rows; --skip-bad / SKIP_BAD=1 drops them)" if len(bad) > 1 else ""
        raise DataError(message(first) + more)
    report.skipped = [message(i) for i in sorted(bad)]
    keep = np.ones(len(ids), dtype=bool)
    keep[list(bad)] = False
    return keep


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


def _drop_empty_rows(out: dict, keep: np.ndarray, ids: pd.Series, report: LoadReport, drop: bool | None) -> None:
    """Note the kept rows whose texts are all empty in ``report``; with ``drop``, also unmark them in ``keep``
    (a labelled row without text teaches nothing; every test row needs a prediction)."""
    empty = [int(i) for i in np.flatnonzero(keep) if _all_empty(out, i)]
    report.empty_rows = [ids.iat[i] for i in empty]
    report.empty_rows_dropped = bool(empty) and drop
    if report.empty_rows_dropped:
        keep[empty] = False


def _nothing_left(path: Path, rows_read: int, bad: Problems, report: LoadReport) -> str:
    """Why no row of the file is left: its skipped bad rows and dropped empty rows."""
    why = [f"{len(bad)} bad rows skipped (first: {report.skipped[0]})"] if bad else []
    if report.empty_rows_dropped:
        why.append(f"{len(report.empty_rows)} rows with all texts empty dropped (first ids: {report.empty_rows[:5]})")
    return f"{path}: no rows left of {rows_read}: {'; '.join(why)}"


def _tidy_frame(raw, ids, texts: dict, labels: np.ndarray, soft: np.ndarray | None, keep: np.ndarray) -> pd.DataFrame:
    """The kept rows as the tidy frame (model names "" when the file has none)."""
    df = pd.DataFrame(
        {
            "id": ids.to_numpy(dtype=object),
            "model_a": raw["model_a"].to_numpy(dtype=object) if "model_a" in raw.columns else "",
            "model_b": raw["model_b"].to_numpy(dtype=object) if "model_b" in raw.columns else "",
            **{c: texts[c] for c in TEXT_COLUMNS},
            "label": labels,
        }
    )
    if soft is not None:
        df[list(SOFT_COLS)] = soft
    if not keep.all():
        df = df[keep].reset_index(drop=True)
    return df
