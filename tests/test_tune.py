"""Optuna studies (lmsys_arena.tune): the search-space language, exact trial counts with two
workers, resume, pruning of a known-bad region, best.yaml -> PARAMS=best, and a PostgreSQL study
surviving a SIGKILLed worker.

    .venv/bin/python -m pytest tests/test_tune.py
    LMSYS_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/optuna .venv/bin/python -m pytest tests/test_tune.py
    .ci/run        # starts a throwaway PostgreSQL cluster and exports that URL
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState as S

from lmsys_arena import cli, tune
from lmsys_arena.config import CONFIG_DIR, get_dotted, load_config, load_params_file
from lmsys_arena.data import Competition
from lmsys_arena.folds import make_folds, write_folds
from lmsys_arena.tune.settings import TuneSettings

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

TINY = {  # cheap xgboost: a trial is a few seconds on input/sample
    "family": "gbdt",
    "backend": "xgboost",
    "swap_augment": True,
    "tta": True,
    "num_boost_round": 20,
    "early_stopping_rounds": 10,
    "threads": 1,
    "params": {"max_depth": 3, "learning_rate": 0.3},
}


@pytest.fixture
def project(workdir, sample_dir):
    """A temp project on input/sample with 3 folds; ``write(name, **sections)`` makes a config file."""
    write_folds(make_folds(Competition(sample_dir).train(), k=3, seed=0), "folds/sample.csv")

    def write(name: str, **sections) -> str:
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**TINY, "name": name, **sections}))
        return str(path)

    return write


def _tune_argv(sample_dir, model, study, trials, *extra):
    return ["tune", "--data", str(sample_dir), "--model", model, "--study", study, "--trials", str(trials), *extra]


def _states(study) -> dict:
    out = {s: [] for s in S}
    for t in study.get_trials(deepcopy=False):
        out[t.state].append(t)
    return out


# ------------------------------------------------------------------------------------- search space
def test_shipped_search_spaces_sample_inside_their_bounds():
    names = [
        p.stem for p in sorted(CONFIG_DIR.glob("*.yaml")) if "search_space" in (yaml.safe_load(p.read_text()) or {})
    ]
    assert {"xgb", "lgbm"} <= set(names), names
    for name in names:
        cfg = load_config(name)
        space = tune.parse_search_space(cfg)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(20):
            over = tune.sample_overrides(study.ask(), space, cfg)
            assert set(over) == {p.key for p in space}
            for p in space:
                v = over[p.key]
                if p.times:
                    v = v / over.get(p.times, get_dotted(cfg, p.times))
                assert (v in p.choices) if p.type == "categorical" else p.low <= v <= p.high, (name, p.key, v)
        # trial 0 of a new study reproduces the config: every searched key the config sets is enqueued
        present = {p.name for p in space if get_dotted(cfg, p.key) is not None}
        assert set(tune.default_params(space, cfg)) == present, name


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"params.depth": {"type": "int", "low": 5, "high": 5}}, "low < high"),
        ({"params.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "log scale"),
        ({"params.lr": {"type": "uniform", "low": 0, "high": 1}}, "type must be"),
        ({"params.lr": {"type": "categorical"}}, "choices"),
        ({"params.lr": {"type": "float", "low": 0, "high": 1, "hgih": 2}}, "expected a mapping"),
        ({"parms.lr": {"type": "float", "low": 0, "high": 1}}, "no section 'parms'"),
        ({"params.a": {"type": "int", "low": 1, "high": 4, "times": "params.nope"}}, "neither searched"),
    ],
)
def test_bad_search_space_names_the_key(spec, msg):
    cfg = {**TINY, "name": "bad", "search_space": spec}
    with pytest.raises(ValueError, match=msg) as e:
        tune.parse_search_space(cfg)
    assert list(spec)[0] in str(e.value)


def test_ratio_param_times_another_key():
    cfg = {
        "family": "llm",
        "name": "x",
        "lora": {"r": 16, "alpha": 32},
        "search_space": {
            "lora.r": {"type": "categorical", "choices": [8, 16, 32, 64]},
            "lora.alpha": {"type": "categorical", "choices": [1, 2], "times": "lora.r"},
        },
    }
    space = tune.parse_search_space(cfg)
    assert [p.name for p in space] == ["lora.r", "lora.alpha/lora.r"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        over = tune.sample_overrides(study.ask(), space, cfg)
        assert over["lora.alpha"] in (over["lora.r"], 2 * over["lora.r"]) and isinstance(over["lora.alpha"], int)
        seen.add(over["lora.alpha"] // over["lora.r"])
    assert seen == {1, 2}
    assert tune.default_params(space, cfg) == {"lora.r": 16, "lora.alpha/lora.r": 2}


def test_unknown_tune_key_is_an_error():
    with pytest.raises(ValueError, match="unknown key .tune.fold.; did you mean .tune.folds."):
        tune.TuneSettings.from_cfg({"name": "x", "tune": {"fold": [0]}})


# ------------------------------------------------------------------------------------- studies on sqlite
def test_two_workers_finish_exactly_trials_then_resume(project, sample_dir, workdir):
    space = {
        "params.max_depth": {"type": "int", "low": 2, "high": 4},
        "params.learning_rate": {"type": "float", "low": 0.1, "high": 0.5, "log": True},
    }
    model = project("two", search_space=space, tune={"pruner": "none", "folds": [0]})
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [PY, "-m", "lmsys_arena", *_tune_argv(sample_dir, model, "two", 4, "--workers", "2")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cli.main(_tune_argv(sample_dir, model, "two", 6))  # resume the same study up to 6 trials
    study = optuna.load_study(study_name="two", storage="sqlite:///studies/two.db")
    st = _states(study)
    assert len(st[S.COMPLETE]) == 6 and not st[S.RUNNING] and not st[S.WAITING] and not st[S.FAIL]
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert "worker 0: done" in r.stderr and "worker 1: done" in r.stderr  # two processes shared the study
    assert study.trials[0].user_attrs["baseline"] and study.trials[0].params == {
        "params.max_depth": 3,
        "params.learning_rate": 0.3,
    }
    for t in study.trials:  # each trial is a run folder written by runner.train_run
        assert (workdir / t.user_attrs["run_dir"] / "fold0" / "valid.parquet").exists()
    assert study.user_attrs["folds"] == [0] and study.user_attrs["model"] == "two"


def test_pruning_best_yaml_and_params_best_reproduce(project, sample_dir, workdir):
    # a known-bad region: learning rate 1e-6 leaves the model at the prior; with identical good trials
    # (max_depth fixed) the median pruner can only stop the bad ones
    space = {"params.learning_rate": {"type": "categorical", "choices": [0.3, 1e-6]}}
    model = project(
        "prune",
        search_space=space,
        tune={"sampler": "random", "pruner": "median", "prune_startup_trials": 2, "folds": [0, 1]},
    )
    cli.main(_tune_argv(sample_dir, model, "prune", 6))
    study = optuna.load_study(study_name="prune", storage="sqlite:///studies/prune.db")
    st = _states(study)
    assert len(st[S.COMPLETE]) + len(st[S.PRUNED]) == 6
    assert st[S.PRUNED], "the bad region was never pruned"
    assert all(t.params["params.learning_rate"] == 1e-6 for t in st[S.PRUNED])
    assert all(len(t.intermediate_values) == 1 for t in st[S.PRUNED])  # stopped after fold 0 of 2
    good = [t.value for t in st[S.COMPLETE] if t.params["params.learning_rate"] == 0.3]
    assert max(good) - min(good) < 1e-12  # deterministic objective

    cli.main(["best", "--study", "prune"])
    doc = yaml.safe_load((workdir / "studies/prune.best.yaml").read_text())
    assert doc["params"] == {"params.learning_rate": 0.3} and doc["trials"] == 6
    assert doc["pruned"] == len(st[S.PRUNED]) and abs(doc["value"] - study.best_value) < 1e-12
    for kind in ("history", "importance"):
        png = workdir / f"studies/prune.{kind}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert load_params_file(workdir / "studies/prune.best.yaml") == {"params.learning_rate": 0.3}

    # make train MODEL=... PARAMS=best STUDY=prune
    cli.main(
        [
            "train",
            "--data",
            str(sample_dir),
            "--model",
            model,
            "--params",
            "best",
            "--study",
            "prune",
            "--run",
            "again",
            "--only-folds",
            "0,1",
        ]
    )  # the study's folds
    oof = json.loads((workdir / "runs/again/metrics.json").read_text())["oof_logloss"]
    assert abs(oof - study.best_value) < 1e-3


def test_resume_refuses_another_objective(project, sample_dir):
    space = {"params.max_depth": {"type": "int", "low": 2, "high": 4}}
    model = project("obj", search_space=space, tune={"folds": [0]})
    cli.main(_tune_argv(sample_dir, model, "obj", 1))
    with pytest.raises(SystemExit):  # the CLI turns the RuntimeError into a one-line error, exit 2
        cli.main(_tune_argv(sample_dir, model, "obj", 2, "--set", "num_boost_round=30"))
    cli.main(_tune_argv(sample_dir, model, "obj", 2, "--set", "threads=2"))  # threads do not change results


def test_row_budget_samples_train_rows(project, sample_dir):
    from lmsys_arena.run_inputs import RunSpec
    from lmsys_arena.runner import train_run

    cfg = load_config(project("budget"))
    m = train_run(cfg, "runs/budget", RunSpec(data=str(sample_dir), max_rows=300), only_folds=[0, 1, 2])
    assert m["rows"] == 300
    m2 = train_run(cfg, "runs/budget", RunSpec(data=str(sample_dir), max_rows=300))  # resumes: same sample
    assert m2["oof_logloss"] == m["oof_logloss"]


# ------------------------------------------------------------------------------------- PostgreSQL
def _postgres_url() -> str:
    url = os.environ.get("LMSYS_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but LMSYS_TEST_POSTGRES_URL is unset: .ci/run should have started PostgreSQL")
        pytest.skip("LMSYS_TEST_POSTGRES_URL unset (.ci/run starts a throwaway PostgreSQL and sets it)")
    return url


def test_postgres_sigkilled_worker_is_failed_and_retried(project, sample_dir, workdir):
    url = _postgres_url()
    study_name = f"kill-{uuid.uuid4().hex[:8]}"
    # slow enough folds (no early stop) that a kill lands mid-trial; 1 s heartbeats, stale after 3 s
    model = project(
        "pg",
        num_boost_round=120,
        early_stopping_rounds=1000,
        search_space={"params.max_depth": {"type": "int", "low": 3, "high": 5}},
        tune={"sampler": "random", "pruner": "none", "heartbeat_interval": 1, "grace_period": 3},
    )
    argv = [PY, "-m", "lmsys_arena", *_tune_argv(sample_dir, model, study_name, 3, "--storage", url)]
    url = tune.normalize_url(url)  # the CLI takes plain postgresql:// (psycopg2 underneath)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    logs = [open(workdir / f"worker{i}.log", "w") for i in range(2)]
    victim, survivor = (subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env) for f in logs)
    killed = None
    deadline = time.time() + 180
    try:
        while killed is None and time.time() < deadline and victim.poll() is None:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name=study_name, storage=url)
            except KeyError:  # not created yet
                continue
            for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
                if t.user_attrs.get("worker", "").endswith(f":{victim.pid}") and t.intermediate_values:
                    os.kill(victim.pid, signal.SIGKILL)  # mid-trial: one fold done, more to go
                    killed = t.number
                    break
        assert killed is not None, "never saw worker 0 mid-trial: " + (workdir / "worker0.log").read_text()[-2000:]
        survivor.wait(300)
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
        for f in logs:
            f.close()
    log = (workdir / "worker1.log").read_text()
    assert survivor.returncode == 0, log[-3000:]
    study = optuna.load_study(study_name=study_name, storage=url)
    st = _states(study)
    assert len(st[S.COMPLETE]) + len(st[S.PRUNED]) == 3 and not st[S.RUNNING] and not st[S.WAITING]
    assert [t.number for t in st[S.FAIL]] == [killed]  # heartbeat went stale -> FAIL
    retries = [t for t in st[S.COMPLETE] if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == study.trials[killed].params
    retry = retries[0].number
    assert f"resuming trial-{killed}" in log  # the retry took over the dead worker's finished folds
    assert not (workdir / f"runs/tune-{study_name}/trial-{killed}").exists()
    assert (workdir / f"runs/tune-{study_name}/trial-{retry}/oof.parquet").exists()


def test_opening_a_fresh_database_retries_when_another_worker_creates_its_tables(monkeypatch, tmp_path):
    # two machines started at once on an empty PostgreSQL database: the second CREATE TABLE fails
    import optuna.storages
    from sqlalchemy.exc import IntegrityError

    from lmsys_arena.tune import storage

    real, calls = optuna.storages.RDBStorage, []

    def racing(url, **kw):
        calls.append(url)
        if len(calls) == 1:
            raise IntegrityError("CREATE TABLE alembic_version", {}, Exception("already exists"))
        return real(url, **kw)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    got = storage.open_storage(f"sqlite:///{tmp_path}/s.db", TuneSettings())
    assert isinstance(got, real) and len(calls) == 2

    def always(url, **kw):
        raise IntegrityError("CREATE TABLE studies", {}, Exception("duplicate key"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", always)
    with pytest.raises(IntegrityError):  # a lasting error still surfaces
        storage.open_storage(f"sqlite:///{tmp_path}/t.db", TuneSettings())


# ------------------------------------------------------------------------------------- resume, no replays
RESUME = {  # three keys the config sets: trial 0 (the baseline) is fully fixed; 4 random trials, then TPE
    "search_space": {
        "params.max_depth": {"type": "int", "low": 2, "high": 6},
        "params.learning_rate": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
        "params.subsample": {"type": "float", "low": 0.5, "high": 1.0},
    },
    "params": {"max_depth": 3, "learning_rate": 0.3, "subsample": 0.9},
    "tune": {"pruner": "none", "folds": [0], "max_rows": 400, "startup_trials": 4},
}


def _params_key(t) -> tuple:
    return tuple(sorted(t.params.items()))


def _assert_no_replays(study) -> list:
    """COMPLETE trials hold distinct parameter sets, except retries of a dead worker's trial."""
    done = _states(study)[S.COMPLETE]
    fresh = [t for t in done if t.system_attrs.get("failed_trial") is None]
    keys = [_params_key(t) for t in fresh]
    assert len(set(keys)) == len(keys), [(t.number, t.params) for t in fresh]
    for t in done:
        if t.system_attrs.get("failed_trial") is not None:  # a retry repeats the dead trial's params, on purpose
            dead = study.trials[t.system_attrs["failed_trial"]]
            if dead.params:  # a worker killed before its trial drew any parameter leaves the retry to draw them
                assert t.params == dead.params
    return done


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_workers_with_one_seed_on_one_storage_never_repeat_a_draw(sampler):
    # two processes (or machines) with the same SEED share a storage: trials are seeded by number,
    # so they draw different points, and the sequence is the one a single process proposes
    settings = tune.TuneSettings(sampler=sampler, startup_trials=3)
    space = {"x": optuna.distributions.FloatDistribution(-3, 3), "y": optuna.distributions.IntDistribution(0, 99)}

    def run(studies, n=10):
        for i in range(n):
            study = studies[i % len(studies)]
            trial = study.ask(space)
            study.tell(trial, (trial.params["x"] - 1) ** 2 + trial.params["y"] / 100)
        return [t.params for t in studies[0].trials]

    storage = optuna.storages.InMemoryStorage()
    shared = [
        optuna.create_study(
            study_name="s", storage=storage, load_if_exists=True, sampler=tune.make_sampler(settings, 0)
        )
        for _ in range(2)
    ]
    params = run(shared)
    assert len({tuple(p.values()) for p in params}) == len(params) == 10
    assert run([optuna.create_study(sampler=tune.make_sampler(settings, 0))]) == params


