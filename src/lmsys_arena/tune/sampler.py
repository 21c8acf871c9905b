"""A sampler seeded per trial: trial ``n`` of a study draws from a fresh TPE/random sampler seeded by
``(seed, n)``.

One sampler seeded once per process replays its random draws whenever a process starts again on
the same study: ``make tune TRIALS=3`` then ``TRIALS=6``, or a rerun after a kill, made the new
process's trials copies of the first process's. Trial numbers are unique within a study's storage
(whichever worker, process or machine creates the trial), so seeding by them never repeats a draw,
and the same study from scratch with the same seed proposes the same sequence, whether it ran in
one go or was stopped and resumed (TPE's later trials depend only on the seed and the history).
Trials with fixed parameters (trial 0, the enqueued baseline; a dead worker's retried trial) do not
sample them.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.samplers import BaseSampler


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``: independent streams for every (seed, number) pair."""
    return int(np.random.SeedSequence([seed % 2**63, number]).generate_state(1)[0])


def base_sampler(s, seed: int) -> BaseSampler:
    """The sampler the ``tune:`` section asks for (``s``: TuneSettings), seeded with ``seed``."""
    with warnings.catch_warnings():  # multivariate / constant_liar are "experimental": once per trial is noise
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # constant_liar: running trials count as bad guesses, so parallel workers spread out
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=s.startup_trials, multivariate=True, constant_liar=True
        )


class TrialSeededSampler(BaseSampler):
    """Delegates each trial to ``base_sampler(settings, trial_seed(seed, trial.number))``.

    The samplers keep no state between trials besides their random generator (TPE reads the
    history from the storage), so a fresh one per trial samples exactly as one long-lived sampler
    would, without replaying its draws in a new process.
    """

    def __init__(self, settings, seed: int):
        self._settings, self._seed = settings, seed
        self._per_trial: dict[int, BaseSampler] = {}  # by trial number: safe with n_jobs > 1 threads

    def _for(self, trial) -> BaseSampler:
        inner = self._per_trial.get(trial.number)
        if inner is None:
            inner = self._per_trial[trial.number] = base_sampler(self._settings, trial_seed(self._seed, trial.number))
        return inner

    def __str__(self) -> str:
        return f"{base_sampler(self._settings, 0).__class__.__name__} (seeded per trial)"

    def before_trial(self, study, trial) -> None:
        self._per_trial.pop(trial.number, None)  # a trial number is sampled once; start clean
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._per_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """No-op: Optuna reseeds samplers for ``n_jobs > 1`` threads, whose trials differ in number
        (so in seed) here already."""
