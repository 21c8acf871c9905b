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
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.metrics import accuracy, log_loss, order_consistency, softmax
from lmsys_arena.runs import PROB_COLS, RUNS_DIR, Run, frame_logprobs
from lmsys_arena.swap import unswap

log = logging.getLogger(__name__)

CLASSES = ("A wins", "B wins", "tie")
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
RATIO_EDGES = (1.0, 1.1, 1.25, 1.5, 2.0, 3.0, np.inf)  # longer / shorter response length (characters)
TEMPERATURES = np.round(np.linspace(0.5, 2.0, 31), 4)  # the blend temperature grid (ensemble.combine)
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class RunView:
    """One run as the report reads it: its OOF rows joined with their texts, and what its family adds."""

    name: str
    run: Run  # the run asked for
    source: Run  # the run whose OOF rows and fold models stand for it (a derived run's fold run)
    family: str
    cfg: dict
    data: str | None
    extra: str | None
    oof: pd.DataFrame  # id, fold, label, p_*, logit_* + prompt, response_a/b, model_a/b, source, lengths
    test: pd.DataFrame | None = None  # labelled test rows with the run's test.parquet predictions
    orders: dict | None = None  # {"ab": (n, 3) probs as A|B, "ba": (n, 3) probs as B|A (own order) or None}
    orders_note: str = ""
    importance: pd.DataFrame | None = None  # feature, gain share, mean |SHAP|
    importance_note: str = ""
    color: str = COLORS[0]
    notes: list[str] = field(default_factory=list)

    @property
    def y(self) -> np.ndarray:
        return self.oof["label"].to_numpy().astype(np.int64)

    @property
    def p(self) -> np.ndarray:
        return self.oof[PROB_COLS].to_numpy(dtype=np.float64)


# --------------------------------------------------------------------------- entry point


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


# --------------------------------------------------------------------------- loading


def load_view(root: Path, name: str, data: str | None, texts: dict, *, shap_rows: int, seed: int) -> RunView:
    run = Run(root / name)
    source = run.oof_source()
    cfg = run.read_config()
    family = cfg.get("family", "?")
    data_dir, extra = _data_of(run, data)
    oof = source.read_oof(partial=True)
    if data_dir is None:
        raise FileNotFoundError(f"{run.path}: config.json names no data folder (a blend of blends?): pass --data")
    rows = _texts(data_dir, texts, skip_bad=bool((cfg.get("run") or {}).get("skip_bad")))
    joined = oof.merge(rows.drop(columns=["label"]), on="id", how="left", validate="one_to_one")
    missing = joined["prompt"].isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"{name}: {int(missing.sum())} of {len(oof)} OOF ids (e.g. {joined['id'][missing].iloc[0]!r}) are not in "
            f"{Path(data_dir) / 'train.csv'}: pass the run's data folder with --data (DATA=)"
        )
    view = RunView(name, run, source, family, cfg, data_dir, extra, joined)
    view.test = _labelled_test(run, data_dir)
    if family == "gbdt":
        _gbdt_extras(view, shap_rows, seed)
    elif family == "llm":
        _llm_orders(view)
        view.importance_note = "an LLM run: no feature importance (its inputs are tokens)"
    else:
        view.orders_note = f"a {family} run has no fold models of its own: no per-order predictions"
        view.importance_note = f"a {family} run: no feature importance of its own (see its members' reports)"
    return view


def _data_of(run: Run, data: str | None) -> tuple[str | None, str | None]:
    """(the data folder, the EXTRA file) of a run; a blend's are its first member's."""
    cfg = run.read_config()
    members = cfg.get("members") or []
    if members:
        d, e = _data_of(run.sibling(members[0]), None)
        return data or d, e
    spec = cfg.get("run") or {}
    return data or spec.get("data"), spec.get("extra")


def _texts(data_dir: str, cache: dict, skip_bad: bool) -> pd.DataFrame:
    """The train rows of ``data_dir`` (read once per report) with their lengths and turn counts."""
    from lmsys_arena.data import Competition

    if data_dir not in cache:
        comp = Competition(Path(data_dir))
        if not comp.train_csv.exists():
            raise FileNotFoundError(f"{comp.train_csv} not found: pass the run's data folder with --data (DATA=)")
        cache[data_dir] = with_lengths(comp.train(skip_bad=skip_bad))
    return cache[data_dir]


