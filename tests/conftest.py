import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "input" / "sample"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run a test inside a temporary project folder (runs/, folds/, submissions/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_small_competition(root: Path, n_rows: int, k: int = 2, seed: int = 42) -> tuple[Path, Path]:
    """``root/small/``: the first ``n_rows`` sample train rows + the official test files, and
    ``root/folds.csv`` (``k`` folds). Returns (data dir, folds file)."""
    from lmsys_arena.data import Competition
    from lmsys_arena.folds import make_folds

    data = root / "small"
    data.mkdir(parents=True)
    pd.read_csv(SAMPLE / "train.csv", dtype=str, keep_default_na=False).head(n_rows).to_csv(
        data / "train.csv", index=False
    )
    for f in ("test.csv", "sample_submission.csv"):
        shutil.copy(SAMPLE / f, data / f)
    make_folds(Competition(data).train(), k=k, seed=seed).to_csv(root / "folds.csv", index=False)
    return data, root / "folds.csv"


@pytest.fixture(scope="session")
def small_competition():
    """:func:`write_small_competition`, for module-scoped fixtures."""
    return write_small_competition


def write_llm_inputs(root: Path, n_rows: int) -> dict:
    """An LLM test module's inputs: :func:`write_small_competition` (2 folds) and a models folder."""
    data, folds = write_small_competition(root, n_rows)
    return {"data": str(data), "folds": str(folds), "models": str(root / "models")}


@pytest.fixture(scope="session")
def llm_inputs():
    """:func:`write_llm_inputs`, for module-scoped ``data`` fixtures (which :func:`llm_env` reads)."""
    return write_llm_inputs


@pytest.fixture
def llm_env(data, workdir, monkeypatch):
    """A RunSpec on the module's ``data`` fixture (:func:`llm_inputs`), backbones built in its models folder."""
    from lmsys_arena.run_inputs import RunSpec

    monkeypatch.setenv("LMSYS_MODELS_DIR", data["models"])
    return RunSpec(data=data["data"], folds_file=data["folds"], seed=42)
