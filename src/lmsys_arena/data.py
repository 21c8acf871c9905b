"""Load Kaggle LMSYS arena CSVs into one tidy frame.

One loader for train, test and external files. Each row becomes:

    id          str    as written in the file (ints or hex strings, never reformatted)
    prompt      list[str]  one item per turn (JSON null -> "")
    response_a  list[str]
    response_b  list[str]
    model_a, model_b  str ("" when the file has no such column, e.g. test.csv)
    label       int8   0 = A wins, 1 = B wins, 2 = tie, -1 = unlabelled (test)

Bad input raises :class:`DataError` naming the file, the row id (and CSV line) and the
column. With ``skip_bad=True`` bad rows are dropped, counted and reported instead; nothing
is ever dropped silently.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("prompt", "response_a", "response_b")
LABEL_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")
CLASS_NAMES = ("winner_model_a", "winner_model_b", "winner_tie")
_SURROGATE = re.compile("[\ud800-\udfff]")


class DataError(ValueError):
    """Bad input: the message names the file, row id, CSV line and column."""


@dataclass
class LoadReport:
    path: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: list[str] = field(default_factory=list)  # one message per skipped row
    plain_text_cells: int = 0  # cells that were not JSON and were taken as one turn
    padded_turns: int = 0  # rows whose prompt/response turn counts differed

    def summary(self) -> str:
        s = f"read {self.rows_read} rows from {self.path}, kept {self.rows_kept}"
        if self.skipped:
            s += f", skipped {len(self.skipped)} bad rows (first: {self.skipped[0]})"
        if self.plain_text_cells:
            s += f", {self.plain_text_cells} non-JSON cells taken as one turn"
        if self.padded_turns:
            s += f", {self.padded_turns} rows with unequal turn counts padded with ''"
        return s


def fix_surrogates(text: str) -> str:
    """Join UTF-16 surrogate pairs left by JSON ``\\ud83d\\ude00`` escapes; replace lone ones."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def parse_turns(cell: str) -> tuple[list[str], bool]:
    """Decode one Kaggle text cell into turns. Returns (turns, was_plain_text).

    A cell that starts with ``[`` must be a JSON list of strings/nulls; anything else is
    taken as a single plain-text turn. Raises ValueError with the reason otherwise.
    """
    stripped = cell.lstrip()
    if not stripped.startswith("["):
        if cell == "":
            raise ValueError("empty cell")
        return [fix_surrogates(cell)], True
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise ValueError(f"unparsable JSON list ({e.msg} at char {e.pos})") from None
    if not isinstance(value, list):
        raise ValueError(f"JSON value is a {type(value).__name__}, expected a list")
    if not value:
        raise ValueError("empty JSON list")
    turns = []
    for i, item in enumerate(value):
        if item is None:
            turns.append("")
        elif isinstance(item, str):
            turns.append(fix_surrogates(item))
        else:
            raise ValueError(f"turn {i} is a {type(item).__name__}, expected a string or null")
    return turns, False


def _label(row_values: list[str]) -> int:
    try:
        ints = [int(float(v)) if v.strip() != "" else None for v in row_values]
        floats = [float(v) for v in row_values]
    except ValueError:
        raise ValueError(f"winner columns {row_values} are not numbers") from None
    if None in ints or any(f not in (0.0, 1.0) for f in floats) or sum(ints) != 1:
        raise ValueError(f"winner columns {dict(zip(LABEL_COLUMNS, row_values))} are not one-hot")
    return ints.index(1)


def load_battles(path: str | Path, *, skip_bad: bool = False, require_labels: bool | None = None,
                 source: str | None = None) -> pd.DataFrame:
    """Read a Kaggle-format CSV (train, test or external rows) into the tidy frame above.

    ``require_labels``: True demands winner columns, False ignores them, None uses them
    when present. ``source`` fills a ``source`` column (default: the file stem).
    """
    path = Path(path)
    df, report = _load(path, skip_bad=skip_bad, require_labels=require_labels)
    df["source"] = source or path.stem
    log.info(report.summary())
    if report.skipped:
        for msg in report.skipped[:20]:
            log.warning("skipped: %s", msg)
        if len(report.skipped) > 20:
            log.warning("... and %d more skipped rows", len(report.skipped) - 20)
    df.attrs["load_report"] = report
    return df


