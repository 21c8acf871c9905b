"""One self-contained HTML report comparing runs on their out-of-fold rows (docs/report.md).

    make report RUNS="xgb-sample tiny-sample" [NAME=cmp]     # -> runs/<name>/report.html
    python -m lmsys_arena report --runs xgb-sample [--data input/sample] [--name NAME]

Sections (each a ``<section id=...>``): ``headline`` (log loss and accuracy as ``make score`` gives them),
``calibration``, ``position-bias``, ``verbosity-bias``, ``model-identity``, ``source``, ``ties``,
``confident-errors``, ``feature-importance`` (GBDT runs) and ``curves`` (``train.report_to``). Charts are
matplotlib PNGs embedded as base64 (the file opens offline), tables pandas ``to_html``. Every figure is
computed per run on that run's own OOF rows (a run trained on some folds only is read on those folds); the
headline adds the rows all runs share. The texts, model names and lengths come from the run's data folder
(``config.json`` "run": data; ``--data`` overrides it).

Modules: ``frames`` (RunView: a run's OOF rows with their texts), ``fold_models`` (both orders' predictions and
feature importance from the fold models), ``charts`` (figures, tables, notes), the sections ``scores``
(headline, calibration, ties), ``bias`` (position, verbosity, model identity), ``rows`` (source, confident
errors) and ``training`` (feature importance, curves), and ``html`` (the page and ``write_report``).
"""

from __future__ import annotations

from lmsys_arena.report.frames import with_lengths
from lmsys_arena.report.html import SECTIONS as SECTIONS
from lmsys_arena.report.html import cli as cli
from lmsys_arena.report.html import default_name, write_report
from lmsys_arena.report.rows import _cut_text as _cut_text
from lmsys_arena.report.scores import reliability, temperature_curve

__all__ = ["write_report", "default_name", "reliability", "temperature_curve", "with_lengths"]
