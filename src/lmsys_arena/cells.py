"""One Kaggle CSV cell at a time: text cells (JSON lists of turns) to turns, winner columns to labels, and the
header and id checks of a file. :mod:`lmsys_arena.data` builds the tidy frame from these."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

TEXT_COLUMNS = ("prompt", "response_a", "response_b")
LABEL_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")

_scan_once = json.decoder.JSONDecoder().scan_once  # the C scanner: no per-call wrapper overhead


class DataError(ValueError):
    """Bad input: the message names the file, row id, CSV record and column."""


class JSONValueCell(ValueError):
    """A text cell that is a whole JSON object, number, true/false or null, not a list of strings."""


def fix_surrogates(text: str) -> str:
    """Join UTF-16 surrogate pairs left as two characters; replace lone ones with U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _decode_list(cell: str) -> list:
    """``cell`` (starting with optional whitespace and ``[``) as one JSON value; ValueError otherwise."""
    start = len(cell) - len(cell.lstrip()) if cell[:1] != "[" else 0
    try:
        value, end = _scan_once(cell, start)
    except StopIteration:
        raise ValueError("unparsable JSON list") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"unparsable JSON list ({e.msg} at char {e.pos})") from None
    except RecursionError:
        raise ValueError("unparsable JSON list (nested too deeply)") from None
    if end != len(cell) and not cell[end:].isspace():
        raise ValueError(f"unparsable JSON list (extra data at char {end})")
    return value


_JSON_VALUE_START = frozenset("{-0123456789tfnNI")  # objects, numbers (NaN, Infinity), true, false, null
_JSON_KIND = {dict: "object", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _reject_json_value(cell: str) -> None:
    """Raise :class:`JSONValueCell` if the whole (non-list) cell is one JSON value other than a string."""
    text = cell.strip()
    if text[:1] not in _JSON_VALUE_START:
        return
    try:
        value, end = _scan_once(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return  # not JSON: plain text
    if end == len(text) and type(value) is not str:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise JSONValueCell(f"a JSON {_JSON_KIND[type(value)]} ({shown!r}), expected a JSON list of strings")


def parse_turns(cell: str) -> tuple[list[str], bool]:
    """Decode one Kaggle text cell into turns. Returns (turns, was_plain_text).

    A cell that starts with ``[`` must be a non-empty JSON list of strings/nulls; a cell that is
    a whole JSON object, number, true/false or null raises :class:`JSONValueCell`; anything else
    non-empty is taken as a single plain-text turn. Raises ValueError with the reason.
    """
    if cell[:1] != "[" and not cell.lstrip().startswith("["):
        if cell == "":
            raise ValueError("empty cell")
        _reject_json_value(cell)
        return [cell], True
    value = _decode_list(cell)
    if type(value) is list and len(value) == 1 and type(value[0]) is str:  # the common case, fast
        if "\\ud" in cell or "\\uD" in cell:
            value = [fix_surrogates(value[0])]
        return value, False
    if type(value) is not list:
        raise ValueError(f"JSON value is a {type(value).__name__}, expected a list")
    if not value:
        raise ValueError("empty JSON list")
    for i, item in enumerate(value):
        if type(item) is not str:
            if item is None:
                value[i] = ""
            else:
                raise ValueError(f"turn {i} is a {type(item).__name__}, expected a string or null")
    if "\\u" in cell and ("\\ud" in cell or "\\uD" in cell):  # only escapes can carry surrogates
        value = [fix_surrogates(t) for t in value]
    return value, False


def winner_labels(raw: pd.DataFrame) -> tuple[np.ndarray, dict[int, tuple[str, str]]]:
    """Class index per row from the one-hot winner columns, plus {row: (column, reason)} for bad rows."""
    text = raw[list(LABEL_COLUMNS)].apply(lambda s: s.str.strip())
    num = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    is_num = np.isfinite(num)
    onehot = is_num.all(axis=1) & np.isin(num, (0.0, 1.0)).all(axis=1) & (np.nansum(num, axis=1) == 1)
    labels = np.where(onehot, np.argmax(np.nan_to_num(num), axis=1), -1).astype(np.int8)
    bad = {}
    for i in np.flatnonzero(~onehot):
        values = dict(zip(LABEL_COLUMNS, text.iloc[i].tolist()))
        not_num = [c for c, ok in zip(LABEL_COLUMNS, is_num[i]) if not ok]
        if not_num:
            bad[int(i)] = (not_num[0], f"{values[not_num[0]]!r} is not a number")
        else:
            bad[int(i)] = ("winner_model_a/winner_model_b/winner_tie", f"winner columns {values} are not one-hot")
    return labels, bad


def read_csv_text(path: Path) -> pd.DataFrame:
    """Every cell as a string, exactly as written (ids like ``NA`` or ``007`` stay strings)."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a CSV file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: not a readable CSV: empty file (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if b"\x00" in head:
        raise DataError(f"{path}: not a readable CSV: binary file (NUL bytes), expected UTF-8 text")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV: {e}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def _required_columns(raw: pd.DataFrame, path: Path, require_labels: bool | None) -> bool:
    """Check the header; returns whether labels are read."""
    if require_labels is None:
        require_labels = any(c in raw.columns for c in LABEL_COLUMNS)
    required = ["id", *TEXT_COLUMNS, *(LABEL_COLUMNS if require_labels else ())]
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(raw.columns)}")
    return require_labels


def _id_problems(ids: pd.Series) -> dict[int, tuple[str, str]]:
    bad = {int(i): ("id", "empty id") for i in np.flatnonzero((ids == "").to_numpy())}
    dup = ids.duplicated(keep="first").to_numpy() & (ids != "").to_numpy()
    if dup.any():
        first = {v: i for i, v in reversed(list(enumerate(ids.to_numpy())))}
        for i in np.flatnonzero(dup):
            bad.setdefault(int(i), ("id", f"duplicate id (first at CSV record {first[ids.iat[i]] + 2})"))
    return bad
