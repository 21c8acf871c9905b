"""A study's summary, ``studies/<study>.best.yaml`` and its plots."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from lmsys_arena.io import write_text
from lmsys_arena.tune.storage import STUDIES_DIR, _sqlite_path, default_storage, normalize_url

log = logging.getLogger(__name__)


def _counts(study) -> dict:
    from optuna.trial import TrialState

    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def summarize(study) -> dict:
    from optuna.trial import TrialState as S

    c = _counts(study)
    out = {
        "study": study.study_name,
        "complete": c[S.COMPLETE],
        "pruned": c[S.PRUNED],
        "failed": c[S.FAIL],
        "running": c[S.RUNNING],
        "waiting": c[S.WAITING],
    }
    if c[S.COMPLETE]:
        best = study.best_trial
        out.update(value=best.value, trial=best.number, params=best.user_attrs.get("overrides") or dict(best.params))
    base = [t for t in study.get_trials(deepcopy=False, states=(S.COMPLETE,)) if t.user_attrs.get("baseline")]
    if base:
        out["baseline"] = base[0].value
    return out


def importances(study) -> dict:
    import optuna

    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError) as e:  # too few finished trials or a constant space
        log.info("no parameter importances: %s", e)
        return {}


def save_plots(study, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    written = []
    plots = {"history": ovm.plot_optimization_history, "importance": ovm.plot_param_importances}
    for kind, fn in plots.items():
        path = stem.with_name(f"{stem.name}.{kind}.png")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            from lmsys_arena.io import atomic_path

            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=110, format="png")
            plt.close(fig)
            written.append(path)
        except (RuntimeError, ValueError) as e:
            log.info("no %s plot: %s", kind, e)
    return written


def best(study_name: str, storage_url: str | None = None, out_dir: Path = STUDIES_DIR) -> dict:
    """Write ``studies/<study>.best.yaml`` ({value, trials, params}) and the plots; return the summary."""
    import optuna
    import yaml

    url = storage_url or default_storage(study_name)
    if url.startswith("sqlite:") and (p := _sqlite_path(url)) is not None and not p.exists():
        raise FileNotFoundError(f"{p} not found: run `make tune STUDY={study_name}` first (or pass STORAGE=...)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=normalize_url(url))
    summary = summarize(study)
    if "value" not in summary:
        raise RuntimeError(f"study {study_name!r} has no complete trial yet ({summary})")
    summary["importances"] = importances(study)
    doc = {
        "value": summary["value"],
        "baseline": summary.get("baseline"),
        "trials": summary["complete"] + summary["pruned"],
        "pruned": summary["pruned"],
        "failed": summary["failed"],
        "best_trial": summary["trial"],
        "study": study_name,
        "storage": url,
        "model": study.user_attrs.get("model"),
        "folds": study.user_attrs.get("folds"),
        "max_rows": study.user_attrs.get("max_rows"),
        "params": summary["params"],
    }
    path = out_dir / f"{study_name}.best.yaml"
    write_text(path, yaml.safe_dump(doc, sort_keys=False))
    summary["files"] = [str(path)] + [str(p) for p in save_plots(study, out_dir / study_name)]
    return summary


def format_summary(s: dict) -> str:
    lines = [
        f"study {s['study']}: best OOF log loss {s.get('value', float('nan')):.5f} (trial {s.get('trial')}); "
        f"{s['complete'] + s['pruned']} trials ({s['complete']} complete, {s['pruned']} pruned), "
        f"{s['failed']} failed"
    ]
    if "baseline" in s and "value" in s:
        lines.append(
            f"  vs the config's own values (trial 0): {s['baseline']:.5f}, improvement {s['baseline'] - s['value']:.5f}"
        )
    for k, v in (s.get("params") or {}).items():
        lines.append(f"  {k}: {v}")
    if s.get("importances"):
        lines.append("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items()))
    for f in s.get("files", []):
        lines.append(f"wrote {f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
