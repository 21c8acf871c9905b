"""The page's input: form fields -> one battle in the loader's row schema, and a data row -> form fields."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

SEPARATOR = "---"  # a line of only this separates two turns in the text format
MAX_CHARS = 1_000_000  # all texts of one battle together
FIELDS = (("prompt", "Prompt"), ("response_a", "Response A"), ("response_b", "Response B"))
CLASSES = (("a", "A wins"), ("b", "B wins"), ("tie", "tie"))


class InputError(ValueError):
    """Input the page refuses, with the message it shows."""


def parse_turns(text: str, fmt: str, field: str) -> list[str]:
    """One form field -> its turns. ``text``: turns separated by a line ``---``; ``json``: a JSON list of
    strings (the CSV cells' format). Line breaks are normalised to ``\\n`` in the text format (a browser
    sends a textarea's lines as CRLF)."""
    if not text.strip():
        raise InputError(f"{field} is empty")
    if fmt == "json":
        return _json_turns(text, field)
    if fmt != "text":
        raise InputError(f"unknown format {fmt!r} (text or json)")
    turns, lines = [], []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.strip() == SEPARATOR:
            turns.append("\n".join(lines))
            lines = []
        else:
            lines.append(line)
    turns.append("\n".join(lines))
    return turns


def _json_turns(text: str, field: str) -> list[str]:
    """A field in the JSON format: a non-empty list of strings, not all blank."""
    try:
        turns = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{field}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise InputError(f'{field}: the JSON format takes a non-empty list of strings, e.g. ["turn 1", "turn 2"]')
    if not any(t.strip() for t in turns):
        raise InputError(f"{field} is empty")
    return turns


def battle_frame(prompt: list[str], response_a: list[str], response_b: list[str], row_id: str = "served"):
    """One battle in the loader's row schema (data.load_battles), as the models read it."""
    counts = {"prompt": len(prompt), "response A": len(response_a), "response B": len(response_b)}
    if len(set(counts.values())) > 1:
        raise InputError("the turn counts differ: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    chars = sum(len(t) for t in prompt + response_a + response_b)
    if chars > MAX_CHARS:
        raise InputError(f"the texts have {chars:,} characters, more than this page takes ({MAX_CHARS:,})")
    return pd.DataFrame(
        {
            "id": [row_id],
            "prompt": [list(prompt)],
            "response_a": [list(response_a)],
            "response_b": [list(response_b)],
            "model_a": [""],
            "model_b": [""],
            "label": np.array([-1], dtype=np.int8),
            "source": ["served"],
        }
    )


def form_texts(row) -> tuple[str, dict[str, str]]:
    """A row's texts as the form shows them: the text format when it reads back exactly, else JSON lists."""
    lists = {f: list(row[f]) for f, _ in FIELDS}
    clean = all(
        "\r" not in t and not any(line.strip() == SEPARATOR for line in t.split("\n"))
        for v in lists.values()
        for t in v
    )
    if clean:
        return "text", {f: ("\n" + SEPARATOR + "\n").join(v) for f, v in lists.items()}
    return "json", {f: json.dumps(v, ensure_ascii=False) for f, v in lists.items()}
