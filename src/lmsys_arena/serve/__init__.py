"""A local web page that scores one battle with a run's models (``make serve RUN=<run> [PORT=7860]``).

    python -m lmsys_arena serve --run xgb-sample [--port 7860] [--host 127.0.0.1]

A FastAPI app with one server-rendered HTML form (no JavaScript): paste a prompt and two responses, or
pick a row of the run's train data by id, and read P(A wins), P(B wins), P(tie) as ``make infer`` computes
them (the run's models averaged, swap-TTA), both orders' raw predictions (A|B, and B|A read back in the A|B
order) and, for a GBDT run, the features with the largest contributions (``pred_contribs``). The models are
loaded once at startup; bad input is a message on the page (``id="error"``), never a traceback; every request
is logged. Needs the ``serve`` extra (fastapi, uvicorn, python-multipart). docs/serve.md has the details.

One module a job: :mod:`.battle` (form fields -> a battle row, and back), :mod:`.predictors` (a run's models
loaded once, both orders scored), :mod:`.service` (a run's models, train rows and OOF; one form -> the page's
context), :mod:`.page` (the HTML), :mod:`.server` (the FastAPI app and :func:`serve`).
"""

from lmsys_arena.serve.server import serve

__all__ = ["serve"]