def _load(path: Path, *, skip_bad: bool, require_labels: bool | None) -> tuple[pd.DataFrame, LoadReport]:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV: {e}") from None
    report = LoadReport(path=str(path), rows_read=len(raw))
    required = ["id", *TEXT_COLUMNS]
    has_labels = all(c in raw.columns for c in LABEL_COLUMNS)
    if require_labels is None:
        require_labels = any(c in raw.columns for c in LABEL_COLUMNS)
    if require_labels:
        required += LABEL_COLUMNS
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(raw.columns)}")

    ids = raw["id"].str.strip().to_numpy()
    texts = {c: raw[c].to_numpy() for c in TEXT_COLUMNS}
    labels_raw = raw[list(LABEL_COLUMNS)].to_numpy() if (require_labels and has_labels) else None

    keep = np.ones(len(raw), dtype=bool)
    out = {c: [None] * len(raw) for c in TEXT_COLUMNS}
    labels = np.full(len(raw), -1, dtype=np.int8)
    seen: dict[str, int] = {}

    def bad(i: int, column: str, reason: str) -> None:
        msg = f"{path.name} row id={ids[i]!r} (CSV record {i + 2}) column '{column}': {reason}"
        if not skip_bad:
            raise DataError(msg)
        report.skipped.append(msg)
        keep[i] = False

    for i in range(len(raw)):
        if ids[i] == "":
            bad(i, "id", "empty id")
            continue
        if ids[i] in seen:
            bad(i, "id", f"duplicate id (first at CSV record {seen[ids[i]] + 2})")
            continue
        seen[ids[i]] = i
        ok = True
        for c in TEXT_COLUMNS:
            try:
                turns, plain = parse_turns(texts[c][i])
            except ValueError as e:
                bad(i, c, str(e))
                ok = False
                break
            report.plain_text_cells += plain
            out[c][i] = turns
        if not ok:
            continue
        if labels_raw is not None:
            try:
                labels[i] = _label(list(labels_raw[i]))
            except ValueError as e:
                bad(i, "winner_model_a/winner_model_b/winner_tie", str(e))
                continue
        n = max(len(out[c][i]) for c in TEXT_COLUMNS)
        if any(len(out[c][i]) != n for c in TEXT_COLUMNS):
            report.padded_turns += 1
            for c in TEXT_COLUMNS:
                out[c][i] = out[c][i] + [""] * (n - len(out[c][i]))

    df = pd.DataFrame({
        "id": ids,
        "model_a": raw["model_a"].to_numpy() if "model_a" in raw.columns else "",
        "model_b": raw["model_b"].to_numpy() if "model_b" in raw.columns else "",
        **{c: out[c] for c in TEXT_COLUMNS},
        "label": labels,
    })[keep].reset_index(drop=True)
    report.rows_kept = len(df)
    return df, report


def swap_ab(df: pd.DataFrame) -> pd.DataFrame:
    """The same battles with A and B exchanged (labels 0 <-> 1, ties stay ties)."""
    out = df.copy()
    out["response_a"], out["response_b"] = df["response_b"], df["response_a"]
    out["model_a"], out["model_b"] = df["model_b"], df["model_a"]
    lab = df["label"].to_numpy()
    out["label"] = np.where(lab == 0, 1, np.where(lab == 1, 0, lab)).astype(np.int8)
    return out


def prompt_key(df: pd.DataFrame) -> pd.Series:
    """Text identity of a battle's prompt (all turns), used to group folds."""
    return df["prompt"].map(lambda turns: "\x1e".join(t.strip() for t in turns))


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

    def test(self, skip_bad: bool = False) -> pd.DataFrame:
        return load_battles(self.test_csv, skip_bad=skip_bad, require_labels=False, source="test")


def load_extra(path: str | Path, train: pd.DataFrame, skip_bad: bool = False) -> pd.DataFrame:
    """External train-only rows; rows whose id or (prompt, response_a, response_b) already occur
    in ``train`` are dropped (and counted) so they cannot leak into a validation fold."""
    extra = load_battles(path, skip_bad=skip_bad, require_labels=True, source="extra")

    def key(d: pd.DataFrame) -> pd.Series:
        return d["prompt"].map(tuple).astype(str) + d["response_a"].map(tuple).astype(str) + d["response_b"].map(tuple).astype(str)

    dup = extra["id"].isin(set(train["id"])) | key(extra).isin(set(key(train)))
    if dup.any():
        log.info("extra: dropped %d rows already present in train (same id or same texts)", int(dup.sum()))
    return extra[~dup].reset_index(drop=True)
