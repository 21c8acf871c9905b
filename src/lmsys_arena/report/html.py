"""The page: the entry point (``write_report``, ``cli``) that loads the runs, builds each section and writes
``runs/<name>/report.html``."""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path

import pandas as pd

from lmsys_arena.report.bias import model_identity, position_bias, verbosity_bias
from lmsys_arena.report.frames import COLORS, RunView, load_view
from lmsys_arena.report.rows import confident_errors, source
from lmsys_arena.report.scores import calibration, headline, ties
from lmsys_arena.report.training import curves, feature_importance
from lmsys_arena.runs import RUNS_DIR, Run

log = logging.getLogger("lmsys_arena.report")  # the package's name: log lines read as before the split

SECTIONS = (
    ("headline", "Headline"),
    ("calibration", "Calibration"),
    ("position-bias", "Position bias"),
    ("verbosity-bias", "Verbosity bias"),
    ("model-identity", "Model identity"),
    ("source", "Source"),
    ("ties", "Ties"),
    ("confident-errors", "Confident errors"),
    ("feature-importance", "Feature importance"),
    ("curves", "Training curves"),
)


def default_name(runs: list[str]) -> str:
    return runs[0] if len(runs) == 1 else "report-" + "-".join(runs)


def write_report(
    runs: list[str],
    *,
    name: str | None = None,
    data: str | None = None,
    root: str | Path = RUNS_DIR,
    max_errors: int = 8,
    shap_rows: int = 400,
    seed: int = 0,
) -> Path:
    """Write ``<root>/<name>/report.html`` comparing ``runs`` (names of run folders in ``root``); returns its path."""
    from lmsys_arena.io import write_text

    if not runs:
        raise ValueError('report: no runs given (RUNS="<run> [<run> ...]")')
    if len(set(runs)) != len(runs):
        raise ValueError(f"report: a run is named twice in {runs}")
    t0 = time.time()
    root = Path(root)
    for r in runs:  # every name is checked before anything is read
        _check_run(root, r)
    texts: dict[str, pd.DataFrame] = {}
    views = [load_view(root, r, data, texts, shap_rows=shap_rows, seed=seed) for r in runs]
    for i, v in enumerate(views):
        v.color = COLORS[i % len(COLORS)]
    out = root / (name or default_name(runs)) / "report.html"
    page = render(views, max_errors=max_errors)
    write_text(out, page)
    log.info("wrote %s (%d runs, %.1f KB) in %.1fs", out, len(views), len(page) / 1024, time.time() - t0)
    return out


def cli(args) -> None:
    out = write_report(args.runs, name=args.name, data=args.data, max_errors=args.max_errors, shap_rows=args.shap_rows)
    print(f"{out}: report of {', '.join(args.runs)}")


def _check_run(root: Path, name: str) -> None:
    run = Run(root / name)
    if not run.exists():
        known = sorted(p.parent.name for p in root.glob("*/config.json")) if root.is_dir() else []
        raise FileNotFoundError(
            f"unknown run {name!r}: {run.path}/ has no config.json (runs in {root}/: "
            f"{', '.join(known) or 'none'}); train it (`make train RUN={name}`) or check the name"
        )


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
nav a{margin-right:12px} .note{color:#555;max-width:1100px}
table.t{border-collapse:collapse;font-size:12px;margin:8px 0} table.t th,table.t td{padding:3px 8px;
border-bottom:1px solid #e3e3e3;text-align:right} table.t th{background:#f5f5f5} img{max-width:100%}
.err{border:1px solid #ddd;border-radius:6px;padding:6px 10px;margin:10px 0}
.cols{display:grid;grid-template-columns:1fr 1fr 1fr;gap:10px} .cols h4{margin:2px 0}
pre{white-space:pre-wrap;word-break:break-word;background:#fafafa;padding:6px;font-size:12px;margin:0;max-height:16em;
overflow:auto} .more{color:#999}
"""


BUILDERS = {
    "headline": headline,
    "calibration": calibration,
    "position-bias": position_bias,
    "verbosity-bias": verbosity_bias,
    "model-identity": model_identity,
    "source": source,
    "ties": ties,
    "confident-errors": None,  # takes max_errors
    "feature-importance": feature_importance,
    "curves": curves,
}


def render(views: list[RunView], *, max_errors: int = 8) -> str:
    from lmsys_arena.versions import version_line

    names = ", ".join(v.name for v in views)
    body = []
    for sid, title in SECTIONS:
        t0 = time.time()
        build = BUILDERS[sid]
        content = confident_errors(views, max_errors) if build is None else build(views)
        body.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>')
        log.debug("report section %s: %.2fs", sid, time.time() - t0)
    runs_list = "".join(
        f"<li><b style='color:{v.color}'>{html.escape(v.name)}</b>: {html.escape(v.family)}, "
        f"{len(v.oof)} OOF rows, data {html.escape(str(v.data))}"
        + (f", EXTRA {html.escape(v.extra)}" if v.extra else "")
        + (f" (OOF of {html.escape(v.source.name)})" if v.source.path != v.run.path else "")
        + "".join(f"; {html.escape(n)}" for n in v.notes)
        + "</li>"
        for v in views
    )
    nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t in SECTIONS)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>report: {html.escape(names)}</title><style>{CSS}</style></head><body>"
        f"<h1>Runs report: {html.escape(names)}</h1>"
        f"<p class='note'>{html.escape(time.strftime('%Y-%m-%d %H:%M'))}, {html.escape(version_line())}; "
        "docs/report.md explains each section.</p>"
        f"<ul>{runs_list}</ul><nav>{nav}</nav>{''.join(body)}</body></html>\n"
    )
