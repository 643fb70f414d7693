"""The `m3` strategy (Multi-scale Momentum Muon, NL-arXiv §7.2 Alg. 1; nl-math.md 8.4): registered with its
hyperparameters, Muon's parameter split, and defaults that train a real stream without diverging. The
optimizer's update rule (P8.4) is tested in tests/test_nested_adam.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nlbench.core.registry import BuildContext, build_parts, declared_hparams, resolve_hparams, strategies
from nlbench.strategies.m3.optimizer import M3

pytestmark = pytest.mark.usefixtures("one_thread")


def test_m3_is_registered_with_its_hyperparameters():
    info = strategies()["m3"]
    assert info.family == "nested-learning"
    hp = declared_hparams("m3")
    assert {"lr", "beta1", "beta2", "beta3", "alpha", "eps", "slow_period", "decay", "adam_lr"} <= set(hp)
    assert hp["lr"].default == 1e-4 and hp["eps"].default == 1e-3 and hp["decay"].default == "ema"


def _digits_mlp():
    from nlbench.models.mlp import MLP, MLPConfig

    torch.manual_seed(0)
    return MLP(MLPConfig(input_dim=64, hidden=(100, 100)))  # split-digits' backbone, head `classifier`


def _train_digits(overrides, steps=120):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    model = _digits_mlp()
    ctx = BuildContext(spec=None, suite=None, model=model, device=torch.device("cpu"))
    opt = build_parts("m3", ctx, resolve_hparams("m3", overrides)).optimizer(model, None)
    gen, worst = torch.Generator().manual_seed(1), 0.0
    for _ in range(steps):
        idx = torch.randint(0, len(X), (32,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        worst = max(worst, loss.item()) if torch.isfinite(loss) else float("inf")
    with torch.no_grad():
        acc = (model(X).argmax(1) == y).float().mean().item()
    return opt, model, worst, acc


def test_m3_defaults_train_digits_and_eps_1e8_blows_up():
    """The strategy's eps = 1e-3 floors sqrt(V): NS_5's output is scale-free, so with eps = 1e-8 a tiny-gradient
    coordinate steps by ~lr / |g| and the loss explodes (measured 1e5-1e8)."""
    opt, model, worst, acc = _train_digits({})
    assert worst < 5.0 and acc > 0.9
    _, _, worst, _ = _train_digits({"eps": 1e-8})
    assert worst > 100.0


def test_m3_strategy_sends_the_head_to_the_fallback():
    opt, model, _, _ = _train_digits({}, steps=1)
    muon_ids = {id(p) for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    hidden = [m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "classifier"]
    assert len(hidden) == 2 and muon_ids == {id(w) for w in hidden}
    head = model.classifier.weight
    assert "M1" not in opt.state[head] and "exp_avg" in opt.state[head]
    assert isinstance(opt, M3)
