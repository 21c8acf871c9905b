"""A run's models loaded once, scoring one battle in both orders: the run's prediction as ``make infer``
computes it, each order alone and, for a GBDT run, the features that pushed it most. One class per kind
of family; :func:`load_predictor` picks it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from lmsys_arena import families
from lmsys_arena.metrics import softmax
from lmsys_arena.runs import Run
from lmsys_arena.serve.battle import CLASSES, InputError
from lmsys_arena.swap import swap_battles, unswap

TOP_FEATURES = 12


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
        top = self._top_features(np.mean(contribs, axis=0)[0], rows, base)  # (3 classes, features + bias), row 0
        return Prediction(np.mean(runs_p, 0)[0], np.mean(ab, 0)[0], np.mean(ba, 0)[0], top)

    def _top_features(self, c: np.ndarray, rows: pd.DataFrame, base: pd.DataFrame) -> list[dict]:
        """The features with the largest |contribution| to any class, with their values (fold mean)."""
        g, o = self.gbdt, self.opts
        values = base.copy()
        if o.text_score:
            values["diff_text_score"] = np.mean([g._text_score(o, rows, m[3]) for m in self.models], axis=0)
        names = list(values.columns)
        order = np.argsort(-np.abs(c[:, :-1]).max(axis=0), kind="stable")[:TOP_FEATURES]
        return [
            {
                "feature": names[j],
                "value": float(values.iat[0, j]),
                **{k: float(c[i, j]) for i, (k, _) in enumerate(CLASSES)},
            }
            for j in order
        ]


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
        from lmsys_arena.llm.trained import load_trained, read_meta

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
    """The predictor for the run's family: GBDT and trained LLM runs in memory, any other per request."""
    if cfg.get("family") == "gbdt":
        return GBDTPredictor(run, cfg)
    if cfg.get("family") == "llm" and not cfg.get("zero_shot"):
        return LLMPredictor(run, cfg)
    return GenericPredictor(run, cfg)
