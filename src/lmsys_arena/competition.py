"""The competition-layout data folder (train.csv, test.csv, sample_submission.csv) and where it is found."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.battles import load_battles
from lmsys_arena.cells import DataError
from lmsys_arena.targets import CLASS_NAMES

log = logging.getLogger("lmsys_arena.data")  # the data layer's name: log lines read as before the split

COMPETITION_NAME = "lmsys-chatbot-arena"  # Kaggle's slug, and the folder name of the real data in input/


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
        from lmsys_arena.metrics import SubmissionError, read_submission  # lazy: metrics imports the data layer

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
        return _duplicate_id_problem(path, ids) or self._id_mismatch_problem(path, ids, test_ids)

    def _id_mismatch_problem(self, path: Path, ids: pd.Series, test_ids) -> str | None:
        """Which ids of sample_submission.csv (``ids``) and test.csv differ, if any."""
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


def _duplicate_id_problem(path: Path, ids: pd.Series) -> str | None:
    """The first id written twice in ``path`` (with both CSV records), if any."""
    dup = ids.duplicated(keep="first").to_numpy()
    if not dup.any():
        return None
    i = int(np.argmax(dup))
    first = int(np.argmax((ids == ids.iat[i]).to_numpy()))
    return f"{path}: duplicate id {ids.iat[i]!r} at CSV record {i + 2} (first at CSV record {first + 2})"
