"""DeepL2GD's rho guard, measured: how often a = min(alpha, rho / lambda_max(G)) cut alpha (nl-math.md 1.4),
per layer, through `diagnostics()`; kept across a checkpoint; stored in result.json by the runner, by clock
level when DeepL2GD is the base of a clocked method (`cms+deep-l2gd`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nlbench.strategies.deep_l2gd.optimizer import DeepL2GD


def _layer_and_inputs(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()  # the head "2" is not projected
    x = 3.0 * torch.randn(4, 6, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return model, x


def _steps(model, opt, x, n):
    for _ in range(n):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()


@pytest.mark.parametrize("alpha,bound", [(1.0, True), (1e-6, False)])
def test_the_guard_tally_counts_the_projections_the_guard_cut(alpha, bound):
    model, x = _layer_and_inputs()
    opt = DeepL2GD(model, lr=1e-3, alpha=alpha, rho=0.5, base="sgd")
    _steps(model, opt, x, 3)
    d = opt.diagnostics()
    assert d["projections"] == 3 and d["guard_bound"] == (3 if bound else 0)
    assert d["guard_rate"] == (1.0 if bound else 0.0)
    lam = torch.linalg.eigvalsh(x.T @ x / len(x))[-1].item()  # the first step's Gram; W changes, x does not
    expected = min(alpha, 0.5 / lam) / alpha
    assert d["alpha_eff_over_alpha"] == pytest.approx(expected, rel=1e-9)
    assert set(d["layers"]) == {"0"} and d["layers"]["0"]["projections"] == 3


def test_alpha_zero_reports_nothing():
    model, x = _layer_and_inputs()
    opt = DeepL2GD(model, lr=1e-3, alpha=0.0, base="sgd")
    _steps(model, opt, x, 2)
    assert opt.diagnostics() == {}


def test_the_tally_survives_a_checkpoint():
    model, x = _layer_and_inputs()
    opt = DeepL2GD(model, lr=1e-3, alpha=1.0, rho=0.5, base="sgd")
    _steps(model, opt, x, 2)
    restored_model, _ = _layer_and_inputs()
    restored_model.load_state_dict(model.state_dict())
    restored = DeepL2GD(restored_model, lr=1e-3, alpha=1.0, rho=0.5, base="sgd")
    restored.load_state_dict(opt.state_dict())
    assert restored.diagnostics() == opt.diagnostics()
    _steps(model, opt, x, 1)
    _steps(restored_model, restored, x, 1)
    assert restored.diagnostics() == opt.diagnostics() and opt.diagnostics()["projections"] == 3


def test_a_clocked_run_stores_the_guard_by_level_with_one_projection_per_level_update():
    """cms+deep-l2gd on real digits: every layer of a level is projected once per update of its level."""
    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec
    from nlbench.data.readers import DEFAULT_DATA_ROOT
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    benchmark = build_benchmark(get_suite("split-digits"), "class", 0, DEFAULT_DATA_ROOT)
    spec = resolve_spec("split-digits", "cms+deep-l2gd", device="cpu", epochs=1,
                        hparams={"alpha": 1e-2, "periods": "1,2,4"})
    result = run_one(spec, benchmark=benchmark)
    assert result["status"] == "completed", result["error"]
    levels, clocks = result["diagnostics"], result["clocks"]
    assert len(levels) == len(clocks["updates"])
    for i, updates in enumerate(clocks["updates"]):
        level = levels[f"level_{i}"]
        assert level["layers"] and all(v["projections"] == updates for v in level["layers"].values()), (i, level)
        assert 0.0 <= level["guard_rate"] <= 1.0 and 0.0 < level["alpha_eff_over_alpha"] <= 1.0
