"""A run as a teacher: its predictions for any rows, pseudo-label files, and distillation targets.

    make pseudo TEACHER=xgb POOL=unlabelled.csv          # runs/xgb/pseudo/unlabelled.csv (+ .parquet)
    make train MODEL=tiny PSEUDO=runs/xgb/pseudo/unlabelled.csv PSEUDO_WEIGHT=0.5 PSEUDO_MIN_PROB=0.6
    make train MODEL=tiny SET="train.distill.teacher=xgb train.distill.weight=1 train.distill.temperature=2"

Any run can teach: a GBDT or LLM fold run, a derived run (a refit, a merge, an export) or a blend (its members
scored and combined with its weights and temperature). :func:`score_rows` scores rows the way ``make infer``
scores test.csv (the run's models averaged, swap-TTA per its config).

``make pseudo`` (:func:`write_pseudo`) scores a pool of battles without labels and writes

    <OUT> (default runs/<teacher>/pseudo/<pool>.csv)   id, model_a, model_b, prompt, response_a, response_b
                                                        (JSON lists, as in train.csv), soft_a, soft_b, soft_tie
                                                        (the teacher's probabilities), source (pseudo:<teacher>)
    runs/<teacher>/pseudo/<OUT stem>.parquet            the teacher's prediction frame of those rows with a
                                                        text_key column (data.text_key)

Training reads the CSV as train-only rows (``PSEUDO=``, :func:`lmsys_arena.data.load_pseudo`). With
``train.distill.teacher`` (:func:`distill_targets`), train rows get the teacher's out-of-fold log-probabilities
(its ``oof.parquet``, by id: a train row missing there is an error), other rows (EXTRA, pseudo) those of the
teacher's ``pseudo/*.parquet`` files, matched by their texts; rows found in neither get no KL term (logged).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lmsys_arena.data import SOFT_COLS, load_battles, text_key
from lmsys_arena.io import write_csv, write_parquet
from lmsys_arena.predictions import PROB_COLS, frame_from_logprobs, frame_logprobs
from lmsys_arena.runs import RUNS_DIR, Run, default_run_name

log = logging.getLogger(__name__)

PSEUDO_DIR = "pseudo"  # runs/<teacher>/pseudo/: pseudo-label CSVs and the teacher's scores of their rows


def teacher_run(name: str | Path, runs_root: str | Path = RUNS_DIR) -> Run:
    """The run named ``name`` in ``runs_root`` (or ``name`` as a path to a run folder); a missing one is an
    error naming it."""
    path = Path(name)
    run = Run(path) if len(path.parts) > 1 and (path / "config.json").exists() else Run(Path(runs_root) / name)
    if not run.exists():
        raise FileNotFoundError(
            f"teacher run {str(name)!r}: {run.config_file} not found (train it, or blend it, first; off the "
            f"competition data `make train MODEL={name}` names its run {name}-<data folder>)"
        )
    return run


def resolve_distill_teacher(cfg: dict, data: str | Path, runs_root: str | Path = RUNS_DIR) -> dict:
    """``cfg`` with ``train.distill.teacher`` as the run it names: that run if it exists, else the run that
    ``make train MODEL=<teacher>`` writes for ``data`` (``runs.default_run_name``: ``<teacher>-<data folder>``
    off the competition data), so a config naming ``xgb`` finds the xgb run trained on the same data. The
    resolved name is what the run's config.json records."""
    teacher = ((cfg.get("train") or {}).get("distill") or {}).get("teacher")
    if not teacher or len(Path(str(teacher)).parts) > 1 or Run(Path(runs_root) / teacher).exists():
        return cfg
    on_data = default_run_name(teacher, data)
    if on_data == teacher or not Run(Path(runs_root) / on_data).exists():
        return cfg  # missing either way: the family's preflight names it
    log.info("train.distill.teacher %s: the run of that model on %s is %s", teacher, Path(data).name, on_data)
    distill = {**cfg["train"]["distill"], "teacher": on_data}
    return {**cfg, "train": {**cfg["train"], "distill": distill}}


def score_rows(run: Run, rows: pd.DataFrame) -> np.ndarray:
    """Log-probabilities ``(n, 3)`` of ``rows`` by ``run``: its models averaged as ``make infer`` does, or for a
    blend its members' combined with the blend's weights, temperature and space."""
    cfg = run.read_config()
    if cfg.get("family") == "blend":
        from lmsys_arena.ensemble import Blend, combine

        blend = Blend.from_config(cfg)
        log.info("%s: a blend of %s (weights %s)", run.name, blend.members, [round(w, 4) for w in blend.weights])
        members = [score_rows(run.sibling(m), rows) for m in blend.members]
        return combine(members, blend.weights, blend.temperature, blend.space)
    from lmsys_arena.runner import predict_rows

    model_cfg, _spec = run.model_config()
    p = predict_rows(run, model_cfg, rows, "rows")
    return np.log(np.clip(p, 1e-15, 1))


def _json_cells(col: pd.Series) -> list[str]:
    return [json.dumps(list(turns), ensure_ascii=False) for turns in col]


