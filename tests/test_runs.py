"""Real Avalanche strategies on real data (scikit-learn's 8x8 digits): the harness end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nlbench.core import metrics
from nlbench.data.readers import DEFAULT_DATA_ROOT
from nlbench.core.runner import build_strategy, run_one
from nlbench.core.spec import resolve_spec
from nlbench.data.streams import build_benchmark
from nlbench.data.suites import get_suite

BASELINES = ["adam", "sgd", "ewc", "replay", "lwf", "si", "agem", "der", "cumulative"]


def _run(strategy, benchmark, **kwargs):
    spec = resolve_spec("split-digits", strategy, device="cpu", **kwargs)
    return spec, run_one(spec, benchmark=benchmark)


@pytest.mark.parametrize("strategy", BASELINES)
def test_every_baseline_runs_a_real_stream(strategy, digits):
    spec, result = _run(strategy, digits)
    assert result["status"] == "completed", result["error"]
    matrix = np.array(result["accuracy_matrix"])
    assert matrix.shape == (5, 5) and len(result["initial_accuracy"]) == 5
    assert ((0 <= matrix) & (matrix <= 1)).all()
    # Every method learns the experience it has just seen (chance is 10% in this 10-way class-IL test).
    assert metrics.learning_accuracy(matrix) > 0.5
    assert result["metrics"]["acc"] == pytest.approx(matrix[-1].mean())
    assert len(result["experience_train_time_s"]) == 5 and result["peak_memory_mb"] > 0
    env = result["environment"]
    assert env["versions"]["avalanche-lib"].startswith("0.6") and env["versions"]["torch"]


def test_replay_forgets_less_than_fine_tuning(digits):
    """A real continual-learning effect: replay keeps old classes alive, fine-tuning overwrites them."""
    _, adam = _run("adam", digits)
    _, replay = _run("replay", digits)
    assert replay["metrics"]["acc"] > adam["metrics"]["acc"] + 0.2
    assert replay["metrics"]["forgetting"] < adam["metrics"]["forgetting"] - 0.2


def test_cumulative_is_the_upper_bound(digits):
    _, adam = _run("adam", digits)
    _, cumulative = _run("cumulative", digits)
    assert cumulative["metrics"]["acc"] > 0.85 > adam["metrics"]["acc"]


def test_same_spec_and_seed_give_the_identical_matrix(digits):
    for strategy in ("replay", "der"):
        _, first = _run(strategy, digits, epochs=2)
        _, second = _run(strategy, digits, epochs=2)
        assert first["accuracy_matrix"] == second["accuracy_matrix"]
        assert first["initial_accuracy"] == second["initial_accuracy"]
    _, other_seed = _run("replay", digits, epochs=2, seed=1)
    assert other_seed["accuracy_matrix"] != first["accuracy_matrix"]


def test_synaptic_intelligence_is_not_a_no_op(digits):
    """Avalanche 0.6's SI plugin is bitwise equal to naive fine-tuning on CPU; ours must not be."""
    _, naive = _run("adam", digits, epochs=2)
    _, si = _run("si", digits, epochs=2, hparams={"si_lambda": 10.0})
    assert si["accuracy_matrix"] != naive["accuracy_matrix"]

    spec = resolve_spec("split-digits", "si", device="cpu", epochs=1)
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    plugin = next(p for p in strategy.plugins if type(p).__name__ == "SynapticIntelligence")
    strategy.train(digits.train_stream[0])
    importances = torch.cat([omega.flatten() for omega in plugin.importance.values()])
    assert (importances >= 0).all() and importances.sum() > 0


def test_optimizer_state_survives_experience_boundaries(digits):
    spec = resolve_spec("split-digits", "adam", device="cpu", epochs=1)
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    optimizer = strategy.optimizer
    strategy.train(digits.train_stream[0])
    steps_after_first = max(int(s["step"]) for s in optimizer.state.values())
    strategy.train(digits.train_stream[1])
    assert strategy.optimizer is optimizer
    assert max(int(s["step"]) for s in optimizer.state.values()) > steps_after_first


@pytest.mark.parametrize("head", ["mask", "multi"])
def test_task_incremental_scenario(head):
    benchmark = build_benchmark(get_suite("split-digits"), "task", seed=0, data_root=DEFAULT_DATA_ROOT)
    assert [exp.task_label for exp in benchmark.test_stream] == [0, 1, 2, 3, 4]
    spec = resolve_spec("split-digits", "adam", device="cpu", scenario="task", head=head, epochs=2)
    result = run_one(spec, benchmark=benchmark)
    assert result["status"] == "completed", result["error"]
    # With the task label given, each experience is a 2-way problem: fine-tuning forgets far less
    # than in the class-incremental scenario, where it collapses to the last experience.
    assert result["metrics"]["acc"] > 0.8


def test_diverging_run_is_recorded_with_its_last_good_rows(digits):
    # The CLI caps lr at 10; build the spec past that on purpose to force NaN losses.
    valid = resolve_spec("split-digits", "sgd", device="cpu", epochs=1)
    spec = dataclasses.replace(valid, hparams=tuple({**valid.hp, "lr": 1e6}.items()))
    result = run_one(spec, benchmark=digits)
    assert result["status"] == "diverged" and "NaN" in result["error"]
    assert len(result["accuracy_matrix"]) < 5 and result["metrics"] == {}


def test_composite_strategy_combines_plugins(digits):
    spec, result = _run("ewc+replay", digits, epochs=1)
    assert result["status"] == "completed", result["error"]
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    assert {"EWCPlugin", "DeviceReplay"} <= {type(p).__name__ for p in strategy.plugins}
