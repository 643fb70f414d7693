"""Tests for bugs that mutation testing planted and the default run did not catch (issue 26, item 7).

Each test names the planted bug it catches:
- the runner holding out the validation split with seed 0 instead of the spec's seed;
- `StrategyStudy.best()` with maximize and minimize swapped;
- a hyperparameter (e.g. `periods`) dropped from the run-id hash;
- a diverged trial told +inf on a maximize study (it would then be Optuna's best trial);
- the stability gap's "recovered" threshold at start - 0.9 gap instead of within 10% of the gap.
"""

from __future__ import annotations

import math

import pytest

from nlbench.core.registry import HParam, declared_hparams, strategies
from nlbench.core.spec import resolve_spec
from nlbench.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in tensor.flatten(1)}


# --------------------------------------------------------------------------------------------------
# The tuning seed reaches the validation split (planted: `hold_out(benchmark, spec.holdout, 0)`)


def test_a_tuning_run_with_a_nonzero_seed_is_evaluated_on_that_seeds_validation_split(digits, monkeypatch):
    from avalanche.core import SupervisedPlugin

    import nlbench.core.runner as runner
    from nlbench.data.streams import hold_out

    evaluated: set[bytes] = set()

    class Recorder(SupervisedPlugin):  # observes the real run's evaluation minibatches; changes nothing
        def before_eval_forward(self, strategy, **kwargs):
            evaluated.update(_rows(strategy.mb_x.cpu()))

    build = runner.build_strategy

    def build_with_recorder(spec, benchmark, device):
        strategy, evaluator = build(spec, benchmark, device)
        strategy.plugins.append(Recorder())
        return strategy, evaluator

    monkeypatch.setattr(runner, "build_strategy", build_with_recorder)
    seed = 3
    result = runner.run_one(resolve_spec("split-digits", "adam", device="cpu", seed=seed, epochs=1, holdout=0.1),
                            benchmark=digits)
    assert result["status"] == "completed"
    held = {s: set().union(*(_rows(e.nlbench_tensors[0]) for e in hold_out(digits, 0.1, s).test_stream)) for s in (0, seed)}
    assert held[0] != held[seed]  # the seed matters, so the check below can tell them apart
    assert evaluated == held[seed], "the run was not evaluated on its own seed's validation split"


# --------------------------------------------------------------------------------------------------
# The best trial, both directions, with hand-made Optuna trials


def _study(direction: str, told: list[tuple[str, float | None]]):
    """A real Optuna study told hand-made outcomes (status, selection metric) through `tell`."""
    from nlbench.commands.tune.study import TrialRecord, ask, new_study, tell

    entry = new_study("adam", {}, "random", 0, len(told), direction)
    for number, (status, value) in enumerate(told):
        ask(entry)
        result = {"status": status, "metrics": {"acc": value}} if status != "not run" else None
        tell(entry, TrialRecord(number, {"lr": 10.0 ** -number}, spec=None), result, "acc")
    return entry


@pytest.mark.parametrize("direction, best_number", [("maximize", 2), ("minimize", 1)])
def test_the_best_trial_is_the_highest_when_maximizing_and_the_lowest_when_minimizing(direction, best_number):
    told = [("completed", 0.5), ("completed", 0.2), ("completed", 0.9), ("completed", 0.9), ("failed", None),
            ("completed", 0.4)]
    entry = _study(direction, told)
    best = entry.best()
    assert best is not None and best.number == best_number  # maximize: 0.9 twice, the earlier wins
    assert best.value == (0.9 if direction == "maximize" else 0.2)
    assert entry.study.best_trial.number == best_number  # Optuna agrees on the direction it was given


def test_no_completed_trial_means_nothing_is_chosen():
    assert _study("maximize", [("failed", None), ("diverged", None), ("not run", None)]).best() is None


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_diverged_trial_is_told_the_worst_value_and_is_never_chosen(direction):
    """Planted: a diverged trial told +inf on a maximize study. Optuna would then rank it first and TPE
    would sample around the learning rate that diverged."""
    told = [("completed", 0.3), ("diverged", None), ("completed", 0.6), ("diverged", None)]
    entry = _study(direction, told)
    diverged = [t for t in entry.trials if t.status == "diverged"]
    completed = [t.value for t in entry.trials if t.status == "completed"]
    for trial in diverged:
        assert trial.value is not None
        worse = (lambda v: trial.value <= v) if direction == "maximize" else (lambda v: trial.value >= v)
        assert all(worse(v) for v in completed), (direction, trial.value, completed)
    assert entry.study.best_trial.number in (0, 2)
    assert entry.best().number == (2 if direction == "maximize" else 0)
    # even a diverged trial whose told value would rank first is never chosen
    entry.trials[1].value = math.inf if direction == "maximize" else -math.inf
    assert entry.best().status == "completed"