def with_lengths(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` + ``len_a``, ``len_b``, ``len_prompt`` (characters over all turns) and ``turns``."""
    chars = lambda col: rows[col].map(lambda turns: sum(len(t) for t in turns)).to_numpy(dtype=np.int64)
    return rows.assign(
        len_a=chars("response_a"),
        len_b=chars("response_b"),
        len_prompt=chars("prompt"),
        turns=rows["prompt"].map(len).to_numpy(dtype=np.int64),
    )


def _labelled_test(run: Run, data_dir: str) -> pd.DataFrame | None:
    """The run's test predictions joined with test.csv's labels, when test.csv has winner columns."""
    from lmsys_arena.data import Competition

    if not run.test_file.exists() or not (Path(data_dir) / "test.csv").exists():
        return None
    try:
        test = Competition(Path(data_dir)).test(check_sample="skip")
    except Exception as e:  # noqa: BLE001 - the report goes on without the test rows
        log.warning("%s: test.csv not read (%s): the report uses the OOF rows only", run.name, e)
        return None
    test = test[test["label"] >= 0]
    if not len(test):
        return None
    pred = run.read_test()
    out = pred.merge(test[["id", "label", "source"]], on="id", how="inner")
    return out if len(out) else None


def _llm_orders(view: RunView) -> None:
    """Both orders' logits of the LLM's validation rows (``fold<k>/valid_raw.npz``: ``ab``, ``ba``; no TTA)."""
    ids, ab, ba = [], [], []
    for f in sorted(view.oof["fold"].unique()):
        path = view.source.fold_dir(int(f)) / "valid_raw.npz"
        if not path.exists():
            view.orders_note = f"{path} not found (a fold trained before raw logits were saved)"
            return
        raw = np.load(path)
        ids.append(raw["id"].astype(str))
        ab.append(raw["ab"].astype(np.float64))
        ba.append(raw["ba"].astype(np.float64) if len(raw["ba"]) else np.full_like(raw["ab"], np.nan, np.float64))
    _set_orders(view, np.concatenate(ids), np.concatenate(ab), np.concatenate(ba))


def _set_orders(view: RunView, ids: np.ndarray, logit_ab: np.ndarray, logit_ba: np.ndarray) -> None:
    """Store both orders' probabilities aligned with the OOF rows (the A|B logits, the B|A logits in B|A order)."""
    pos = pd.Series(np.arange(len(ids)), index=pd.Index(ids))
    idx = pos.reindex(view.oof["id"].to_numpy()).to_numpy()
    if np.isnan(idx).any():
        view.orders_note = f"{int(np.isnan(idx).sum())} OOF rows have no per-order logits"
        return
    idx = idx.astype(np.int64)
    ab, ba = logit_ab[idx], logit_ba[idx]
    ok_ab = np.isfinite(ab).all(axis=1)
    has_ba = np.isfinite(ba).all(axis=1)
    view.orders = {
        "ab": np.where(ok_ab[:, None], softmax(np.nan_to_num(ab)), np.nan),
        "ba": np.where(has_ba[:, None], softmax(np.nan_to_num(ba)), np.nan) if has_ba.any() else None,
        "consistency": order_consistency(ab[ok_ab & has_ba], ba[ok_ab & has_ba])
        if (ok_ab & has_ba).sum() > 1
        else None,
    }
    if not has_ba.any():
        view.orders_note = "the run scored the A|B order only (tta: false): no swap statistics"


def _gbdt_extras(view: RunView, shap_rows: int, seed: int) -> None:
    """Each fold model on its own OOF rows: both orders without TTA (swap.swap_features, as gbdt.py's TTA does),
    and gain / mean |SHAP| (the library's own contributions) on a seeded sample of the rows."""
    from lmsys_arena import gbdt
    from lmsys_arena.io import read_json
    from lmsys_arena.swap import swap_features

    o = gbdt.options({k: v for k, v in view.source.model_config()[0].items()})
    rng = np.random.default_rng(seed)
    in_sample = np.zeros(len(view.oof), dtype=bool)
    in_sample[rng.choice(len(view.oof), size=min(shap_rows, len(view.oof)), replace=False)] = True
    p_ab = np.full((len(view.oof), 3), np.nan)
    p_ba = np.full((len(view.oof), 3), np.nan)
    gains, shaps = [], []
    for f in sorted(view.oof["fold"].unique()):
        fold_dir = view.source.fold_dir(int(f))
        at = np.flatnonzero(view.oof["fold"].to_numpy() == f)
        rows = view.oof.iloc[at].reset_index(drop=True)
        meta = read_json(fold_dir / "gbdt.json")
        X = gbdt.features(o, rows)
        if o.text_score:  # the fold's own Naive-Bayes weights, as gbdt.predict reads them
            X["diff_text_score"] = gbdt._text_score(o, rows, np.load(fold_dir / "text_score.npy"))
        if meta["features"] != list(X.columns):
            view.orders_note = view.importance_note = f"{fold_dir} was trained on other features (features.py changed)"
            return
        model = gbdt._load(meta["backend"], fold_dir)
        p_ab[at] = gbdt._proba(model, X)
        p_ba[at] = gbdt._proba(model, swap_features(X))
        gains.append(_gain(model, meta["backend"], list(X.columns)))
        sample = in_sample[at]
        if sample.any():
            shaps.append((int(sample.sum()), _mean_abs_shap(model, meta["backend"], X[sample])))
    again = unswap_mean(p_ab, p_ba) if o.tta else np.log(np.clip(p_ab, 1e-15, 1))
    drift = float(np.abs(softmax(again) - view.p).max())
    if drift > 1e-4:
        view.notes.append(f"the fold models re-scored give OOF probabilities up to {drift:.2g} off the saved ones")
    view.orders = {"ab": p_ab, "ba": p_ba, "consistency": order_consistency(np.log(p_ab), np.log(p_ba))}
    gain = pd.concat(gains, axis=1).fillna(0.0).mean(axis=1)
    w = np.array([n for n, _ in shaps], dtype=np.float64)
    if shaps:
        shap = pd.concat([s for _, s in shaps], axis=1).fillna(0.0)
        shap = pd.Series(shap.to_numpy() @ (w / w.sum()), index=shap.index)
    else:
        shap = pd.Series(np.nan, index=gain.index)
    imp = pd.DataFrame({"gain share": gain, "mean |SHAP|": shap.reindex(gain.index).fillna(0.0)})
    view.importance = imp.sort_values("mean |SHAP|", ascending=False).rename_axis("feature").reset_index()
    view.importance_note = (
        f"{meta['backend']}: gain = each feature's share of the total split gain, averaged over "
        f"{len(gains)} fold models; mean |SHAP| over {int(w.sum())} sampled OOF rows and the 3 classes "
        "(log-odds units), each row scored by its own fold's model"
    )


def unswap_mean(p_ab: np.ndarray, p_ba: np.ndarray) -> np.ndarray:
    from lmsys_arena.swap import unswap_average

    return unswap_average(np.log(np.clip(p_ab, 1e-15, 1)), np.log(np.clip(p_ba, 1e-15, 1)))


def _gain(model, backend: str, names: list[str]) -> pd.Series:
    if backend == "xgboost":
        score = model.get_score(importance_type="total_gain")
        g = pd.Series({n: float(score.get(n, 0.0)) for n in names})
    else:
        g = pd.Series(model.feature_importance(importance_type="gain"), index=model.feature_name(), dtype=float)
        g = g.reindex(names).fillna(0.0)
    return g / g.sum() if g.sum() > 0 else g


def _mean_abs_shap(model, backend: str, X: pd.DataFrame) -> pd.Series:
    """Mean |contribution| per feature over rows and classes (xgboost pred_contribs / lightgbm pred_contrib)."""
    if backend == "xgboost":
        import xgboost as xgb

        c = np.asarray(model.predict(xgb.DMatrix(X), pred_contribs=True))  # (n, classes, features + bias)
    else:
        c = np.asarray(model.predict(X, pred_contrib=True, num_iteration=model.best_iteration or None))
        c = c.reshape(len(X), -1, X.shape[1] + 1)  # (n, classes * (features + bias)) -> by class
    if c.ndim == 2:  # a single-output model
        c = c[:, None, :]
    return pd.Series(np.abs(c[:, :, :-1]).mean(axis=(0, 1)), index=X.columns)


# --------------------------------------------------------------------------- figures and tables


def _figure(ncols: int = 1, nrows: int = 1, size=(6.4, 3.6)):
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend state (Agg canvas)

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=90, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def img(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(df: pd.DataFrame, digits: int = 4, table_id: str | None = None, index: bool = False) -> str:
    out = df.to_html(
        index=index,
        border=0,
        classes="t",
        float_format=lambda x: f"{x:.{digits}f}",
        na_rep="–",
        table_id=table_id,
        escape=True,
    )
    return out


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _loss(y: np.ndarray, p: np.ndarray) -> float:
    return log_loss(y, p) if len(y) else float("nan")


# --------------------------------------------------------------------------- sections


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
            r[f"log loss | {cname}"] = _loss(y[y == c], p[y == c])
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
    fig, (ax,) = _figure(size=(7.5, 3.4))
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
    fig, axes = _figure(ncols=3, size=(3.6, 3.4))
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
    fig2, (ax,) = _figure(size=(6.4, 3.2))
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


def position_bias(views: list[RunView]) -> str:
    rows, notes = [], []
    fig, (ax1, ax2) = _figure(ncols=2, size=(5.0, 3.4))
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
            out.append({"bucket": str(name), "run": v.name, "rows": len(pos), "log loss": _loss(v.y[pos], v.p[pos])})
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
    fig, axes = _figure(ncols=2, nrows=2, size=(5.0, 3.2))
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
    fig, (ax,) = _figure(size=(7.5, 0.35 * n + 1.2))
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
    fig, (ax,) = _figure(size=(7.5, 3.2))
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


def ties(views: list[RunView], q: int = 8) -> str:
    rows = []
    fig, (ax,) = _figure(size=(6.0, 3.6))
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


def feature_importance(views: list[RunView], top: int = 20) -> str:
    parts = []
    for v in views:
        if v.importance is None:
            parts.append(note(f"{v.name}: {v.importance_note or 'no feature importance'}"))
            continue
        imp = v.importance.head(top)
        fig, (a1, a2) = _figure(ncols=2, size=(4.6, 0.28 * len(imp) + 1.2))
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
        fig, axes = _figure(ncols=ncols, nrows=-(-len(tags) // ncols), size=(4.2, 2.8))
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


# --------------------------------------------------------------------------- the page

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


__all__ = ["write_report", "default_name", "reliability", "temperature_curve", "with_lengths"]
