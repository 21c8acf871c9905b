"""Runs made from a trained run without training: fold models merged into one, a model exported for T4.

    python -m lmsys_arena merge  --run gemma3-270m [--method concat|svd|mean] [--rank 32] [--heads keep|mean]
    python -m lmsys_arena export --run gemma3-270m-merged [--dtype fp16] [--quant 8bit] [--name NAME]

Both write a derived run (:mod:`lmsys_arena.runs`): ``config.json`` with ``derived`` naming the source run, and
one model in ``model/``, which ``infer``, ``ensemble`` (on the fold run's OOF) and ``kernels`` take like any run.
The work is the family's (hooks ``merge_models`` and ``export_model``: :mod:`lmsys_arena.llm.merge`,
:mod:`lmsys_arena.llm.export`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lmsys_arena import families
from lmsys_arena.io import write_json
from lmsys_arena.runs import Run

log = logging.getLogger(__name__)


def _hook(run: Run, cfg: dict, name: str, what: str):
    fam = families.of(cfg).load()
    hook = getattr(fam, name, None)
    if hook is None:
        raise ValueError(f"{run.name} is a {cfg['family']} run: its family cannot {what} (refit it instead: FULL=1)")
    return fam, hook


def _derived_run(source: Run, out: Run, cfg: dict, derived: dict, fresh: bool) -> None:
    full_cfg = {**cfg, "run": source.read_config().get("run"), "derived": derived}
    with out.lock(derived["how"]):
        out.prepare(full_cfg, fresh)


def merge_run(source_dir: str | Path, name: str | None = None, method: str = "concat", rank: int | None = None,
              fresh: bool = False, heads: str = "keep") -> Run:  # fmt: skip
    """One model from the fold models of ``source_dir`` -> ``runs/<name>/`` (default ``<run>-merged``)."""
    source = Run(source_dir)
    cfg, _spec = source.model_config()
    if source.derived():
        raise ValueError(f"{source.name} is a {source.derived()['how']} run: merge the fold run it comes from")
    fam, merge = _hook(source, cfg, "merge_models", "merge fold models")
    folds = source.done_folds()
    if len(folds) < 2:
        raise ValueError(f"{source.path}: {len(folds)} finished fold(s); merging needs at least two")
    out = source.sibling(name or f"{source.name}-merged")
    derived = {"from": source.name, "how": "merge", "config_hash": source.read_config()["config_hash"],
               "method": method, "rank": rank, "heads": heads, "folds": folds}  # fmt: skip
    _derived_run(source, out, cfg, derived, fresh)
    with out.lock("merge"), out.logging_to_file():
        if out.model_done_file.exists():
            log.info("%s: already merged (%s)", out.name, out.model_done_file)
            return out
        t0 = time.time()
        info = merge(cfg, [source.fold_dir(f) for f in folds], out.model_dir, method, rank, heads)
        _golden(fam, cfg, out.model_dir, [source.fold_dir(f) for f in folds])
        write_json(out.model_done_file, {**info, "seconds": round(time.time() - t0, 1)})
        log.info("%s: %d folds of %s merged (%s) -> %s", out.name, len(folds), source.name, method, out.model_dir)
    return out


def export_run(source_dir: str | Path, name: str | None = None, dtype: str = "fp16", quant: str | None = None,
               fresh: bool = False) -> Run:  # fmt: skip
    """The single model of ``source_dir`` (a merge or a refit) with its adapter merged into the backbone's
    weights, saved in ``dtype`` -> ``runs/<name>/`` (default ``<run>-export``); ``quant`` (8bit) is how the
    kernel loads those weights."""
    source = Run(source_dir)
    cfg, _spec = source.model_config()
    if not source.model_done_file.exists():
        raise ValueError(
            f"{source.name} has {len(source.done_folds())} fold models and no single model: export a merge "
            f"(`make merge RUN={source.name}`) or a refit (FULL=1)"
        )
    fam, export = _hook(source, cfg, "export_model", "export a merged model")
    out = source.sibling(name or f"{source.name}-export")
    new_cfg = fam.exported_config(cfg, out.model_dir, dtype, quant)
    derived = {"from": source.name, "how": "export", "config_hash": source.read_config()["config_hash"],
               "dtype": dtype, "quant": quant}  # fmt: skip
    _derived_run(source, out, new_cfg, derived, fresh)
    with out.lock("export"), out.logging_to_file():
        if out.model_done_file.exists():
            log.info("%s: already exported (%s)", out.name, out.model_done_file)
            return out
        t0 = time.time()
        info = export(cfg, source.model_dir, out.model_dir, dtype)
        _golden(fam, new_cfg, out.model_dir, [source.model_dir])
        write_json(out.model_done_file, {**info, "seconds": round(time.time() - t0, 1)})
        log.info("%s: %s exported in %s -> %s", out.name, source.name, dtype, out.model_dir)
    return out


def _golden(fam, cfg: dict, model_dir: Path, sources: list[Path]) -> None:
    """The new model's golden rows: the texts of its source's golden rows, scored by the new model."""
    from lmsys_arena import golden
    from lmsys_arena.runner import write_golden

    for d in sources:
        saved = golden.read(d)
        if saved is not None:
            write_golden(fam, cfg, model_dir, golden.rows_of(saved))
            return
