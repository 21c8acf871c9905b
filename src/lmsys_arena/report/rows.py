"""The sections about rows: ``source`` (OOF, labelled test and EXTRA rows by data source) and
``confident-errors`` (the wrong predictions with the highest probability, with their texts)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.metrics import accuracy, log_loss
from lmsys_arena.predictions import PROB_COLS
from lmsys_arena.report.charts import figure, img, note, table
from lmsys_arena.report.frames import CLASSES, RunView


def source(views: list[RunView]) -> str:
    from lmsys_arena.data import load_battles

    rows, notes = [], []
    extra_rates = {}
    for v in views:
        for src, idx in v.oof.groupby("source").groups.items():
            pos = v.oof.index.get_indexer(idx)
            rows.append(_rates_row(v.name, f"OOF: {src}", v.y[pos], v.p[pos]))
        if v.test is not None:
            y, p = v.test["label"].to_numpy().astype(int), v.test[PROB_COLS].to_numpy(dtype=np.float64)
            rows.append(_rates_row(v.name, "test (labelled)", y, p))
        if v.extra and v.extra not in extra_rates:
            try:
                y = load_battles(v.extra, require_labels=True, source="extra", skip_bad=True)["label"].to_numpy()
                extra_rates[v.extra] = y
            except Exception as e:  # noqa: BLE001 - the EXTRA file may have moved
                notes.append(f"{v.name}: EXTRA file {v.extra} not read ({type(e).__name__}: {e})")
        n_extra = int((v.oof["source"] != "train").sum())
        what = f"trained with EXTRA={v.extra}" if v.extra else "trained without EXTRA rows"
        if not n_extra:
            notes.append(
                f"{v.name}: {what}; its OOF rows are all competition rows (no EXTRA rows are in the OOF: EXTRA rows "
                "are train-only and never validated on)"
            )
    df = pd.DataFrame(rows)
    for path, y in extra_rates.items():
        r = {"run": "–", "rows of": f"EXTRA {Path(path).name} (observed only)", "rows": len(y)}
        r.update({f"true {c}": float(np.mean(y == i)) for i, c in enumerate(CLASSES)})
        df = pd.concat([df, pd.DataFrame([r])], ignore_index=True)
    fig, (ax,) = figure(size=(7.5, 3.2))
    x = np.arange(3)
    color = {v.name: v.color for v in views}
    bars = []  # (label, rates, colour, alpha): what each run predicted and observed on its rows, then EXTRA
    for _, r in df.iterrows():
        if r["run"] in color:
            bars.append(
                (f"{r['run']}, {r['rows of']}: predicted", [r[f"pred {c}"] for c in CLASSES], color[r["run"]], 1)
            )
            bars.append(
                (f"{r['run']}, {r['rows of']}: observed", [r[f"true {c}"] for c in CLASSES], color[r["run"]], 0.4)
            )
        else:
            bars.append((f"{r['rows of']}", [r[f"true {c}"] for c in CLASSES], "#888", 1))
    w = 0.8 / len(bars)
    for i, (label, vals, col, alpha) in enumerate(bars):
        ax.bar(x + i * w, vals, w, label=label[:60], color=col, alpha=alpha)
    ax.set_xticks(x + 0.4 - w / 2, CLASSES)
    ax.set_title("class rates by source")
    ax.legend(fontsize=7)
    return "".join(
        [
            note(
                "OOF rows by their data source (the loader's source column), labelled test rows when test.csv "
                "has winner columns, and the class balance of each run's EXTRA file (train-only rows: no "
                "out-of-fold predictions exist for them)."
            ),
            table(df),
            img(fig, "class rates by source"),
            *[note(n) for n in notes],
        ]
    )


def _rates_row(run: str, what: str, y: np.ndarray, p: np.ndarray) -> dict:
    r = {"run": run, "rows of": what, "rows": len(y), "log loss": log_loss(y, p), "accuracy": accuracy(y, p)}
    r.update({f"pred {c}": float(p[:, i].mean()) for i, c in enumerate(CLASSES)})
    r.update({f"true {c}": float(np.mean(y == i)) for i, c in enumerate(CLASSES)})
    return r


def _cut_text(turns, lines: int = 6, chars: int = 400) -> str:
    text = "\n".join(t for t in turns)
    shown = "\n".join(text.splitlines()[:lines])[:chars]
    more = len(text) - len(shown)
    return html.escape(shown) + (f'<span class="more"> … (+{more:,} chars)</span>' if more > 0 else "")


def confident_errors(views: list[RunView], n: int = 8) -> str:
    parts = [
        note(
            f"Per run, the {n} OOF rows where its predicted class is wrong with the highest probability; texts cut "
            "to a few lines (all turns joined)."
        )
    ]
    for v in views:
        p, y = v.p, v.y
        wrong = np.flatnonzero(p.argmax(axis=1) != y)
        order = wrong[np.argsort(-p[wrong].max(axis=1), kind="stable")][:n]
        parts.append(f"<h3>{html.escape(v.name)}</h3>")
        if not len(order):
            parts.append(note("no errors"))
        for i in order:
            r = v.oof.iloc[i]
            probs = ", ".join(f"{c} {p[i, k]:.3f}" for k, c in enumerate(CLASSES))
            parts.append(
                '<div class="err">'
                f"<p><b>id {html.escape(str(r['id']))}</b> (fold {int(r['fold'])}): truth <b>{CLASSES[y[i]]}</b>, "
                f"predicted {probs}; A = {html.escape(str(r['model_a']) or '?')}, "
                f"B = {html.escape(str(r['model_b']) or '?')}</p>"
                f"<div class='cols'><div><h4>prompt</h4><pre>{_cut_text(r['prompt'])}</pre></div>"
                f"<div><h4>response A ({int(r['len_a']):,} chars)</h4><pre>{_cut_text(r['response_a'])}</pre></div>"
                f"<div><h4>response B ({int(r['len_b']):,} chars)</h4><pre>{_cut_text(r['response_b'])}</pre></div>"
                "</div></div>"
            )
    return "".join(parts)