def write_pseudo(
    teacher: str,
    pool: str | Path,
    out: str | Path | None = None,
    *,
    skip_bad: bool = False,
    runs_root: str | Path = RUNS_DIR,
) -> Path:
    """Score ``pool`` (battles in train.csv's columns; winner columns, if any, are ignored) with the run
    ``teacher`` and write the pseudo-label CSV ``out`` (default ``runs/<teacher>/pseudo/<pool stem>.csv``) and
    the teacher's scores ``runs/<teacher>/pseudo/<out stem>.parquet``, both atomically. Returns ``out``."""
    run = teacher_run(teacher, runs_root)
    pool = Path(pool)
    out = Path(out) if out else run.path / PSEUDO_DIR / f"{pool.stem}.csv"
    if out.suffix != ".csv":
        raise ValueError(f"{out}: the pseudo-label file is a CSV (name it <something>.csv)")
    rows = load_battles(pool, skip_bad=skip_bad, require_labels=False, source=pool.stem, drop_empty=True)
    with run.lock("pseudo"), run.logging_to_file():
        run.remove_temporary_files()
        lp = score_rows(run, rows)
        frame = frame_from_logprobs(rows["id"], lp, text_key=text_key(rows).to_numpy())
        write_parquet(run.path / PSEUDO_DIR / f"{out.stem}.parquet", frame)
        csv = pd.DataFrame(
            {
                "id": rows["id"].to_numpy(),
                "model_a": rows["model_a"].to_numpy(),
                "model_b": rows["model_b"].to_numpy(),
                "prompt": _json_cells(rows["prompt"]),
                "response_a": _json_cells(rows["response_a"]),
                "response_b": _json_cells(rows["response_b"]),
            }
        )
        csv[list(SOFT_COLS)] = frame[PROB_COLS].to_numpy()
        csv["source"] = f"pseudo:{run.name}"
        write_csv(out, csv)
        conf = frame[PROB_COLS].to_numpy().max(axis=1)
        log.info(
            "pseudo: %d rows of %s scored by %s -> %s (largest soft target: median %.3f, >= 0.5 on %.1f%%, "
            ">= 0.7 on %.1f%%)",
            len(csv), pool, run.name, out, float(np.median(conf)), 100 * (conf >= 0.5).mean(),
            100 * (conf >= 0.7).mean(),
        )  # fmt: skip
    return out


def _pseudo_scores(run: Run) -> pd.DataFrame | None:
    """The teacher's ``pseudo/*.parquet`` frames in one (a text key scored twice: the newest file's), or None."""
    files = sorted((run.path / PSEUDO_DIR).glob("*.parquet"), key=lambda p: (p.stat().st_mtime, p.name))
    if not files:
        return None
    frames = [pd.read_parquet(f) for f in files]
    return pd.concat(frames, ignore_index=True).drop_duplicates("text_key", keep="last").set_index("text_key")


def distill_targets(teacher: str, rows: pd.DataFrame, what: str = "train") -> np.ndarray:
    """The teacher's log-probabilities ``(n, 3)`` for a fold's training rows; NaN rows get no KL term.

    Rows of source ``train``: the teacher's out-of-fold predictions (``Run.read_oof``: a derived run's are its
    fold run's), by id. A train row missing there, or with another label there, is an error naming the teacher
    and the count (the teacher was trained on other folds or other data). Other rows (EXTRA, pseudo): the
    teacher's ``make pseudo`` scores (``runs/<teacher>/pseudo/*.parquet``), matched by their texts; rows found
    nowhere get no KL term (logged)."""
    run = teacher_run(teacher)
    out = np.full((len(rows), 3), np.nan)
    is_train = (rows["source"] == "train").to_numpy() if "source" in rows.columns else np.ones(len(rows), bool)
    if is_train.any():
        oof = run.read_oof().set_index("id")
        ids = rows.loc[is_train, "id"].astype(str)
        missing = ~ids.isin(oof.index).to_numpy()
        if missing.any():
            raise ValueError(
                f"distill teacher {run.name!r}: {int(missing.sum())} of {len(ids)} {what} rows are not in its OOF "
                f"predictions ({run.oof_source().oof_file}; e.g. ids {list(ids[missing][:3])}): the teacher must "
                f"cover every train row (train it on every fold, on the same data)"
            )
        found = oof.loc[ids]
        if "label" in found.columns:
            differ = found["label"].to_numpy() != rows.loc[is_train, "label"].to_numpy()
            if differ.any():
                raise ValueError(
                    f"distill teacher {run.name!r}: {int(differ.sum())} {what} rows have another label in its OOF "
                    f"(e.g. id {ids.iloc[int(np.argmax(differ))]!r}): it was trained on other data"
                )
        out[is_train] = frame_logprobs(found.reset_index())
    other = ~is_train
    n_other = 0
    if other.any():
        scores = _pseudo_scores(run)
        if scores is not None:
            keys = text_key(rows[other])
            hit = keys.isin(scores.index).to_numpy()
            if hit.any():
                idx = np.flatnonzero(other)[hit]
                out[idx] = frame_logprobs(scores.loc[keys[hit]].reset_index())
            n_other = int(hit.sum())
    log.info(
        "%s: distill from %s: KL on %d train rows (its OOF) and %d of %d other rows (its make pseudo scores)%s",
        what,
        run.name,
        int(is_train.sum()),
        n_other,
        int(other.sum()),
        f"; {int(other.sum()) - n_other} rows without a teacher prediction get no KL term"
        if n_other < other.sum()
        else "",
    )
    return out


def cli(args) -> None:
    out = write_pseudo(args.teacher, args.pool, args.out, skip_bad=args.skip_bad)
    print(out)
