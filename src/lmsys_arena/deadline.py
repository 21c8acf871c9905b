"""A wall-clock deadline shared by long inference steps (the Kaggle kernel's time guard).

``LMSYS_DEADLINE`` holds a Unix time; past it, inference stops scoring new batches and returns
NaN logits for the rows it did not reach, which the caller fills from a fallback model.
"""

from __future__ import annotations

import os
import time


def deadline() -> float | None:
    v = os.environ.get("LMSYS_DEADLINE")
    return float(v) if v else None


def deadline_passed() -> bool:
    d = deadline()
    return d is not None and time.time() >= d


def set_deadline(seconds_from_now: float) -> float:
    d = time.time() + seconds_from_now
    os.environ["LMSYS_DEADLINE"] = str(d)
    return d
