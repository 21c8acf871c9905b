"""The sections about training: ``feature-importance`` (GBDT runs) and ``curves`` (``train.report_to``)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from lmsys_arena.report.charts import figure, img, note, table
from lmsys_arena.report.frames import COLORS, RunView


def feature_importance(views: list[RunView], top: int = 20) -> str:
    parts = []
    for v in views:
        if v.importance is None:
            parts.append(note(f"{v.name}: {v.importance_note or 'no feature importance'}"))
            continue
        imp = v.importance.head(top)
        fig, (a1, a2) = figure(ncols=2, size=(4.6, 0.28 * len(imp) + 1.2))
        names = [f[:28] for f in imp["feature"]]
        y = np.arange(len(imp))
        a1.barh(y, imp["mean |SHAP|"], color=v.color)
        a1.set_yticks(y, names, fontsize=7)
        a1.invert_yaxis()
        a1.set_title("mean |SHAP|")
        a2.barh(y, imp["gain share"], color="#888")
        a2.set_yticks(y, names, fontsize=7)
        a2.invert_yaxis()
        a2.set_title("gain share")
        parts += [f"<h3>{html.escape(v.name)}</h3>", note(v.importance_note), img(fig, f"{v.name} importance"),
                  table(imp)]  # fmt: skip
    return "".join(parts)


def curves(views: list[RunView]) -> str:
    found, notes = {}, []
    try:
        from lmsys_arena import curves as curves_mod
    except ImportError:
        return note("no curves recorded (this install has no lmsys_arena.curves)")
    for v in views:
        try:
            scalars = curves_mod.read_scalars(v.source.path)
        except Exception as e:  # noqa: BLE001 - a missing reader library or a bad file: the report goes on
            notes.append(f"{v.name}: curves not read ({type(e).__name__}: {e})")
            continue
        if scalars:
            found[v.name] = (v, scalars)
        else:
            notes.append(f"{v.name}: no curves recorded (train with SET=train.report_to=tensorboard)")
    if not found:
        return note("no curves recorded: " + "; ".join(notes) if notes else "no curves recorded")
    figs, last = [], []
    styles = ("-", "--", ":", "-.")
    for v, scalars in found.values():  # one figure per run: GBDT rounds and LLM steps are not one axis
        tags = sorted({t for fold in scalars.values() for t in fold})
        ncols = min(3, len(tags))
        fig, axes = figure(ncols=ncols, nrows=-(-len(tags) // ncols), size=(4.2, 2.8))
        for ax, tag in zip(axes, tags):
            for k, (fold, series) in enumerate(scalars.items()):
                pts = series.get(tag)
                if not pts:
                    continue
                steps, values = zip(*pts)
                ax.plot(steps, values, styles[k % 4], color=COLORS[k % len(COLORS)], lw=1, ms=3,
                        marker="o" if len(pts) < 5 else None, label=fold)  # fmt: skip
                if tag.startswith("valid/"):
                    last.append({"run": v.name, "fold": fold, "tag": tag, "last step": steps[-1], "last": values[-1],
                                 "best": min(values)})  # fmt: skip
            ax.set_title(tag, fontsize=9)
            ax.set_xlabel("step" if v.family != "gbdt" else "boosting round")
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.legend(fontsize=6)
        for ax in axes[len(tags) :]:
            ax.set_visible(False)
        fig.suptitle(v.name, fontsize=10)
        figs.append(img(fig, f"{v.name} training curves"))
    parts = [
        note(
            "The scalars each fold wrote with train.report_to (lmsys_arena.curves.read_scalars: one line per run "
            "and fold). GBDT: train/valid log loss per boosting round; LLM: train loss, learning rates, tokens/s per "
            "log step and the validation log loss at the end."
        ),
        *figs,
    ]
    if last:
        parts.append(table(pd.DataFrame(last)))
    return "".join(parts + [note(n) for n in notes])
