"""The building blocks of the sections: matplotlib figures embedded as base64 PNGs, tables and notes as HTML."""

from __future__ import annotations

import base64
import html
import io

import pandas as pd


def figure(ncols: int = 1, nrows: int = 1, size=(6.4, 3.6)):
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