def test_resumed_study_draws_new_params_and_matches_an_uninterrupted_run(project, sample_dir):
    model = project("resume", **RESUME)
    cli.main(_tune_argv(sample_dir, model, "resume", 3))
    cli.main(_tune_argv(sample_dir, model, "resume", 6))  # a new process used to replay trials 1, 2 as 3, 4
    study = optuna.load_study(study_name="resume", storage="sqlite:///studies/resume.db")
    assert len(_assert_no_replays(study)) == 6 and len(study.trials) == 6
    # reproducible: the same study from scratch with the same seed proposes the same sequence, and
    # stopping and resuming changes nothing (random startup trials 0-3, then TPE trials 4-5)
    cli.main(_tune_argv(sample_dir, model, "straight", 6))
    straight = optuna.load_study(study_name="straight", storage="sqlite:///studies/straight.db")
    assert [t.params for t in straight.trials] == [t.params for t in study.trials]
    cli.main(_tune_argv(sample_dir, model, "other", 2, "--seed", "1"))  # another seed, other draws
    other = optuna.load_study(study_name="other", storage="sqlite:///studies/other.db")
    assert other.trials[0].params == study.trials[0].params and other.trials[1].params != study.trials[1].params


def test_rerun_after_a_killed_worker_draws_new_params(project, sample_dir, workdir):
    # slow enough folds (no early stop) that the kill lands mid-trial; 1 s heartbeats, stale after 2 s
    model = project(
        "killed",
        num_boost_round=150,
        early_stopping_rounds=1000,
        **{**RESUME, "tune": {**RESUME["tune"], "heartbeat_interval": 1, "grace_period": 2}},
    )
    url = "sqlite:///studies/killed.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(workdir / "victim.log", "w") as fh:
        victim = subprocess.Popen(
            [PY, "-m", "lmsys_arena", *_tune_argv(sample_dir, model, "killed", 5)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
        killed, deadline = None, time.time() + 120
        try:
            while killed is None and time.time() < deadline and victim.poll() is None:
                time.sleep(0.2)
                try:
                    running = optuna.load_study(study_name="killed", storage=url).get_trials(
                        deepcopy=False, states=(S.RUNNING,)
                    )
                except Exception:  # not created yet, or the victim holds the write lock
                    continue
                if running and running[0].number >= 2:  # trials 0 (baseline) and 1 (a random draw) are done
                    os.kill(victim.pid, signal.SIGKILL)
                    killed = running[0].number
        finally:
            if victim.poll() is None:
                victim.kill()
            victim.wait()
    assert killed is not None, "never saw trial 2 running: " + (workdir / "victim.log").read_text()[-2000:]
    cli.main(_tune_argv(sample_dir, model, "killed", 5))  # `make tune` again: same seed, new process
    study = optuna.load_study(study_name="killed", storage=url)
    st = _states(study)
    assert [t.number for t in st[S.FAIL]] == [killed] and not st[S.RUNNING] and not st[S.WAITING]
    done = _assert_no_replays(study)
    assert len(done) == 5
    assert [t.number for t in done if t.system_attrs.get("failed_trial") == killed]  # the dead trial was retried
