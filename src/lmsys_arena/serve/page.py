"""The page's HTML, server-rendered (no JavaScript): the run's header, the error, the prediction tables and
the battle form. Every number sits in an element with a stable id (the browser test reads them)."""

from __future__ import annotations

import html

from lmsys_arena.serve.battle import CLASSES, FIELDS
from lmsys_arena.serve.predictors import Prediction
from lmsys_arena.serve.service import Service

ROW_CHOICES = 1000  # ids offered in the row picker's list (any id of the data is accepted)

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
    """The whole page for a context of :meth:`Service.handle` (an empty one: the bare form)."""
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
    """The probability table (plus a picked row's OOF line), the row's info, notes, feature contributions."""
    pred: Prediction = ctx["pred"]
    row = ctx.get("row")
    out = [_probability_table(pred, row)]
    if row:
        label = CLASSES[row["label"]][1] if 0 <= row["label"] < 3 else "unlabelled"
        out.append(
            f'<p id="row_info">row <b>{_e(row["id"])}</b>: {_e(label)} ({_e(row["model_a"] or "?")} vs '
            f"{_e(row['model_b'] or '?')}); the other folds' models trained on this row.</p>"
        )
    out += [f'<p class="note">{_e(n)}</p>' for n in pred.notes]
    if pred.contributions:
        out.append(_contributions_table(pred.contributions))
    return "".join(out)


def _probability_table(pred: Prediction, row: dict | None) -> str:
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
    if row and "oof" in row:
        out.append(f"<tr><td class=l>out-of-fold (fold {row['fold']}'s model, which never saw this row)</td>")
        out += [_num(x) for x in row["oof"]] + ["</tr>"]
    out.append("</table>")
    return "".join(out)


def _contributions_table(contributions: list[dict]) -> str:
    out = [
        "<h3>Features that pushed the prediction most</h3><p class=note>contribution to each class's margin "
        "(before the softmax), A|B order, mean over the fold models (xgboost/lightgbm pred_contribs); "
        "largest |contribution| first</p>"
        '<table id="contribs"><tr><th class=l>feature</th><th>value</th>'
        + "".join(f"<th>{_e(label)}</th>" for _, label in CLASSES)
        + "</tr>"
    ]
    for c in contributions:
        cells = "".join(f'<td class="num {"pos" if c[k] > 0 else "neg"}">{c[k]:+.4f}</td>' for k, _ in CLASSES)
        out.append(f"<tr><td class=l>{_e(c['feature'])}</td><td class=num>{c['value']:.6g}</td>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _form(s: Service, ctx: dict) -> str:
    fmt = ctx.get("fmt", "text")
    checked = lambda f: " checked" if fmt == f else ""  # noqa: E731
    boxes = "".join(
        # the newline after <textarea> is dropped by the HTML parser: a text's own leading newline survives
        f'<div><label for="{f}"><b>{label}</b></label>'
        f'<textarea id="{f}" name="{f}" rows="{8 if f == "prompt" else 14}">'
        f"\n{_e(ctx.get(f, ''))}</textarea></div>"
        for f, label in FIELDS
    )
    return (
        '<h2>Battle</h2><form id="battle" method="post" action="/">'
        + _row_picker(s, ctx)
        + "<p class=note>Or paste the texts. Several turns: separate them by a line with only <code>---</code> in "
        "each field (the same number of turns in all three), or choose JSON and give each field as a JSON list of "
        'strings, one per turn, as in train.csv (<code>["turn 1", "turn 2"]</code>).</p>'
        f'<p>Format: <label><input type="radio" id="fmt_text" name="fmt" value="text"{checked("text")}> turns '
        f'separated by ---</label> <label><input type="radio" id="fmt_json" name="fmt" value="json"{checked("json")}>'
        " JSON lists</label></p>"
        f'<div class="cols">{boxes}</div>'
        '<p><button id="predict" name="action" value="predict" type="submit">Predict</button></p></form>'
    )


def _row_picker(s: Service, ctx: dict) -> str:
    """The row id box (with the first ids as suggestions) and its buttons; without train data, why not."""
    if s.rows is None:
        return f"<p class=note>{_e(s.data_note)}</p>"
    options = "".join(f'<option value="{_e(i)}">' for i in list(s.rows.index[:ROW_CHOICES]))
    return (
        f'<p><label>Row of the run\'s train data (id): <input id="row_id" name="row_id" list="row_ids" '
        f'value="{_e(ctx.get("row_id", ""))}" size="14"></label><datalist id="row_ids">{options}</datalist> '
        '<button id="predict_row" name="action" value="row">Predict this row</button>'
        '<button id="random_row" name="action" value="random">Random row</button></p>'
    )
