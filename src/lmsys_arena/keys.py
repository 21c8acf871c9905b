"""A battle's identity by its texts, whatever its id: to find the same battle across files (EXTRA and
pseudo rows already in train) and to keep a prompt in one fold."""

from __future__ import annotations

import hashlib
import json

import pandas as pd


def texts_json(df: pd.DataFrame) -> pd.Series:
    """Each battle's prompt and both responses (all turns) as one JSON string."""
    return pd.Series(
        [json.dumps([p, a, b]) for p, a, b in zip(df["prompt"], df["response_a"], df["response_b"])], index=df.index
    )


def text_key(df: pd.DataFrame) -> pd.Series:
    """A battle's identity by its texts (sha1 of its prompt and both responses, all turns): matches the same
    battle across files whatever its id."""
    return pd.Series([hashlib.sha1(k.encode()).hexdigest() for k in texts_json(df)], index=df.index, dtype=object)


def prompt_key(df: pd.DataFrame) -> pd.Series:
    """Text identity of a battle's prompt (all turns), used to group folds."""
    return df["prompt"].map(lambda turns: "\x1e".join(t.strip() for t in turns))
