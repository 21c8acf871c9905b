"""Kaggle's metric, the submission reader and the submission validator."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.data import CLASS_NAMES

EPS = np.finfo(np.float64).eps


def log_loss(labels, probs) -> float:
    """Multi-class log loss exactly as Kaggle scores this competition (sklearn ``log_loss`` with
    ``eps="auto"``, as sklearn <= 1.4 computed it): probabilities clipped to [eps, 1 - eps] with
    eps = float64 machine epsilon, then each row divided by its sum, then the mean of
    -log p[label]. So unnormalised rows are fine and an all-zero row scores log(3).
    (sklearn >= 1.5 no longer renormalises; on normalised rows the two agree.)"""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs shape {p.shape} does not match {y.shape[0]} labels")
    if len(y) == 0:
        raise ValueError("log loss of zero rows")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must be in 0..{p.shape[1] - 1}, got {y.min()}..{y.max()}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN or inf")
    p = np.clip(p, EPS, 1 - EPS)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def accuracy(labels, probs) -> float:
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels)))


def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def order_consistency(logits_ab, logits_ba) -> float:
    """How much a pairwise model's A-vs-B margin follows the responses when their order is swapped:
    the correlation of ``a - b`` scored as A|B with ``b - a`` scored as B|A (logit columns a, b, tie).
    About 1: the margin follows the content. About 0 or below: the model ignores the order, e.g. a text
    model whose margin has collapsed to a constant (it then only predicts ties vs non-ties; swap-TTA
    hides this by averaging the two orders). 0.0 when either margin is constant."""
    ab, ba = np.asarray(logits_ab, dtype=np.float64), np.asarray(logits_ba, dtype=np.float64)
    m_ab, m_ba = ab[:, 0] - ab[:, 1], ba[:, 1] - ba[:, 0]
    if len(m_ab) < 2 or m_ab.std() < 1e-12 or m_ba.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(m_ab, m_ba)[0, 1])


class SubmissionError(ValueError):
    """A submission file or frame Kaggle would reject; the message names the file (and row id, column)."""


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read a submission CSV for :func:`validate_submission`, every id exactly as written.

    Every cell is read as a string first (``NA``, ``null``, ``007`` stay ids, never NaN or 7);
    then each probability column (``winner_model_a``, ``winner_model_b``, ``winner_tie``) that
    parses entirely as finite numbers becomes float64. A column with any other cell (``x``, an
    empty cell, ``nan``) stays text, so that :func:`validate_submission` names the row id, the
    column and the value. Raises :class:`SubmissionError` naming the file for a missing file, a
    0-byte file, a binary or non-UTF-8 file and a CSV that does not parse.
    """
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"{path}: file not found")
    if path.is_dir():
        raise SubmissionError(f"{path}: is a folder, not a CSV file")
    data = path.read_bytes()
    if not data:
        raise SubmissionError(
            f"{path}: empty file (0 bytes), expected a CSV with the header id,{','.join(CLASS_NAMES)}"
        )
    if b"\x00" in data:
        raise SubmissionError(f"{path}: binary file (NUL bytes), not a CSV text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SubmissionError(f"{path}: not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r})") from None
    header, records = _csv_records(path, text)
    sub = pd.DataFrame(records, columns=header, dtype=object).astype(str) if records else pd.DataFrame(columns=header)
    for col in CLASS_NAMES:
        if col in sub.columns:
            num = pd.to_numeric(sub[col].astype(str).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
            if np.isfinite(num).all():
                sub[col] = num
    return sub


def _csv_records(path: Path, text: str) -> tuple[list[str], list[list[str]]]:
    """Header and data records of a CSV text; every record must have the header's number of fields."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = []
    try:
        for record in reader:
            if record:  # a blank line (pandas skips them too)
                records.append(record)
                if len(record) != len(records[0]):
                    raise SubmissionError(
                        f"{path}: line {reader.line_num} has {len(record)} fields, the header "
                        f"{','.join(records[0])!r} has {len(records[0])}"
                    )
    except csv.Error as e:
        raise SubmissionError(f"{path}: not a readable CSV: line {reader.line_num}: {e}") from None
    if not records:
        raise SubmissionError(f"{path}: no header (blank file), expected id,{','.join(CLASS_NAMES)}")
    header = records[0]
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise SubmissionError(f"{path}: duplicate column name(s) {dup} in the header {header}")
    return header, records[1:]


def validate_submission(sub: pd.DataFrame, test_ids, *, name: str = "submission") -> None:
    """Raise SubmissionError unless ``sub`` is a valid Kaggle submission for ``test_ids``.

    Ids are compared as strings (stripped); a missing id (NaN, as ``pd.read_csv`` makes of an id
    ``NA``) is an error: read files with :func:`read_submission`."""
    expected = ["id", *CLASS_NAMES]
    if list(sub.columns) != expected:
        raise SubmissionError(f"{name}: columns {list(sub.columns)}, expected {expected}")
    if not len(sub):
        raise SubmissionError(f"{name}: no rows (only a header), expected one row per test id")
    missing_id = sub["id"].isna().to_numpy()
    if missing_id.any():
        i = int(np.argmax(missing_id))
        raise SubmissionError(
            f"{name}: row {i} (CSV record {i + 2} when read straight from a file) has no id (NaN; "
            f"{int(missing_id.sum())} such rows): read ids as strings (metrics.read_submission), an id "
            "like 'NA' is not a missing value"
        )
    ids = sub["id"].astype(str).str.strip()
    dup = ids[ids.duplicated()]
    if len(dup):
        raise SubmissionError(f"{name}: duplicate id {dup.iloc[0]!r}")
    test_ids = pd.Series(test_ids)
    if test_ids.isna().any():
        raise ValueError("test ids contain a missing value (NaN): read test.csv with ids as strings")
    want = pd.Index([str(i).strip() for i in test_ids])
    missing = want.difference(pd.Index(ids))
    extra = pd.Index(ids).difference(want)
    if len(missing) or len(extra):
        raise SubmissionError(
            f"{name}: ids differ from test ids: {len(missing)} missing (e.g. "
            f"{list(missing[:3])}), {len(extra)} unexpected (e.g. {list(extra[:3])})"
        )
    cells = sub[list(CLASS_NAMES)]
    p = cells.apply(_to_numbers).to_numpy(dtype=np.float64)
    _first_bad(~np.isfinite(p), ids, name, "is not a finite number", cells)
    _first_bad(p < 0, ids, name, "is negative", cells)
    sums = p.sum(axis=1)
    off = np.abs(sums - 1) > 1e-6
    if off.any():
        i = int(np.argmax(off))
        raise SubmissionError(
            f"{name}: row id={ids.iloc[i]!r}: probabilities sum to {sums[i]:.9f}, not 1 "
            f"(tolerance 1e-6; {int(off.sum())} such rows)"
        )


def _first_bad(mask: np.ndarray, ids: pd.Series, name: str, what: str, cells: pd.DataFrame) -> None:
    rows = mask.any(axis=1)
    if rows.any():
        i = int(np.argmax(rows))
        j = int(np.argmax(mask[i]))
        value = cells.iat[i, j]
        shown = str(float(value)) if not isinstance(value, str) and _is_number(value) else repr(value)
        raise SubmissionError(
            f"{name}: row id={ids.iloc[i]!r} column '{CLASS_NAMES[j]}' {what} ({shown}; {int(rows.sum())} such rows)"
        )


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _to_numbers(col: pd.Series) -> pd.Series:
    """A probability column as float64 (NaN where a cell is not a number; text is stripped first)."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return col.astype(np.float64)
    return pd.to_numeric(col.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
