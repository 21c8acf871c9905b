"""Options every model config has, whatever its family (each family's schema extends :class:`RunOptions`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmsys_arena.schema import option
from lmsys_arena.tune.settings import TuneSettings


@dataclass
class RunOptions:
    family: str = option("", "the model family (families.py): gbdt or llm")
    name: str = option("", "the experiment's name (default: the config file's name)")
    tta: bool = option(True, "swap-TTA: predict A|B and B|A, unswap the second, average the probabilities")
    tune: TuneSettings = option(factory=TuneSettings, help="how `make tune` runs a study of this config")
    search_space: dict[str, dict[str, Any]] = option(
        factory=dict,
        help="Optuna search space: dotted config key -> {type: float|int|categorical, low, high, log, "
        "step, choices, times: <key>} (docs/tuning.md)",
    )
