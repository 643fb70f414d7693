"""The Optuna side of a tune: one study per strategy, asked and told in lock-step rounds.

Round r asks every strategy's study for its r-th trial, the trials of the round run together through
the executor, and each value is told back before round r+1 is asked. Every strategy therefore gets
exactly `budget` trials, TPE sees each strategy's trials one at a time (as a sequential search would),
and which values are drawn does not depend on how many runs execute at once. Samplers are seeded with
the tuning seed, so the same command draws the same trials again: a resumed tune finds its stored
trials and tells their stored values, and continues where it stopped.

Values told: the selection metric of a completed trial; a diverged trial (NaN/inf loss) scores the
worst possible value (0 accuracy), since a learning rate that diverges is a bad choice; a failed trial
(a crash, not the configuration's doing) is told as failed and is never chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

TPE_STARTUP_FRACTION = 0.5  # the first half of the budget is drawn at random, then TPE takes over


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    spec: Any  # the validation RunSpec
    value: float | None = None
    status: str = "not run"


@dataclass
class StrategyStudy:
    strategy: str
    space: Mapping[str, Any]  # name -> Dimension
    study: Any  # optuna.Study
    trials: list[TrialRecord] = field(default_factory=list)
    pending: Any = None  # the optuna trial asked this round

    def best(self) -> TrialRecord | None:
        """The completed trial with the best value (the earliest on a tie); None when none completed."""
        scored = [t for t in self.trials if t.value is not None and t.status == "completed"]
        if not scored:
            return None
        maximize = self.study.direction.name == "MAXIMIZE"
        return sorted(scored, key=lambda t: ((-t.value if maximize else t.value), t.number))[0]


def make_sampler(name: str, seed: int, budget: int) -> Any:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(1, min(budget, round(budget * TPE_STARTUP_FRACTION)))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def new_study(strategy: str, space: Mapping[str, Any], sampler: str, seed: int, budget: int, direction: str) -> StrategyStudy:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=make_sampler(sampler, seed, budget),
                                study_name=strategy)
    return StrategyStudy(strategy, space, study)


def ask(entry: StrategyStudy) -> dict[str, Any]:
    """Ask the study for its next trial; return the hyperparameters it draws (in the space's order)."""
    entry.pending = entry.study.ask()
    return {name: dim.suggest(entry.pending) for name, dim in entry.space.items()}


def tell(entry: StrategyStudy, record: TrialRecord, result: Mapping[str, Any] | None, metric: str) -> None:
    """Tell the study the outcome of its pending trial (see the module docstring) and keep the record."""
    import optuna

    status = (result or {}).get("status", "not run")
    value = ((result or {}).get("metrics") or {}).get(metric) if status == "completed" else None
    if status == "diverged":
        value = 0.0 if entry.study.direction.name == "MAXIMIZE" else float("inf")
    record.status = status
    if value is None or value != value:
        record.value = None
        entry.study.tell(entry.pending, state=optuna.trial.TrialState.FAIL)
    else:
        record.value = float(value)
        entry.study.tell(entry.pending, record.value)
    entry.trials.append(record)
    entry.pending = None
