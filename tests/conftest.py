import os
from pathlib import Path

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
