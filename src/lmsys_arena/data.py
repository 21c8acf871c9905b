"""Load Kaggle LMSYS arena CSVs into one tidy frame.

One loader for train, test and external files::

    python -c "from lmsys_arena.data import load_battles; print(load_battles('input/sample/train.csv'))"

Each row becomes:

    id          str    as written in the file (ints or hex strings, never reformatted: "007" stays "007")
    prompt      list[str]  one item per turn (JSON null -> "")
    response_a  list[str]
    response_b  list[str]
    model_a, model_b  str ("" when the file has no such column, e.g. test.csv)
    label       int8   0 = A wins, 1 = B wins, 2 = tie, -1 = unlabelled (test)
    source      str    "train", "test", "extra", "pseudo" or the file stem

Optional columns, only when the file has them (:data:`SOFT_COLS`, :data:`WEIGHT_COL`):

    soft_a, soft_b, soft_tie  float64  soft targets: P(A wins), P(B wins), P(tie), summing to 1; NaN on a
                                       row without them (its ``label`` is its target). A file with soft
                                       columns but no winner columns gets ``label`` = their argmax.
    weight      float64  the row's loss weight (set per source by the runner; absent or NaN: 1)

Text cells are JSON lists of strings/nulls. ``\\ud83d\\ude00``-style escapes are joined into
one character; lone surrogates (``\\ud83d`` alone, which cannot be encoded as UTF-8) become
U+FFFD. A cell that does not start with ``[`` is taken as one plain-text turn (counted), unless
the whole cell is a JSON object, number, ``true``, ``false`` or ``null`` (e.g. ``{"a": 1}`` or
``5``): that is a bad cell, not text.

Bad input raises :class:`DataError` naming the file, the row id (and CSV record) and the
column: missing column, a file with no data rows, empty or duplicate id, a ``[...]`` cell that
is not a JSON list of strings, a JSON object/number cell, an empty cell, winner columns that
are not one-hot. With ``skip_bad=True`` bad rows are dropped, counted and reported instead;
nothing is ever dropped silently. ``lenient_text=True`` (used for test files, where a failed
load means a failed Kaggle submission) takes any unparsable text cell as one plain-text turn
instead, counted (JSON object/number cells with a WARNING naming the first row id and column).

Labelled rows (train, extra) whose prompt and both responses are empty in every turn (null,
``""`` or whitespace) carry nothing to learn from: they are dropped with a WARNING (count and
first ids, also in the :class:`LoadReport`). Unlabelled (test) rows are always kept: every test
id needs a prediction.

Import the data layer from here (one path for every caller); the work is done in ``battles``
(:func:`load_battles`, the :class:`LoadReport`), ``cells`` (one CSV cell at a time, the header and id checks),
``targets`` (classes, soft targets, row weights), ``keys`` (a battle's identity by its texts), ``competition``
(the :class:`Competition` folder, :func:`default_data_dir`) and ``train_only`` (:func:`load_extra`,
:func:`load_pseudo`).
"""

from __future__ import annotations

from lmsys_arena.battles import PROGRESS_MIN_ROWS, LoadReport, load_battles
from lmsys_arena.cells import LABEL_COLUMNS, TEXT_COLUMNS, DataError, JSONValueCell, fix_surrogates, parse_turns
from lmsys_arena.competition import COMPETITION_NAME, Competition, default_data_dir
from lmsys_arena.keys import prompt_key, text_key
from lmsys_arena.targets import (
    CLASS_NAMES,
    SOFT_COLS,
    SOFT_SUM_TOL,
    WEIGHT_COL,
    row_weights,
    soft_targets,
    target_matrix,
)
from lmsys_arena.train_only import load_extra, load_pseudo

__all__ = [
    "load_battles",
    "LoadReport",
    "DataError",
    "JSONValueCell",
    "parse_turns",
    "fix_surrogates",
    "TEXT_COLUMNS",
    "LABEL_COLUMNS",
    "CLASS_NAMES",
    "SOFT_COLS",
    "WEIGHT_COL",
    "SOFT_SUM_TOL",
    "PROGRESS_MIN_ROWS",
    "soft_targets",
    "target_matrix",
    "row_weights",
    "text_key",
    "prompt_key",
    "COMPETITION_NAME",
    "Competition",
    "default_data_dir",
    "load_extra",
    "load_pseudo",
]
