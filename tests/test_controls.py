"""The controls: `cms-sync`, `cms-frozen`, `clocked-adam-sync`, `hope-sync`, `hope-frozen` (the clocked network without its clock)
and the two-timescale optimizers `lookahead` and `ademamix` (pytorch-optimizer), as optimizers and
through `run` (with replay) and `sweep`; `tune` runs `cms-sync+replay` in tests/test_tune.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nlbench.core.registry import strategies
from nlbench.core.runner import build_strategy, run_one
from nlbench.core.spec import resolve_spec
from nlbench.strategies.cms.clocks import ClockedOptimizer

pytestmark = pytest.mark.usefixtures("one_thread")
CONTROLS = ("cms-sync", "cms-frozen", "clocked-adam-sync", "hope-sync", "hope-frozen", "lookahead", "ademamix")


def test_controls_are_registered_as_controls_without_loading_torch():
    known = strategies()
    assert all(known[name].family == "control" for name in CONTROLS)
    code = ("import sys; import nlbench.strategies.clock_controls, nlbench.strategies.two_timescale; "
            "print(sorted(m for m in ('torch', 'numpy', 'avalanche', 'pytorch_optimizer') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def _step(strategy, x, y):
    strategy.optimizer.zero_grad()
    torch.nn.functional.cross_entropy(strategy.model(x), y).backward()
    strategy.optimizer.step()


def _batch(n=16):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_sync_steps_every_level_every_step_with_lr_over_its_period(digits):
    spec = resolve_spec("split-digits", "cms-sync", device="cpu", hparams={"periods": "1,8,64", "lr": 0.004})
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    optimizer = strategy.optimizer
    assert isinstance(optimizer, ClockedOptimizer) and set(optimizer.periods) == {1}
    wired = {g["level"]: g for g in optimizer.param_groups}
    periods = (1, 8, 64)
    for index, base in enumerate(optimizer.bases):
        level = optimizer.param_groups[index]["level"]
        assert base.param_groups[0]["lr"] == pytest.approx(0.004 / periods[level])
    assert len(wired) == 3, "the CMS network's three levels are kept"
    before = [p.detach().clone() for p in strategy.model.parameters()]
    x, y = _batch()
    _step(strategy, x, y)
    assert all(not torch.equal(a, p) for a, p in zip(before, strategy.model.parameters()) if p.requires_grad)
    assert optimizer.level_updates == [1, 1, 1]
    plain = resolve_spec("split-digits", "cms-sync", device="cpu", hparams={"lr_scale": "none", "lr": 0.004})
    assert {b.param_groups[0]["lr"] for b in build_strategy(plain, digits, torch.device("cpu"))[0].optimizer.bases} == {0.004}


def test_clocked_adam_sync_without_lr_scaling_is_adam_bitwise(digits):
    """With every period 1 and the base lr, the control is plain training: the same matrix as `adam`."""
    plain = run_one(resolve_spec("split-digits", "adam", device="cpu", epochs=1), benchmark=digits)
    sync = run_one(resolve_spec("split-digits", "clocked-adam-sync", device="cpu", epochs=1, hparams={"lr_scale": "none"}),
                   benchmark=digits)
    assert sync["status"] == "completed", sync["error"]
    assert sync["accuracy_matrix"] == plain["accuracy_matrix"]


def test_frozen_keeps_the_slow_levels_at_their_initialisation(digits):
    spec = resolve_spec("split-digits", "cms-frozen", device="cpu", hparams={"periods": "1,8,64"})
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    optimizer = strategy.optimizer
    assert optimizer.periods == [1]
    fast = {id(p) for p in optimizer.param_groups[0]["params"]}
    frozen = [p for p in strategy.model.parameters() if id(p) not in fast]
    assert frozen and all(not p.requires_grad for p in frozen)
    before = [p.detach().clone() for p in frozen]
    strategy.train(digits.train_stream[0])
    assert all(torch.equal(a, p) for a, p in zip(before, frozen))
    assert all(p.grad is None for p in frozen)


def test_lookahead_and_ademamix_are_the_packages_optimizers(digits):
    from pytorch_optimizer import AdEMAMix, Lookahead

    look = build_strategy(resolve_spec("split-digits", "lookahead", device="cpu", hparams={"k": 3}), digits, torch.device("cpu"))[0]
    assert isinstance(look.optimizer, Lookahead) and isinstance(look.optimizer.optimizer, torch.optim.Adam)
    assert look.optimizer.k == 3
    sgd = build_strategy(resolve_spec("split-digits", "lookahead", device="cpu", hparams={"optimizer": "sgd"}), digits,
                         torch.device("cpu"))[0]
    assert isinstance(sgd.optimizer.optimizer, torch.optim.SGD)
    mix = build_strategy(resolve_spec("split-digits", "ademamix", device="cpu", hparams={"beta3": 0.999}), digits,
                         torch.device("cpu"))[0]
    assert isinstance(mix.optimizer, AdEMAMix) and mix.optimizer.param_groups[0]["betas"][2] == 0.999


@pytest.mark.parametrize("name", ["cms-sync+replay", "cms-frozen+replay", "lookahead+replay", "ademamix+replay"])
def test_controls_compose_with_replay_through_run(name, tmp_path):
    from nlbench.commands.run import plan_specs, run_specs
    from nlbench.core.store import load_results

    (spec,) = plan_specs("split-digits", [name], {}, device="cpu", epochs=1)
    (outcome,) = run_specs([spec], tmp_path, data_root=None, download=False, force=False, events=lambda kind, info: None)
    assert outcome.result["status"] == "completed", outcome.result["error"]
    frame = load_results(tmp_path)
    assert frame["strategy"].tolist() == [name] and frame["acc"].iloc[0] > 0.2


def test_replay_plugin_is_in_the_composed_control(digits):
    for name in ("cms-sync+replay", "lookahead+replay"):
        strategy, _ = build_strategy(resolve_spec("split-digits", name, device="cpu"), digits, torch.device("cpu"))
        assert "DeviceReplay" in {type(p).__name__ for p in strategy.plugins}


@pytest.mark.slow
def test_controls_run_through_a_sweep(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "nlbench.cli", "sweep", "--strategy", "cms-sync,cms-frozen+replay,lookahead,ademamix",
         "--epochs", "1", "--seeds", "0", "--jobs", "2", "--device", "cpu", "--out", str(tmp_path), "--no-download"],
        capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    from nlbench.core.store import load_results

    frame = load_results(tmp_path)
    assert sorted(frame["strategy"]) == sorted(["cms-sync", "cms-frozen+replay", "lookahead", "ademamix"])
    assert set(frame["status"]) == {"completed"}


def test_hope_controls_keep_the_hope_network_and_change_only_the_clock():
    """hope-sync: every CMS level of the same HOPE network steps every step at lr / period; hope-frozen:
    the slow levels never move while the fastest (memories included) trains."""
    from nlbench.data.bigram import build_bigram_benchmark
    from nlbench.data.suites import get_suite

    bm = build_bigram_benchmark(get_suite("bigram-shift"), "domain", n_train=64, n_test=8)
    clocked, _ = build_strategy(resolve_spec("bigram-shift", "hope", device="cpu", hparams={"lr": 0.004}), bm,
                                torch.device("cpu"))
    sync, _ = build_strategy(resolve_spec("bigram-shift", "hope-sync", device="cpu", hparams={"lr": 0.004}), bm,
                             torch.device("cpu"))
    assert type(sync.model) is type(clocked.model)
    assert [p.shape for p in sync.model.parameters()] == [p.shape for p in clocked.model.parameters()]
    periods = clocked.optimizer.periods
    assert periods == [1, 8, 64] and sync.optimizer.periods == [1, 1, 1]
    for index, base in enumerate(sync.optimizer.bases):
        level = sync.optimizer.param_groups[index]["level"]
        assert base.param_groups[0]["lr"] == pytest.approx(0.004 / periods[level])

    frozen, _ = build_strategy(resolve_spec("bigram-shift", "hope-frozen", device="cpu", hparams={}),
                               bm, torch.device("cpu"))
    assert frozen.optimizer.periods == [1]
    fast = {id(p) for p in frozen.optimizer.param_groups[0]["params"]}
    slow = [p for p in frozen.model.parameters() if id(p) not in fast]
    assert slow and all(not p.requires_grad for p in slow)
    before_slow = [p.detach().clone() for p in slow]
    before_fast = [p.detach().clone() for p in frozen.model.parameters() if id(p) in fast]
    frozen.train(bm.train_stream[0])
    assert all(torch.equal(a, p) for a, p in zip(before_slow, slow))
    moved = [not torch.equal(a, p) for a, p in zip(before_fast, (p for p in frozen.model.parameters() if id(p) in fast))]
    assert sum(moved) > len(moved) // 2
