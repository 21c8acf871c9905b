"""The bias sections: ``position-bias`` (both orders), ``verbosity-bias`` (lengths, turns) and ``model-identity``
(win rates per model name)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmsys_arena.metrics import log_loss
from lmsys_arena.report.charts import figure, img, note, table
from lmsys_arena.report.frames import RunView
from lmsys_arena.report.scores import loss_or_nan
from lmsys_arena.swap import unswap

RATIO_EDGES = (1.0, 1.1, 1.25, 1.5, 2.0, 3.0, np.inf)  # longer / shorter response length (characters)


def position_bias(views: list[RunView]) -> str:
    rows, notes = [], []
    fig, (ax1, ax2) = figure(ncols=2, size=(5.0, 3.4))
    labels = []
    for i, v in enumerate(views):
        if v.orders is None:
            notes.append(f"{v.name}: {v.orders_note or 'no per-order predictions'}")
            continue
        y = v.y
        ab = v.orders["ab"]
        ok = np.isfinite(ab).all(axis=1)
        r = {
            "run": v.name,
            "rows": int(ok.sum()),
            "pred P(first wins) A|B": float(ab[ok, 0].mean()),
            "observed P(A wins)": float(np.mean(y[ok] == 0)),
            "pred P(second wins) A|B": float(ab[ok, 1].mean()),
            "observed P(B wins)": float(np.mean(y[ok] == 1)),
        }
        ba = v.orders.get("ba")
        if ba is not None:
            both = ok & np.isfinite(ba).all(axis=1)
            back = unswap(ba[both])  # the B|A prediction read in the A|B order
            r.update(
                {
                    "pred P(first wins) B|A": float(ba[both, 0].mean()),
                    # the order-averaged excess of P(first wins) over the observed rates: the position effect
                    "first-position bias": float(
                        (ab[both, 0].mean() - np.mean(y[both] == 0) + ba[both, 0].mean() - np.mean(y[both] == 1)) / 2
                    ),
                    "argmax changes": float(np.mean(ab[both].argmax(axis=1) != back.argmax(axis=1))),
                    "mean |Δp|": float(np.abs(ab[both] - back).mean()),
                    "mean |Δp(A wins)|": float(np.abs(ab[both, 0] - back[:, 0]).mean()),
                    "log loss A|B": log_loss(y[both], ab[both]),
                    "log loss B|A": log_loss(y[both], back),
                }
            )
            ax2.hist(ab[both, 0] - back[:, 0], bins=30, alpha=0.55, color=v.color, label=v.name)
        if v.orders.get("consistency") is not None:
            r["order consistency"] = v.orders["consistency"]
        if v.orders_note:
            notes.append(f"{v.name}: {v.orders_note}")
        rows.append(r)
        labels.append(v.name)
        # predicted minus observed P(first response wins): in the A|B order the first is A, in the B|A order B
        vals = [
            r["pred P(first wins) A|B"] - r["observed P(A wins)"],
            r.get("pred P(first wins) B|A", np.nan) - r["observed P(B wins)"],
        ]
        ax1.bar(np.arange(2) + i * 0.8 / len(views), vals, 0.8 / len(views), color=v.color, label=v.name)
    if not rows:
        return note("no run has per-order predictions: " + "; ".join(notes))
    ax1.set_xticks(np.arange(2) + 0.4 - 0.4 / len(views), ["A|B order", "B|A order"])
    ax1.axhline(0, color="#999", lw=0.8)
    ax1.set_title("P(first wins): predicted − observed")
    ax1.legend(fontsize=8)
    ax2.set_title("Δ P(A wins): A|B minus B|A (read as A|B)")
    ax2.set_xlabel("Δp")
    if ax2.has_data():
        ax2.legend(fontsize=8)
    return "".join(
        [
            note(
                "Each run's fold models on their own OOF rows in both orders, without swap-TTA (LLM: "
                "fold<k>/valid_raw.npz; GBDT: the fold model on swap.swap_features). A position-blind model "
                "predicts P(first wins) in the B|A order equal to P(second wins) in the A|B order; the chart "
                "shows predicted − observed P(first response wins) in each order: both above 0, the run favours "
                "the first position (both below: the second), opposite signs a lean towards A or B whatever the "
                "order; 'first-position bias' is their mean; "
                "'argmax changes' is the share of rows whose predicted class changes when the responses swap, "
                "|Δp| the mean absolute change of the three probabilities (read in the A|B order). Order "
                "consistency: metrics.order_consistency of the A−B margins (1: the margin follows the texts)."
            ),
            table(pd.DataFrame(rows)),
            img(fig, "position bias"),
            *[note(n) for n in notes],
        ]
    )


def _bucket_losses(views: list[RunView], key: str, buckets) -> pd.DataFrame:
    out = []
    for v in views:
        b = buckets(v.oof)
        for name, idx in b.groupby(b, observed=True).groups.items():
            pos = v.oof.index.get_indexer(idx)
            out.append(
                {"bucket": str(name), "run": v.name, "rows": len(pos), "log loss": loss_or_nan(v.y[pos], v.p[pos])}
            )
    df = pd.DataFrame(out)
    return df.assign(by=key)


def _quantile_edges(views: list[RunView], fn, q: int = 5) -> np.ndarray:
    allv = pd.concat([v.oof[["id"]].assign(x=fn(v.oof)) for v in views]).drop_duplicates("id")["x"]
    edges = np.unique(np.quantile(allv.to_numpy(dtype=float), np.linspace(0, 1, q + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def _cut(x: pd.Series, edges: np.ndarray) -> pd.Series:
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        labels.append(f"≤{hi:,.0f}" if lo == -np.inf else (f">{lo:,.0f}" if hi == np.inf else f"{lo:,.0f}–{hi:,.0f}"))
    return pd.cut(x, edges, labels=labels, right=True)


def verbosity_bias(views: list[RunView]) -> str:
    ratio_rows = []
    fig, axes = figure(ncols=2, nrows=2, size=(5.0, 3.2))
    ax = axes[0]
    rlabels = [f"{lo:g}–{hi:g}" if hi != np.inf else f">{lo:g}" for lo, hi in zip(RATIO_EDGES[:-1], RATIO_EDGES[1:])]
    for v in views:
        la, lb = v.oof["len_a"].to_numpy(), v.oof["len_b"].to_numpy()
        differ = la != lb
        longer = np.where(la > lb, 0, 1)
        ratio = (np.maximum(la, lb) + 1) / (np.minimum(la, lb) + 1)
        b = pd.cut(ratio, RATIO_EDGES, labels=rlabels, right=False)
        y, p = v.y, v.p
        pred, obs = [], []
        for lab in rlabels:
            m = differ & (np.asarray(b) == lab)
            r = {
                "run": v.name,
                "longer/shorter": lab,
                "rows": int(m.sum()),
                "pred P(longer wins)": float(p[m, longer[m]].mean()) if m.any() else np.nan,
                "observed P(longer wins)": float(np.mean(y[m] == longer[m])) if m.any() else np.nan,
                "pred P(tie)": float(p[m, 2].mean()) if m.any() else np.nan,
                "observed P(tie)": float(np.mean(y[m] == 2)) if m.any() else np.nan,
            }
            ratio_rows.append(r)
            pred.append(r["pred P(longer wins)"])
            obs.append(r["observed P(longer wins)"])
        x = np.arange(len(rlabels))
        ax.plot(x, pred, "o-", color=v.color, label=f"{v.name} predicted")
        ax.plot(x, obs, "s--", color=v.color, alpha=0.6, label=f"{v.name} observed")
    ax.set_xticks(np.arange(len(rlabels)), rlabels, fontsize=8)
    ax.set_xlabel("length ratio longer/shorter (characters)")
    ax.set_title("P(longer response wins)")
    ax.legend(fontsize=7)
    dims = [
        ("response length (A+B chars)", lambda d: d["len_a"] + d["len_b"]),
        ("prompt length (chars)", lambda d: d["len_prompt"]),
    ]
    tables = []
    for (key, fn), ax in zip(dims, axes[1:3]):
        edges = _quantile_edges(views, fn)
        df = _bucket_losses(views, key, lambda d, fn=fn, edges=edges: _cut(fn(d), edges))
        _bucket_bars(ax, df, views, key)
        tables.append(df)
    turns = lambda d: pd.Series(np.where(d["turns"] >= 4, "4+", d["turns"].astype(str)), index=d.index)
    df = _bucket_losses(views, "turns", turns)
    _bucket_bars(axes[3], df, views, "number of turns")
    tables.append(df)
    long = pd.concat(tables, ignore_index=True)
    wide = long.pivot_table(index=["by", "bucket"], columns="run", values=["rows", "log loss"], sort=False)
    wide.columns = [f"{a} {b}" for a, b in wide.columns]
    for c in [c for c in wide.columns if c.startswith("rows ")]:
        wide[c] = wide[c].round().astype("Int64")
    return "".join(
        [
            note(
                "Rows where the two responses differ in length (characters over all turns), by how much longer "
                "the longer one is: the predicted probability that the longer one wins vs how often it did (a tie "
                "is not a win). Below: OOF log loss by bucket of total response length and prompt length "
                "(quantiles of the rows of all runs) and by number of turns."
            ),
            img(fig, "verbosity bias"),
            table(pd.DataFrame(ratio_rows)),
            table(wide.reset_index()),
        ]
    )


def _bucket_bars(ax, df: pd.DataFrame, views: list[RunView], title: str) -> None:
    buckets = list(dict.fromkeys(df["bucket"]))
    x = np.arange(len(buckets))
    w = 0.8 / len(views)
    for i, v in enumerate(views):
        d = df[df["run"] == v.name].set_index("bucket").reindex(buckets)
        ax.bar(x + i * w, d["log loss"].to_numpy(dtype=float), w, color=v.color, label=v.name)
    ax.set_xticks(x + 0.4 - w / 2, buckets, fontsize=7, rotation=20)
    ax.set_title(f"log loss by {title}")
    ax.legend(fontsize=7)


def model_identity(views: list[RunView], top: int = 20, min_battles: int = 10) -> str:
    per_run = []
    for v in views:
        d = v.oof
        named = (d["model_a"].astype(str) != "") & (d["model_b"].astype(str) != "")
        if not named.any():
            continue
        d, p = d[named.to_numpy()], v.p[named.to_numpy()]
        y = d["label"].to_numpy()
        long = pd.DataFrame(
            {
                "model": np.concatenate([d["model_a"].to_numpy(str), d["model_b"].to_numpy(str)]),
                "won": np.concatenate([y == 0, y == 1]).astype(float),
                "pred": np.concatenate([p[:, 0], p[:, 1]]),
            }
        )
        g = long.groupby("model").agg(battles=("won", "size"), observed=("won", "mean"), predicted=("pred", "mean"))
        g["gap"] = g["predicted"] - g["observed"]
        per_run.append((v, g))
    if not per_run:
        return note("no OOF row carries model names (model_a / model_b are empty): nothing to show")
    threshold = min(min_battles, max(int(g["battles"].max()) for _v, g in per_run))
    for _v, g in per_run:  # a run's figures of a model with too few battles are left out (noise, not a gap)
        g.loc[g["battles"] < threshold, ["observed", "predicted", "gap"]] = np.nan
    wide = pd.concat({v.name: g for v, g in per_run}, axis=1)
    gaps = wide.xs("gap", axis=1, level=1).abs().max(axis=1)
    wide = wide[gaps.notna()]
    order = gaps[gaps.notna()].sort_values(ascending=False).index
    wide = wide.loc[order]
    shown = wide.head(top)
    flat = shown.copy()
    flat.columns = [f"{b} {a}" if len(per_run) > 1 else b for a, b in shown.columns]
    flat = flat.rename_axis("model").reset_index()
    for c in [c for c in flat.columns if c.startswith("battles")]:
        flat[c] = flat[c].fillna(0).astype(int)  # a model absent from a run's rows: 0 battles there
    n = min(15, len(shown))
    fig, (ax,) = figure(size=(7.5, 0.35 * n + 1.2))
    ypos = np.arange(n)
    h = 0.8 / (len(per_run) + 1)
    first = per_run[0][0].name
    ax.barh(ypos, shown[first]["observed"].to_numpy()[:n], h, color="#888", label=f"observed ({first}'s rows)")
    for i, (v, _g) in enumerate(per_run):
        ax.barh(ypos + (i + 1) * h, shown[v.name]["predicted"].to_numpy()[:n], h, color=v.color, label=f"{v.name}")
    ax.set_yticks(ypos + h * len(per_run) / 2, [str(m)[:32] for m in shown.index[:n]], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("win rate (a tie is not a win)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return "".join(
        [
            note(
                f"Each model's share of its battles won (observed) vs the mean predicted probability that it wins, "
                f"over the OOF rows that name both models; a run's figures for models with at least {threshold} "
                "battles in its rows, the largest |predicted − observed| (over the runs) first. A large gap says "
                "the run misreads what makes this model's answers win (or lose)."
            ),
            img(fig, "model win rates"),
            table(flat),
        ]
    )
