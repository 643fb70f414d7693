"""Nested Learning optimizers as Avalanche strategies: registered, declared, composable, and their
state (clocks, Gram statistics, memories) survives experience boundaries."""

from __future__ import annotations

import pytest
import torch

from nlbench.core.registry import declared_hparams, strategies
from nlbench.core.runner import build_strategy, run_one
from nlbench.core.spec import resolve_spec

NL_OPTIMIZERS = ["deep-l2gd", "deep-l2gd-ema", "nl-memory", "dmgd", "delta-momentum", "muon", "nested-adam"]


def test_nl_optimizers_are_registered_with_sweepable_hyperparameters():
    registered = strategies()
    for name in NL_OPTIMIZERS:
        assert registered[name].family == "nested-learning" and registered[name].provides_optimizer
    assert {"alpha", "rho", "lr"} <= set(declared_hparams("deep-l2gd"))
    assert "beta" in declared_hparams("deep-l2gd-ema")
    assert "v_period" in declared_hparams("nested-adam")


def _state_snapshot(optimizer):
    """Every tensor and counter the optimizer holds, as plain copies."""
    flat = {}
    for key, value in optimizer.state_dict()["state"].items():
        for name, item in (value.items() if isinstance(value, dict) else [("value", value)]):
            flat[(key, name)] = item.clone() if torch.is_tensor(item) else item
    return flat


@pytest.mark.parametrize("name", NL_OPTIMIZERS)
def test_state_survives_the_experience_boundary(name, digits):
    spec = resolve_spec("split-digits", name, device="cpu", epochs=1)
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    optimizer = strategy.optimizer
    strategy.train(digits.train_stream[0])
    after_first = _state_snapshot(optimizer)
    assert after_first, f"{name} kept no state"
    strategy.train(digits.train_stream[1])
    assert strategy.optimizer is optimizer  # never rebuilt
    after_second = _state_snapshot(optimizer)
    # Nothing was reset: every entry present after experience 0 is still there, and counters kept counting.
    assert set(after_first) <= set(after_second)
    steps = [(k, v) for k, v in after_first.items() if k[1] in ("step", "global_step") and not torch.is_tensor(v)]
    for key, value in steps:
        assert after_second[key] > value


@pytest.mark.parametrize("name", ["deep-l2gd", "nested-adam"])
def test_composes_with_replay_and_keeps_the_cl_effect(name, digits):
    alone = run_one(resolve_spec("split-digits", name, device="cpu"), benchmark=digits)
    with_replay = run_one(resolve_spec("split-digits", f"{name}+replay", device="cpu"), benchmark=digits)
    assert alone["status"] == with_replay["status"] == "completed"
    assert with_replay["metrics"]["acc"] > alone["metrics"]["acc"] + 0.2


def test_alpha_zero_deep_l2gd_reproduces_adam_on_a_real_stream(digits):
    """P1.1 at the strategy level: the hooks and the projection add nothing when alpha = 0."""
    adam = run_one(resolve_spec("split-digits", "adam", device="cpu", epochs=2), benchmark=digits)
    nl = run_one(resolve_spec("split-digits", "deep-l2gd", device="cpu", epochs=2, hparams={"alpha": 0.0}), benchmark=digits)
    assert nl["accuracy_matrix"] == adam["accuracy_matrix"]
