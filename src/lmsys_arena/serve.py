"""A local web page that scores one battle with a run's models (``make serve RUN=<run> [PORT=7860]``).

    python -m lmsys_arena serve --run xgb-sample [--port 7860] [--host 127.0.0.1]

A FastAPI app with one server-rendered HTML form (no JavaScript): paste a prompt and two responses, or
pick a row of the run's train data by id, and read P(A wins), P(B wins), P(tie) as ``make infer`` computes
them (the run's models averaged, swap-TTA), both orders' raw predictions (A|B, and B|A read back in the A|B
order) and, for a GBDT run, the features with the largest contributions (``pred_contribs``). The models are
loaded once at startup; bad input is a message on the page (``id="error"``), never a traceback; every request
is logged. Needs the ``serve`` extra (fastapi, uvicorn, python-multipart). docs/serve.md has the details.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena import families
from lmsys_arena.metrics import softmax
from lmsys_arena.runs import Run
from lmsys_arena.swap import swap_battles, unswap

try:  # at module level: FastAPI resolves the endpoints' (string) annotations in this module's globals
    from fastapi import Request
except ImportError:  # the serve extra is missing: create_app says so
    Request = None

log = logging.getLogger(__name__)

SEPARATOR = "---"  # a line of only this separates two turns in the text format
MAX_CHARS = 1_000_000  # all texts of one battle together
TOP_FEATURES = 12
ROW_CHOICES = 1000  # ids offered in the row picker's list (any id of the data is accepted)
FIELDS = (("prompt", "Prompt"), ("response_a", "Response A"), ("response_b", "Response B"))
CLASSES = (("a", "A wins"), ("b", "B wins"), ("tie", "tie"))


class InputError(ValueError):
    """Input the page refuses, with the message it shows."""


# ------------------------------------------------------------------------------------------ input


def parse_turns(text: str, fmt: str, field: str) -> list[str]:
    """One form field -> its turns. ``text``: turns separated by a line ``---``; ``json``: a JSON list of
    strings (the CSV cells' format). Line breaks are normalised to ``\\n`` in the text format (a browser
    sends a textarea's lines as CRLF)."""
    if not text.strip():
        raise InputError(f"{field} is empty")
    if fmt == "json":
        try:
            turns = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{field}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise InputError(f'{field}: the JSON format takes a non-empty list of strings, e.g. ["turn 1", "turn 2"]')
        if not any(t.strip() for t in turns):
            raise InputError(f"{field} is empty")
        return turns
    if fmt != "text":
        raise InputError(f"unknown format {fmt!r} (text or json)")
    turns, lines = [], []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line.strip() == SEPARATOR:
            turns.append("\n".join(lines))
            lines = []
        else:
            lines.append(line)
    turns.append("\n".join(lines))
    return turns


def battle_frame(prompt: list[str], response_a: list[str], response_b: list[str], row_id: str = "served"):
    """One battle in the loader's row schema (data.load_battles), as the models read it."""
    counts = {"prompt": len(prompt), "response A": len(response_a), "response B": len(response_b)}
    if len(set(counts.values())) > 1:
        raise InputError("the turn counts differ: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    chars = sum(len(t) for t in prompt + response_a + response_b)
    if chars > MAX_CHARS:
        raise InputError(f"the texts have {chars:,} characters, more than this page takes ({MAX_CHARS:,})")
    return pd.DataFrame(
        {
            "id": [row_id],
            "prompt": [list(prompt)],
            "response_a": [list(response_a)],
            "response_b": [list(response_b)],
            "model_a": [""],
            "model_b": [""],
            "label": np.array([-1], dtype=np.int8),
            "source": ["served"],
        }
    )


def form_texts(row) -> tuple[str, dict[str, str]]:
    """A row's texts as the form shows them: the text format when it reads back exactly, else JSON lists."""
    lists = {f: list(row[f]) for f, _ in FIELDS}
    clean = all(
        "\r" not in t and not any(line.strip() == SEPARATOR for line in t.split("\n"))
        for v in lists.values()
        for t in v
    )
    if clean:
        return "text", {f: ("\n" + SEPARATOR + "\n").join(v) for f, v in lists.items()}
    return "json", {f: json.dumps(v, ensure_ascii=False) for f, v in lists.items()}


# ------------------------------------------------------------------------------------------ predictors


@dataclasses.dataclass
class Prediction:
    p: np.ndarray  # (3,) the run's prediction, as `make infer` computes it
    ab: np.ndarray  # (3,) the A|B order alone
    ba: np.ndarray  # (3,) the B|A order alone, read back in the A|B order
    contributions: list[dict] | None = None  # GBDT: the top features (A|B order)
    notes: list[str] = dataclasses.field(default_factory=list)


class GBDTPredictor:
    """The fold boosters (and text-score weights) loaded once; predictions as ``gbdt.predict`` makes them."""

    def __init__(self, run: Run, cfg: dict):
        from lmsys_arena import gbdt
        from lmsys_arena.io import read_json

        self.gbdt = gbdt
        self.opts = gbdt.options({**cfg, "feature_cache": False})  # no cache shard per request; same values
        self.models = []
        for d in run.model_dirs():
            meta = read_json(d / "gbdt.json")
            weights = np.load(d / "text_score.npy") if self.opts.text_score else None
            self.models.append((d, meta, gbdt._load(meta["backend"], d), weights))
        self.tta = self.opts.tta

    def check(self, rows: pd.DataFrame, from_data: bool) -> list[str]:
        return []

    def predict(self, rows: pd.DataFrame) -> Prediction:
        from lmsys_arena.swap import swap_features

        g, o = self.gbdt, self.opts
        base = g.features(o, rows)
        runs_p, ab, ba, contribs = [], [], [], []
        for d, meta, model, weights in self.models:
            X = base.copy()
            if o.text_score:
                X["diff_text_score"] = g._text_score(o, rows, weights)
            if meta["features"] != list(X.columns):
                raise RuntimeError(f"{d} was trained on other features (features.py changed): retrain with FRESH=1")
            runs_p.append(softmax(g._predict_logits(o, model, X)))
            ab.append(g._proba(model, X))
            ba.append(unswap(g._proba(model, swap_features(X))))
            contribs.append(_contributions(model, X))
        c = np.mean(contribs, axis=0)[0]  # (3 classes, features + bias), first row
        values = base.copy()
        if o.text_score:
            values["diff_text_score"] = np.mean([g._text_score(o, rows, m[3]) for m in self.models], axis=0)
        names = list(values.columns)
        order = np.argsort(-np.abs(c[:, :-1]).max(axis=0), kind="stable")[:TOP_FEATURES]
        top = [
            {
                "feature": names[j],
                "value": float(values.iat[0, j]),
                **{k: float(c[i, j]) for i, (k, _) in enumerate(CLASSES)},
            }
            for j in order
        ]
        return Prediction(np.mean(runs_p, 0)[0], np.mean(ab, 0)[0], np.mean(ba, 0)[0], top)


def _contributions(model, X: pd.DataFrame) -> np.ndarray:
    """Per-feature contributions to each class's margin, ``(n, 3, features + 1)`` (the last: the bias)."""
    if type(model).__module__.startswith("xgboost"):
        import xgboost as xgb

        return np.asarray(model.predict(xgb.DMatrix(X), pred_contribs=True))
    out = model.predict(X, num_iteration=model.best_iteration or None, pred_contrib=True)
    return np.asarray(out).reshape(len(X), 3, X.shape[1] + 1)


class LLMPredictor:
    """The fold adapters loaded once on the backbone; predictions as ``llm.family.predict`` makes them."""

    def __init__(self, run: Run, cfg: dict):
        from lmsys_arena.llm import family as lf
        from lmsys_arena.llm.backbones import DTYPES
        from lmsys_arena.llm.model import load_trained, read_meta

        self.lf = lf
        lc, _rank, _world, self.device, path, self.enc, self.mcfg = lf._setup(cfg, for_infer=True)
        self.lc, self.tta, self.dtype = lc, lc.tta, DTYPES[self.mcfg.dtype]
        self.both = dataclasses.replace(lc, tta=True)  # both orders are always scored (the raw rows)
        self.models = []
        for d in run.model_dirs():
            meta = read_meta(d)
            trained_on = meta.get("aux_features", []) if meta is not None else self.mcfg.aux_features
            if trained_on != self.mcfg.aux_features:
                raise ValueError(f"{d} was trained on other aux features than this code builds; retrain the run")
            self.models.append((d, load_trained(path, self.mcfg, d, self.device)))
        self.max_len = lc.format.max_len

    def tokens(self, rows: pd.DataFrame) -> int:
        """The tokens of the whole battle (every turn, untruncated) in the run's format."""
        enc, row = self.enc, rows.iloc[0]
        texts = [t or "" for turn in zip(row["prompt"], row["response_a"], row["response_b"]) for t in turn]
        ids = enc.tok(texts, add_special_tokens=False)["input_ids"] if texts else []
        return len(enc.head) + len(enc.tail) + len(texts) // 3 * enc.label_cost + sum(len(x) for x in ids)

    def check(self, rows: pd.DataFrame, from_data: bool) -> list[str]:
        n = self.tokens(rows)
        if n <= self.max_len:
            return []
        msg = f"the battle is {n:,} tokens in this run's format; the model reads at most {self.max_len:,}"
        msg += " (format.max_len)"
        if not from_data:
            raise InputError(msg + ": shorten the texts or drop early turns")
        return [msg + f": scored as `make infer` scores it, {self.lc.format.keep} turns kept and cut to fit"]

    def predict(self, rows: pd.DataFrame) -> Prediction:
        lf = self.lf
        aux = lf.aux_matrix(self.mcfg, rows)
        runs_p, ab, ba = [], [], []
        for d, model in self.models:
            out, raw = lf._score(
                model, self.enc, rows, self.both, self.device, self.dtype, 1, f"{d.name} serve", raw=True, aux=aux
            )
            runs_p.append(softmax(out if self.tta else raw["ab"].astype(np.float64)))
            ab.append(softmax(raw["ab"].astype(np.float64)))
            ba.append(unswap(softmax(raw["ba"].astype(np.float64))))
        return Prediction(np.mean(runs_p, 0)[0], np.mean(ab, 0)[0], np.mean(ba, 0)[0])


class GenericPredictor:
    """Any other family (an LLM judge run, ...): its ``predict`` per request, which loads its models each time."""

    def __init__(self, run: Run, cfg: dict):
        self.run, self.cfg, self.fam = run, cfg, families.of(cfg).load()
        self.tta = bool(cfg.get("tta", True))

    def check(self, rows: pd.DataFrame, from_data: bool) -> list[str]:
        return []

    def predict(self, rows: pd.DataFrame) -> Prediction:
        from lmsys_arena.runner import predict_rows

        one = {**self.cfg, "tta": False}
        models = self.run.model_dirs()
        ab = np.mean([softmax(self.fam.predict(one, rows, m)) for m in models], axis=0)
        ba = np.mean([unswap(softmax(self.fam.predict(one, swap_battles(rows), m))) for m in models], axis=0)
        p = predict_rows(self.run, self.cfg, rows, "served rows")
        return Prediction(p[0], ab[0], ba[0], notes=["this family's models are loaded for each request"])


def load_predictor(run: Run, cfg: dict):
    if cfg.get("family") == "gbdt":
        return GBDTPredictor(run, cfg)
    if cfg.get("family") == "llm" and not cfg.get("zero_shot"):
        return LLMPredictor(run, cfg)
    return GenericPredictor(run, cfg)


# ------------------------------------------------------------------------------------------ the service


class Service:
    """A run's models, its train rows (the row picker) and OOF predictions; :meth:`handle` answers one form."""

    def __init__(self, run_dir: str | Path):
        self.run = Run(run_dir)
        cfg, spec = self.run.model_config()
        if spec is None:
            raise ValueError(f"{self.run.path} is a blend: serve one of its members ({', '.join(self.run.members())})")
        if not self.run.model_dirs():
            raise FileNotFoundError(
                f"{self.run.path} has no trained models: run `make train RUN={self.run.name}` first"
            )
        self.cfg, self.family = cfg, cfg.get("family")
        t0 = time.time()
        self.predictor = load_predictor(self.run, cfg)
        self.n_models = len(self.run.model_dirs())
        log.info(
            "%s: %d model(s) of family %s loaded in %.1fs", self.run.name, self.n_models, self.family, time.time() - t0
        )
        self.rows, self.data_note = self._train_rows(spec)
        self.oof = self._oof()
        self.lock = threading.Lock()  # one prediction at a time (boosters and torch modules are shared)

    def _train_rows(self, spec) -> tuple[pd.DataFrame | None, str]:
        comp = spec.competition()
        if not comp.train_csv.exists():
            return None, f"{comp.train_csv} is not here: the row picker is off"
        try:
            rows = comp.train(skip_bad=spec.skip_bad)
        except Exception as e:  # the page still scores pasted battles
            log.warning("%s: not loaded (%s: %s); the row picker is off", comp.train_csv, type(e).__name__, e)
            return None, f"{comp.train_csv} could not be read: the row picker is off"
        return rows.set_index("id", drop=False), f"{len(rows):,} rows of {comp.train_csv}"

    def _oof(self) -> pd.DataFrame | None:
        try:
            return self.run.read_oof(partial=True).set_index("id")
        except (FileNotFoundError, ValueError):
            return None

    def row(self, row_id: str) -> pd.DataFrame:
        if self.rows is None:
            raise InputError(f"no row picker: {self.data_note}")
        row_id = row_id.strip()
        if not row_id:
            raise InputError("row id is empty")
        if row_id not in self.rows.index:
            raise InputError(f"row id {row_id!r} is not in the run's train data ({self.data_note})")
        return self.rows.loc[[row_id]].reset_index(drop=True)

    def handle(self, form: dict) -> dict:
        """The page's context for a submitted form (``action``: predict the texts, ``row``: the row
        ``row_id``, ``random``: a random row). Never raises: an error is ``ctx["error"]``."""
        t0 = time.time()
        action = form.get("action") or "predict"
        ctx = {"fmt": form.get("fmt") or "text", "row_id": form.get("row_id") or ""}
        ctx.update({f: form.get(f) or "" for f, _ in FIELDS})
        what = "pasted battle"
        try:
            if action in ("row", "random"):
                if action == "random":
                    if self.rows is None:
                        raise InputError(f"no row picker: {self.data_note}")
                    ctx["row_id"] = str(self.rows.index[np.random.default_rng().integers(len(self.rows))])
                rows = self.row(ctx["row_id"])
                ctx["fmt"], texts = form_texts(rows.iloc[0])
                ctx.update(texts)
                ctx["row"] = self._row_info(rows.iloc[0])
                what = f"row {rows['id'].iat[0]!r}"
            elif action == "predict":
                turns = [parse_turns(ctx[f], ctx["fmt"], label) for f, label in FIELDS]
                rows = battle_frame(*turns)
            else:
                raise InputError(f"unknown action {action!r}")
            with self.lock:
                notes = self.predictor.check(rows, from_data=action != "predict")
                pred = self.predictor.predict(rows)
            pred.notes = notes + pred.notes
            ctx["pred"], ctx["turns"] = pred, len(rows["prompt"].iat[0])
            log.info(
                "served %s (%d turns, %d chars): P(A)=%r P(B)=%r P(tie)=%r in %.0f ms",
                what,
                ctx["turns"],
                sum(len(t) for f, _ in FIELDS for t in rows[f].iat[0]),
                *map(float, pred.p),
                1000 * (time.time() - t0),
            )
        except InputError as e:
            ctx["error"] = str(e)
            log.info("refused %s: %s", what, e)
        except Exception as e:  # shown as one line; the traceback goes to the server log only
            ctx["error"] = f"prediction failed: {type(e).__name__}: {e}"
            log.exception("failed on %s", what)
        return ctx

    def _row_info(self, row) -> dict:
        info = {"id": str(row["id"]), "label": int(row["label"]), "model_a": row["model_a"], "model_b": row["model_b"]}
        if self.oof is not None and info["id"] in self.oof.index:
            o = self.oof.loc[info["id"]]
            info["oof"] = (float(o["p_a"]), float(o["p_b"]), float(o["p_tie"]))
            info["fold"] = int(o["fold"])
        return info


# ------------------------------------------------------------------------------------------ the page

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em auto;max-width:1200px;color:#222}
textarea{width:100%;font-family:ui-monospace,monospace;font-size:12px;box-sizing:border-box}
.cols{display:flex;gap:1em}.cols>div{flex:1}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.num{font-family:ui-monospace,monospace}
#error{background:#fde8e8;border:1px solid #d33;padding:.6em;color:#900}
.note{color:#555;font-size:90%}.pos{color:#070}.neg{color:#a00}
button{padding:.35em 1em;margin-right:.5em}
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _num(x: float, el_id: str | None = None) -> str:
    """A probability cell: the full float repr, with a stable element id."""
    id_attr = f' id="{el_id}"' if el_id else ""
    return f'<td class="num"{id_attr}>{_e(repr(float(x)))}</td>'


def render(service: Service, ctx: dict) -> str:
    s = service
    head = (
        f"<h1>LMSYS Arena: {_e(s.run.name)}</h1><p class=note>family {_e(s.family)}, {s.n_models} model(s) "
        f"({', '.join(_e(d.name) for d in s.run.model_dirs())}), swap-TTA "
        f"{'on' if s.predictor.tta else 'off (tta: false in the run config)'}; {_e(s.data_note)}</p>"
    )
    parts = [head]
    if ctx.get("error"):
        parts.append(f'<div id="error"><b>Error:</b> {_e(ctx["error"])}</div>')
    if ctx.get("pred") is not None:
        parts.append(_result(ctx))
    parts.append(_form(s, ctx))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(s.run.name)}: arena preference</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )


def _result(ctx: dict) -> str:
    pred: Prediction = ctx["pred"]
    rows = [
        ("the run's prediction (as make infer)", "", pred.p),
        ("A|B order alone", "_ab", pred.ab),
        ("B|A order alone, read back as A|B", "_ba", pred.ba),
    ]
    out = ['<h2>Prediction</h2><table id="probs"><tr><th class=l></th>']
    out += [f"<th>P({label})</th>" for _, label in CLASSES] + ["</tr>"]
    for name, suffix, p in rows:
        out.append(f"<tr><td class=l>{_e(name)}</td>")
        out += [_num(p[i], f"p_{k}{suffix}") for i, (k, _) in enumerate(CLASSES)]
        out.append("</tr>")
    row = ctx.get("row")
    if row and "oof" in row:
        out.append(f"<tr><td class=l>out-of-fold (fold {row['fold']}'s model, which never saw this row)</td>")
        out += [_num(x) for x in row["oof"]] + ["</tr>"]
    out.append("</table>")
    if row:
        label = CLASSES[row["label"]][1] if 0 <= row["label"] < 3 else "unlabelled"
        out.append(
            f'<p id="row_info">row <b>{_e(row["id"])}</b>: {_e(label)} ({_e(row["model_a"] or "?")} vs '
            f"{_e(row['model_b'] or '?')}); the other folds' models trained on this row.</p>"
        )
    out += [f'<p class="note">{_e(n)}</p>' for n in pred.notes]
    if pred.contributions:
        out.append(
            "<h3>Features that pushed the prediction most</h3><p class=note>contribution to each class's margin "
            "(before the softmax), A|B order, mean over the fold models (xgboost/lightgbm pred_contribs); "
            "largest |contribution| first</p>"
            '<table id="contribs"><tr><th class=l>feature</th><th>value</th>'
            + "".join(f"<th>{_e(label)}</th>" for _, label in CLASSES)
            + "</tr>"
        )
        for c in pred.contributions:
            cells = "".join(f'<td class="num {"pos" if c[k] > 0 else "neg"}">{c[k]:+.4f}</td>' for k, _ in CLASSES)
            out.append(f"<tr><td class=l>{_e(c['feature'])}</td><td class=num>{c['value']:.6g}</td>{cells}</tr>")
        out.append("</table>")
    return "".join(out)


def _form(s: Service, ctx: dict) -> str:
    fmt = ctx.get("fmt", "text")
    checked = lambda f: " checked" if fmt == f else ""  # noqa: E731
    ids = [] if s.rows is None else list(s.rows.index[:ROW_CHOICES])
    options = "".join(f'<option value="{_e(i)}">' for i in ids)
    picker = (
        f'<p><label>Row of the run\'s train data (id): <input id="row_id" name="row_id" list="row_ids" '
        f'value="{_e(ctx.get("row_id", ""))}" size="14"></label><datalist id="row_ids">{options}</datalist> '
        '<button id="predict_row" name="action" value="row">Predict this row</button>'
        '<button id="random_row" name="action" value="random">Random row</button></p>'
        if s.rows is not None
        else f"<p class=note>{_e(s.data_note)}</p>"
    )
    boxes = "".join(
        # the newline after <textarea> is dropped by the HTML parser: a text's own leading newline survives
        f'<div><label for="{f}"><b>{label}</b></label>'
        f'<textarea id="{f}" name="{f}" rows="{8 if f == "prompt" else 14}">'
        f"\n{_e(ctx.get(f, ''))}</textarea></div>"
        for f, label in FIELDS
    )
    return (
        '<h2>Battle</h2><form id="battle" method="post" action="/">'
        + picker
        + "<p class=note>Or paste the texts. Several turns: separate them by a line with only <code>---</code> in "
        "each field (the same number of turns in all three), or choose JSON and give each field as a JSON list of "
        'strings, one per turn, as in train.csv (<code>["turn 1", "turn 2"]</code>).</p>'
        f'<p>Format: <label><input type="radio" id="fmt_text" name="fmt" value="text"{checked("text")}> turns '
        f'separated by ---</label> <label><input type="radio" id="fmt_json" name="fmt" value="json"{checked("json")}>'
        " JSON lists</label></p>"
        f'<div class="cols">{boxes}</div>'
        '<p><button id="predict" name="action" value="predict" type="submit">Predict</button></p></form>'
    )


def create_app(service: Service):
    try:
        from fastapi import FastAPI
        from fastapi.responses import HTMLResponse, PlainTextResponse
    except ImportError as e:
        raise ImportError(f"make serve needs the serve extra: .venv/bin/pip install -e '.[serve]' ({e})") from None

    app = FastAPI(title=f"lmsys_arena serve {service.run.name}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page(row_id: str | None = None):
        ctx = service.handle({"action": "row", "row_id": row_id}) if row_id else {}
        return HTMLResponse(render(service, ctx))

    @app.post("/", response_class=HTMLResponse)
    async def submit(request: Request):
        form = await request.form()
        ctx = await _in_thread(service.handle, {k: str(v) for k, v in form.items()})
        return HTMLResponse(render(service, ctx))

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz():
        return "ok"

    return app


async def _in_thread(fn, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Load the run's models, then serve the page until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise ImportError(f"make serve needs the serve extra: .venv/bin/pip install -e '.[serve]' ({e})") from None
    service = Service(run_dir)
    app = create_app(service)
    log.info("serving %s on http://%s:%d/ (Ctrl-C stops)", service.run.name, host, port)
    uvicorn.run(app, host=host, port=port, log_config=None, log_level="info")
