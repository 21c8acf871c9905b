"""`make report`: one self-contained HTML file comparing an xgb run on the bundled sample with a tiny LLM run.

.venv/bin/python -m pytest tests/test_report.py -q
"""

from __future__ import annotations

import base64
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lmsys_arena.cli import main
from lmsys_arena.report import SECTIONS, _cut_text, write_report
from lmsys_arena.runner import score_run

SAMPLE = Path(__file__).resolve().parents[1] / "input" / "sample"
XGB = {"num_boost_round": 40, "early_stopping_rounds": 10, "params.learning_rate": 0.2, "threads": 2}
TINY = {"format.max_len": 128, "train.batch_size": 16, "train.micro_batch": 8, "train.log_every": 2}
NO_CHART = {"confident-errors"}  # every other section holds at least one chart here


class Page(HTMLParser):
    """The sections of a report: their images' src, and the headline table's cells."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.pre: dict[str, int] = {}
        self.headline: list[list[str]] = []
        self._section = self._table = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id")
            self.sections.setdefault(self._section, [])
        elif tag == "img" and self._section:
            self.sections[self._section].append(a.get("src") or "")
        elif tag == "pre" and self._section:
            self.pre[self._section] = self.pre.get(self._section, 0) + 1
        elif tag == "table":
            self._table = a.get("id")
        elif tag == "tr" and self._table == "headline-table":
            self.headline.append([])
        elif tag in ("td", "th") and self._table == "headline-table":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self.headline[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def project(tmp_path_factory, llm_inputs):
    """runs/xgb-sample (the 1,600 sample rows, 3 folds, EXTRA) and runs/tiny-small (80 of them, 2 folds), both
    with TensorBoard curves, in a temporary project folder that the tests run in."""
    from lmsys_arena.config import load_config
    from lmsys_arena.data import Competition
    from lmsys_arena.folds import make_folds, write_folds
    from lmsys_arena.run_inputs import RunSpec
    from lmsys_arena.runner import train_run

    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        write_folds(make_folds(Competition(SAMPLE).train(), k=3, seed=42), Path("folds/sample.csv"))
        xgb = load_config("xgb", {**XGB, "train.report_to": "tensorboard"})
        train_run(xgb, "runs/xgb-sample", RunSpec(data=str(SAMPLE), extra=str(SAMPLE / "extra.csv"), seed=42))
        llm = llm_inputs(root / "llm", 80)  # llm/small/: the first 80 sample rows, 2 folds
        mp.setenv("LMSYS_MODELS_DIR", llm["models"])
        tiny = load_config("tiny", {**TINY, "train.report_to": "tensorboard"})
        train_run(tiny, "runs/tiny-small", RunSpec(data=llm["data"], folds_file=llm["folds"], seed=42))
    return root


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    return project


def test_report_of_two_runs(in_project, capsys):
    t0 = time.time()
    main(["report", "--runs", "xgb-sample", "tiny-small"])
    seconds = time.time() - t0
    out = in_project / "runs" / "report-xgb-sample-tiny-small" / "report.html"
    assert out.exists() and str(out.relative_to(in_project)) in capsys.readouterr().out
    print(f"report of 2 runs: {seconds:.1f}s, {out.stat().st_size / 1024:.0f} KB")
    page = parse(out)

    for sid, _title in SECTIONS:
        assert sid in page.sections, f"section {sid} missing"
        if sid not in NO_CHART:
            srcs = page.sections[sid]
            assert srcs, f"section {sid} has no chart"
            for src in srcs:
                head, _, data = src.partition(",")
                assert head == "data:image/png;base64" and data, f"{sid}: not an embedded PNG"
                assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.pre["confident-errors"] >= 3  # prompt and both responses of at least one error
    assert "http" not in "".join(s for srcs in page.sections.values() for s in srcs)  # nothing fetched

    # the headline's log loss and accuracy are score_run's, to the 6 decimals printed
    header, *rows = page.headline
    by_run = {r[header.index("run")]: r for r in rows}
    assert set(by_run) == {"xgb-sample", "tiny-small"}
    for name, r in by_run.items():
        m = score_run(Path("runs") / name)
        assert abs(float(r[header.index("log loss")]) - m["oof_logloss"]) <= 1e-6
        assert abs(float(r[header.index("accuracy")]) - m["oof_accuracy"]) <= 1e-6
        assert int(r[header.index("rows")]) == m["rows"]

    text = out.read_text(encoding="utf-8")
    assert "no EXTRA rows are in the OOF" in text  # the source section says where the OOF rows come from
    assert "an LLM run: no feature importance" in text  # and the LLM run has none


def test_single_run_default_name_and_no_curves(in_project, monkeypatch):
    curves = pytest.importorskip("lmsys_arena.curves")
    monkeypatch.setattr(curves, "read_scalars", lambda run_dir: {})
    out = write_report(["tiny-small"], root="runs")
    assert out == Path("runs/tiny-small/report.html") and out.exists()
    page = parse(out)
    assert set(page.sections) == {sid for sid, _ in SECTIONS}
    assert not page.sections["curves"] and "no curves recorded" in out.read_text(encoding="utf-8")


def test_unknown_run_is_a_clear_error(in_project, caplog):
    with pytest.raises(FileNotFoundError, match=r"unknown run 'nope': runs/nope/ has no config.json"):
        write_report(["xgb-sample", "nope"], root="runs")
    with pytest.raises(SystemExit) as e:
        main(["report", "--runs", "nope"])
    assert e.value.code == 1 and "unknown run 'nope'" in caplog.text and "runs/nope" in caplog.text
    assert not Path("runs/report-xgb-sample-nope").exists()


def test_texts_are_escaped_and_cut():
    shown = _cut_text(["<script>alert(1)</script>", *[f"line {i}" for i in range(20)]])
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    assert "line 4" in shown and "line 5" not in shown and "more" in shown
