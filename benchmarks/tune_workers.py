"""Trial throughput of `make tune` with 1 vs 2 local workers (GBDT objective, one thread per worker).

    .venv/bin/python benchmarks/tune_workers.py                       # input/sample, ~2 min on 2 idle cores
    .venv/bin/python benchmarks/tune_workers.py --data ../shared/data/lmsys-arena-subset --max-rows 4000

Both runs use the same fixed-cost objective (xgboost, a fixed number of rounds, no early stop, no
pruning, threads=1) in a fresh study under a temp folder; the rate is trials / (last finish - first
start) from the study's own timestamps, so process start-up is not counted. Prints the load
average before and after: on a busy machine the ratio means little, rerun it.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_project(tmp: Path, data: Path, folds: int, rounds: int) -> Path:
    from lmsys_arena.data import Competition
    from lmsys_arena.features import build_features
    from lmsys_arena.folds import make_folds, write_folds

    comp = Competition(data)
    train = comp.train()
    print(f"read {len(train)} rows from {comp.train_csv}")
    write_folds(make_folds(train, k=folds, seed=0), tmp / "folds" / f"{comp.name}.csv")
    build_features(train)  # warm the feature cache, so the first timed trial is not the slow one
    cfg = {
        "family": "gbdt",
        "backend": "xgboost",
        "name": "bench",
        "swap_augment": True,
        "tta": True,
        "num_boost_round": rounds,
        "early_stopping_rounds": 10 * rounds,
        "threads": 1,
        "params": {"max_depth": 6, "learning_rate": 0.05, "subsample": 0.8},
        "tune": {"sampler": "random", "pruner": "none", "enqueue_defaults": False},
        # a narrow range: every trial costs about the same
        "search_space": {"params.subsample": {"type": "float", "low": 0.79, "high": 0.81}},
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rate(study) -> tuple[float, int]:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return len(done) / span, len(done)


def run(workers: int, trials: int, cfg_path: Path, data: Path, max_rows: int | None) -> tuple[float, int]:
    from lmsys_arena import tune
    from lmsys_arena.config import load_config
    from lmsys_arena.run_inputs import RunSpec

    cfg = load_config(str(cfg_path))
    if max_rows:
        cfg["tune"]["max_rows"] = max_rows
    name = f"w{workers}"
    job = tune.StudyJob(
        cfg=cfg,
        spec=RunSpec(data=str(data)),
        study=name,
        storage=tune.default_storage(name),
        target=trials,
        seed=0,
        settings=tune.TuneSettings.from_cfg(cfg),
        workers=workers,
        threads=1,
        log_level="WARNING",
    )
    tune.tune(job)
    import optuna

    return rate(optuna.load_study(study_name=name, storage=job.storage))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default=str(ROOT / "input" / "sample"),
        help="competition folder, e.g. ../shared/data/lmsys-arena-subset (default: %(default)s)",
    )
    ap.add_argument("--trials", type=int, default=6, help="trials per worker")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--max-rows", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    data = Path(args.data).resolve()
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        os.chdir(tmp)
        cfg = make_project(Path(tmp), data, args.folds, args.rounds)
        t0 = time.time()
        r1, n1 = run(1, args.trials, cfg, data, args.max_rows)
        r2, n2 = run(2, 2 * args.trials, cfg, data, args.max_rows)
    load1 = os.getloadavg()
    print(f"data {data}, {args.folds} folds, {args.rounds} rounds, threads=1 per worker, {os.cpu_count()} cores")
    print(f"1 worker : {n1} trials, {r1 * 60:.2f} trials/min")
    print(f"2 workers: {n2} trials, {r2 * 60:.2f} trials/min")
    print(f"ratio 2 vs 1 workers: {r2 / r1:.2f}x   (total {time.time() - t0:.0f}s)")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f}, after {load1[0]:.2f} {load1[1]:.2f}")


if __name__ == "__main__":
    main()