# --------------------------------------------------------------------------------------------------
# Every declared hyperparameter is part of the run id


def _non_default_values(hparam: HParam) -> list:
    """Valid values other than the default, by declared kind, range and choices (most ordinary first)."""
    default = hparam.default
    if hparam.kind == "bool":
        candidates = [not default]
    elif hparam.choices:
        candidates = [c for c in hparam.choices if c != default]
    elif hparam.kind == "ints":
        last = default[-1]
        candidates = [(*default[:-1], last + 1), (*default[:-1], last - 1), (*default, last + 1), tuple(v + 1 for v in default)]
    elif hparam.kind == "int":
        candidates = [default + 1, default - 1, hparam.low, hparam.high]
    elif hparam.kind == "float":
        candidates = [default * 2, default / 2, default + 0.5, default - 0.5, hparam.low, hparam.high]
        if hparam.low is not None and hparam.high is not None:
            candidates.append((hparam.low + hparam.high) / 2)
    else:  # free text
        candidates = [f"{default}x"]
    valid = []
    for value in candidates:
        if value is None or value == default:
            continue
        try:
            valid.append(hparam.validate(value))
        except UserError:
            continue
    return valid


def _base_spec(strategy: str, **kwargs):
    info = strategies()[strategy]
    for suite in ("split-digits", "permuted-fmnist", "bigram-shift", "split-cifar10"):
        for scenario in info.scenarios or ("class",):
            try:
                return resolve_spec(suite, strategy, device="cpu", scenario=scenario, **kwargs)
            except UserError:
                continue
    raise AssertionError(f"no suite accepts {strategy}")


def test_every_declared_hyperparameter_of_every_strategy_changes_the_run_id():
    """Planted: `periods` dropped from the hash. For each registered strategy and each hyperparameter it
    declares (the default optimizer's included), a valid non-default value gives another run id."""
    checked = 0
    for strategy in sorted(strategies()):
        base = _base_spec(strategy)
        for name, hparam in sorted(declared_hparams(strategy).items()):
            values = _non_default_values(hparam)
            assert values, f"{strategy}.{name}: no valid non-default value for {hparam}"
            spec = None
            for value in values:  # a value the strategy's own cross-checks refuse: try the next
                try:
                    spec = resolve_spec(base.suite, strategy, device="cpu", scenario=base.scenario, hparams={name: value})
                    break
                except UserError:
                    continue
            assert spec is not None, f"{strategy}.{name}: every non-default value {values} was refused"
            assert spec.hp[name] != base.hp.get(name, hparam.default)  # mem_batch is stored only when set
            assert spec.run_id != base.run_id, f"{strategy}: {name}={value!r} does not change the run id"
            checked += 1
    assert checked >= 100 and "periods" in declared_hparams("cms")


# --------------------------------------------------------------------------------------------------
# The stability gap's recovery step


def test_recovery_is_the_first_step_back_within_ten_percent_of_the_gap_not_a_partial_rebound():
    """Planted: recovered at start - 0.9 gap. Accuracy on experience 0 starts experience 1 at 0.9, falls to
    0.5 (gap 0.4), rebounds partly to 0.6 and 0.8, and is back within 10% of the gap (>= 0.86) only at 0.87."""
    from nlbench.core.stability import boundary_gaps, summarize_curve

    iterations = [0, 5, 10, 10, 12, 14, 16, 18, 20]
    curve = {"iteration": iterations, "experience": [0, 0, 0, 1, 1, 1, 1, 1, 1], "boundaries": [0, 10], "ends": [10, 20],
             "accuracy": [[0.1], [0.6], [0.9], [0.9, 0.1], [0.5, 0.3], [0.6, 0.5], [0.8, 0.7], [0.87, 0.8], [0.88, 0.9]]}
    (pair,) = boundary_gaps(curve)
    assert pair["gap"] == pytest.approx(0.4) and pair["iterations_to_min"] == 2
    assert pair["iterations_to_recover"] == 8  # iteration 18; 0.6 (at 14) is only a partial rebound
    assert summarize_curve(curve)["iterations_to_recover"] == 8
    never = {**curve, "accuracy": curve["accuracy"][:7] + [[0.85, 0.8], [0.85, 0.9]]}  # stays just below 0.86
    assert boundary_gaps(never)[0]["iterations_to_recover"] is None
