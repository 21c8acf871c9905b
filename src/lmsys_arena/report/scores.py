"""The scoring sections: ``headline`` (log loss, accuracy), ``calibration`` (reliability, temperature) and
``ties`` (the calibration of P(tie))."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmsys_arena.metrics import accuracy, log_loss
from lmsys_arena.predictions import PROB_COLS, frame_logprobs
from lmsys_arena.report.charts import figure, img, note, table
from lmsys_arena.report.frames import CLASSES, RunView

TEMPERATURES = np.round(np.linspace(0.5, 2.0, 31), 4)  # the blend temperature grid (ensemble.combine)


def loss_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    return log_loss(y, p) if len(y) else float("nan")


def headline(views: list[RunView]) -> str:
    rows = []
    for v in views:
        y, p = v.y, v.p
        r = {
            "run": v.name,
            "family": v.family,
            "rows": len(y),
            "folds": ",".join(str(int(f)) for f in sorted(v.oof["fold"].unique())),
            "log loss": log_loss(y, p),
            "accuracy": accuracy(y, p),
        }
        for c, cname in enumerate(CLASSES):
            r[f"log loss | {cname}"] = loss_or_nan(y[y == c], p[y == c])
        for c, cname in enumerate(CLASSES):
            r[f"pred {cname}"] = float(p[:, c].mean())
            r[f"true {cname}"] = float(np.mean(y == c))
        rows.append(r)
    df = pd.DataFrame(rows)
    parts = [
        note(
            "log loss and accuracy on each run's own OOF rows, as `make score` reports them (metrics.log_loss: "
            "Kaggle's metric); per-class log loss is the mean −log p(true class) over the rows of that class; "
            "pred/true: the mean predicted probability of each class vs its share of the rows."
        ),
        table(df, 6, "headline-table"),
    ]
    common = _common_ids(views)
    if len(views) > 1 and common is not None:
        ids = sorted(common)
        crow = []
        for v in views:
            sub = v.oof.set_index("id").loc[ids]
            y, p = sub["label"].to_numpy().astype(int), sub[PROB_COLS].to_numpy(dtype=np.float64)
            crow.append({"run": v.name, "rows": len(y), "log loss": log_loss(y, p), "accuracy": accuracy(y, p)})
        parts += ["<h3>On the rows every run has</h3>", table(pd.DataFrame(crow), 6)]
    fig, (ax,) = figure(size=(7.5, 3.4))
    width = 0.8 / (len(views) + 1)
    x = np.arange(3)
    ax.bar(x, [np.mean(views[0].y == c) for c in range(3)], width, color="#888", label="observed (first run's rows)")
    for i, v in enumerate(views):
        ax.bar(x + (i + 1) * width, v.p.mean(axis=0), width, color=v.color, label=f"{v.name} predicted")
    ax.set_xticks(x + width * len(views) / 2, CLASSES)
    ax.set_ylabel("rate")
    ax.set_title("predicted vs observed class rates")
    ax.legend(fontsize=8)
    parts.append(img(fig, "class rates"))
    return "".join(parts)


def _common_ids(views: list[RunView]) -> set | None:
    """The ids all runs share, when they are not all the same set (None otherwise or when there are none)."""
    sets = [set(v.oof["id"]) for v in views]
    common = set.intersection(*sets)
    if not common or all(s == common for s in sets):
        return None
    return common


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[pd.DataFrame, float]:
    """(per-bin mean prediction / observed rate / rows of a binary event, expected calibration error)."""
    edges = np.linspace(0, 1, bins + 1)
    b = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    df = (
        pd.DataFrame({"bin": b, "p": p, "y": y.astype(float)})
        .groupby("bin")
        .agg(pred=("p", "mean"), observed=("y", "mean"), rows=("p", "size"))
    )
    ece = float((df["rows"] * (df["pred"] - df["observed"]).abs()).sum() / max(len(p), 1))
    return df, ece


def temperature_curve(y: np.ndarray, logp: np.ndarray, temperatures=TEMPERATURES) -> pd.Series:
    """Log loss of ``log_softmax(T * log p)`` over T (the blend temperature of ensemble.combine)."""
    from lmsys_arena.ensemble import combine

    return pd.Series([log_loss(y, np.exp(combine([logp], [1.0], float(t)))) for t in temperatures], index=temperatures)


def best_temperature(y: np.ndarray, logp: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    from lmsys_arena.ensemble import T_BOUNDS, combine

    res = minimize_scalar(lambda t: log_loss(y, np.exp(combine([logp], [1.0], t))), bounds=T_BOUNDS, method="bounded")
    return float(res.x)


def calibration(views: list[RunView]) -> str:
    fig, axes = figure(ncols=3, size=(3.6, 3.4))
    ece_rows, t_rows = [], []
    for v in views:
        y, p = v.y, v.p
        r = {"run": v.name}
        for c, ax in enumerate(axes):
            df, ece = reliability(y == c, p[:, c])
            shown = df[df["rows"] >= min(5, len(y))]  # the ECE counts every bin; the chart skips near-empty ones
            ax.plot(shown["pred"], shown["observed"], "o-", color=v.color, label=v.name, ms=4)
            r[f"ECE {CLASSES[c]}"] = ece
        conf = p.max(axis=1)
        r["ECE top-label"] = reliability(p.argmax(axis=1) == y, conf)[1]
        ece_rows.append(r)
        logp = frame_logprobs(v.oof)
        t = best_temperature(y, logp)
        from lmsys_arena.ensemble import combine

        t_rows.append(
            {
                "run": v.name,
                "log loss T=1": log_loss(y, p),
                "best T": t,
                "log loss at best T": log_loss(y, np.exp(combine([logp], [1.0], t))),
            }
        )
    for c, ax in enumerate(axes):
        ax.plot([0, 1], [0, 1], ":", color="#999")
        ax.set_title(f"P({CLASSES[c]})")
        ax.set_xlabel("predicted")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("observed")
    axes[0].legend(fontsize=8)
    tdf = pd.DataFrame(t_rows)
    tdf["gain"] = tdf["log loss T=1"] - tdf["log loss at best T"]
    fig2, (ax,) = figure(size=(6.4, 3.2))
    for v in views:
        curve = temperature_curve(v.y, frame_logprobs(v.oof))
        ax.plot(curve.index, curve.to_numpy(), color=v.color, label=v.name)
    ax.axvline(1.0, ls=":", color="#999")
    ax.set_xlabel("temperature T (log_softmax(T · log p))")
    ax.set_ylabel("OOF log loss")
    ax.legend(fontsize=8)
    return "".join(
        [
            note(
                "Reliability: OOF rows binned by the predicted probability of each class (10 equal-width bins, the "
                "chart shows bins of 5 rows or more); on the diagonal a bin's mean prediction equals the share of "
                "its rows with that outcome. ECE: the "
                "rows-weighted mean |predicted − observed| over the bins (top-label: the argmax's probability vs "
                "accuracy)."
            ),
            img(fig, "reliability curves"),
            table(pd.DataFrame(ece_rows)),
            note(
                "Temperature, as `make ensemble` fits it (ensemble.combine): p ∝ exp(T · log p). T > 1 sharpens, "
                "T < 1 softens; a best T far from 1 says the run is under- or over-confident, and a blend's "
                "temperature would recover the gain shown."
            ),
            img(fig2, "log loss vs temperature"),
            table(tdf),
        ]
    )


def ties(views: list[RunView], q: int = 8) -> str:
    rows = []
    fig, (ax,) = figure(size=(6.0, 3.6))
    top = 0.0
    for v in views:
        pt = v.p[:, 2]
        edges = np.unique(np.quantile(pt, np.linspace(0, 1, q + 1)))
        b = np.clip(np.searchsorted(edges, pt, side="right") - 1, 0, max(len(edges) - 2, 0))
        df = (
            pd.DataFrame({"b": b, "p": pt, "tie": (v.y == 2).astype(float)})
            .groupby("b")
            .agg(rows=("p", "size"), lo=("p", "min"), hi=("p", "max"), pred=("p", "mean"), observed=("tie", "mean"))
        )
        for _, r in df.iterrows():
            rows.append(
                {
                    "run": v.name,
                    "P(tie) range": f"{r['lo']:.3f}–{r['hi']:.3f}",
                    "rows": int(r["rows"]),
                    "mean predicted P(tie)": r["pred"],
                    "observed tie rate": r["observed"],
                }
            )
        ax.plot(df["pred"], df["observed"], "o-", color=v.color, label=v.name)
        top = max(top, df["pred"].max(), df["observed"].max())
    top = min(1.0, top * 1.1 + 0.02)
    ax.plot([0, top], [0, top], ":", color="#999")
    ax.set_xlabel("mean predicted P(tie) in bucket")
    ax.set_ylabel("observed tie rate")
    ax.legend(fontsize=8)
    return "".join(
        [
            note(
                f"OOF rows in {q} buckets of equal size by predicted P(tie): the bucket's mean prediction vs its share "
                "of ties. On the diagonal the tie probability is calibrated; a flat curve means the run cannot tell "
                "ties apart."
            ),
            img(fig, "tie calibration"),
            table(pd.DataFrame(rows)),
        ]
    )
