"""LMSYS Chatbot Arena human preference prediction."""

import os as _os

# Spinning OpenMP threads (libgomp's default) make xgboost/lightgbm 10-40x slower as soon as the CPU is shared
# (20 xgboost rounds: 1.5 s passive vs 58 s active, 2 threads on a loaded 2-core box). libgomp reads this once,
# when the first OpenMP library loads (sklearn, xgboost, lightgbm, torch), so it is set at package import.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
