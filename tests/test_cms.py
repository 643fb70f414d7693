"""Multi-clock training (ClockedOptimizer, wire_clocks) and CMS blocks: nl-math.md section 4 properties,
and the `cms` / `clocked-adam` strategies inside real Avalanche runs."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from nlbench.data.readers import DEFAULT_DATA_ROOT
from nlbench.errors import UserError
from nlbench.core.backbones import build_backbone
from nlbench.models import MLP, MLPConfig, ResNet18, ResNetConfig
from nlbench.models.transformer import TinyTransformer, TransformerConfig
from nlbench.core.registry import resolve_hparams, strategies
from nlbench.core.runner import build_strategy, run_one
from nlbench.core.spec import resolve_spec
from nlbench.models.cms import CMSMLP, CMSMLPConfig, CMSSequential
from nlbench.strategies.cms.clocks import ClockedOptimizer
from nlbench.strategies.cms.surgery import cms_variant
from nlbench.strategies.cms.wiring import wire_clocks
from nlbench.data.streams import build_benchmark
from nlbench.data.suites import get_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(seed=0, hidden=(16, 16), d_in=12, n_classes=5):
    torch.manual_seed(seed)
    return MLP(MLPConfig(input_dim=d_in, hidden=hidden, n_classes=n_classes))


def _batches(n, seed=1, d_in=12, n_classes=5, batch=8):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, d_in, generator=g), torch.randint(n_classes, (batch,), generator=g)) for _ in range(n)]


def _train_step(model, optimizer, x, y):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def sgd(lr=0.1, **kw):
    return lambda model, params: torch.optim.SGD(params, lr=lr, **kw)


def adam(lr=1e-2):
    return lambda model, params: torch.optim.Adam(params, lr=lr)


# --------------------------------------------------------------------------------------------------
# wire_clocks


def test_wire_clocks_by_depth_mapping_callable_and_auto():
    model = _mlp()
    names = lambda levels: [lv.names for lv in levels]  # noqa: E731
    depth = wire_clocks(model, (1, 8, 64), by="depth")
    # input side fastest, last body layer slowest, the head fast (nl-math.md 5.1 / 11 #6)
    assert [lv.period for lv in depth] == [1, 64]
    assert names(depth) == [["features.0.weight", "features.0.bias", "classifier.weight", "classifier.bias"],
                            ["features.2.weight", "features.2.bias"]]
    assert wire_clocks(model, (1, 8, 64), by="auto")[1].names == depth[1].names  # no clock_level: depth

    mapping = wire_clocks(model, (1, 8), by={"features.2.*": 1, "classifier.*": 5})
    assert [lv.period for lv in mapping] == [1, 8]
    assert mapping[1].names == ["features.2.weight", "features.2.bias", "classifier.weight", "classifier.bias"]  # 5 -> clamped

    by_callable = wire_clocks(model, (2, 4), by=lambda name, p: int(p.dim() == 1))
    assert [lv.period for lv in by_callable] == [2, 4] and all(p.dim() == 1 for p in by_callable[1].params)

    for bad in ((), (0, 8), (1.5,)):
        with pytest.raises(ValueError):
            wire_clocks(model, bad)
    with pytest.raises(ValueError):
        wire_clocks(model, (1, 8), by="width")


def test_transformer_wiring_is_qkv_1_o_8_ffn_64():
    model = TinyTransformer(TransformerConfig(n_layers=1))
    levels = {lv.period: set(lv.names) for lv in wire_clocks(model, (1, 8, 64))}
    assert levels[8] == {"blocks.0.attn.o.weight", "blocks.0.attn.o.bias"}
    assert levels[64] == {f"blocks.0.ffn.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    assert {"embed.weight", "pos", "blocks.0.attn.q.weight", "blocks.0.attn.k.weight", "blocks.0.attn.v.weight",
            "blocks.0.ln1.weight", "ln_f.weight", "classifier.weight"} <= levels[1]
    cms = TinyTransformer(TransformerConfig(n_layers=1).with_cms(3))
    by_period = {lv.period: lv.names for lv in wire_clocks(cms, (1, 8, 64))}
    assert [n for n in by_period[64] if "ffn" in n] == [f"blocks.0.ffn.2.{m}" for m in
                                                        ("norm.weight", "norm.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]
    assert {"blocks.0.attn.o.weight", "blocks.0.ffn.1.fc1.weight"} <= set(by_period[8])


# --------------------------------------------------------------------------------------------------
# ClockedOptimizer: nl-math.md 4.5


@pytest.mark.parametrize("factory", [adam(), sgd(momentum=0.9, weight_decay=1e-3)], ids=["adam", "sgd-momentum"])
def test_every_period_one_is_bitwise_plain_training(factory):
    """P4.2 / P5.3: every period at 1 gives exactly the base optimizer's trajectory."""
    plain, clocked = _mlp(), _mlp()
    reference = factory(plain, list(plain.parameters()))
    optimizer = ClockedOptimizer(wire_clocks(clocked, (1, 1, 1), by="depth"), factory, model=clocked)
    assert len(optimizer.bases) == 2
    for x, y in _batches(12):
        _train_step(plain, reference, x, y)
        _train_step(clocked, optimizer, x, y)
        for a, b in zip(plain.parameters(), clocked.parameters()):
            assert torch.equal(a, b)
    assert optimizer.level_updates == [12, 12] and optimizer.global_step == 12


def _no_fast_path(optimizer):
    """A step hook on a base makes the ClockedOptimizer step the levels one by one (the slow path)."""
    optimizer.bases[0].register_step_pre_hook(lambda *args: None)
    return optimizer


def _refuse_direct_steps(optimizer):
    def refuse(*args, **kwargs):
        raise AssertionError("the merged fast path should have stepped this level")

    for base in optimizer.bases:
        base.step = refuse
    return optimizer


@pytest.mark.parametrize("factory", [adam(), lambda m, p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
                                     sgd(momentum=0.9, weight_decay=1e-3, nesterov=True)],
                         ids=["adam", "adamw", "sgd-nesterov"])
def test_the_merged_fast_path_is_bitwise_the_level_by_level_step(factory):
    """Every level due with an empty window: one merged step over all the levels' groups gives the same
    parameters AND the same per-level optimizer states (state_dicts) as stepping each level's base."""
    fast_model, slow_model = _mlp(hidden=(16, 16, 16)), _mlp(hidden=(16, 16, 16))
    fast = ClockedOptimizer(wire_clocks(fast_model, (1, 1, 1), by="depth"), factory, model=fast_model)
    slow = _no_fast_path(ClockedOptimizer(wire_clocks(slow_model, (1, 1, 1), by="depth"), factory, model=slow_model))
    _refuse_direct_steps(fast)
    assert len(fast.bases) == 3
    for step, (x, y) in enumerate(_batches(10), start=1):
        if step == 6:  # a scheduler changing one level's lr reaches the merged step too
            fast.param_groups[1]["lr"] = slow.param_groups[1]["lr"] = 3e-3
        _train_step(fast_model, fast, x, y)
        _train_step(slow_model, slow, x, y)
        for a, b in zip(fast_model.parameters(), slow_model.parameters()):
            assert torch.equal(a, b)
    for fast_base, slow_base in zip(fast.bases, slow.bases):
        fsd, ssd = fast_base.state_dict(), slow_base.state_dict()
        assert fsd["param_groups"] == ssd["param_groups"] and fsd["state"].keys() == ssd["state"].keys()
        for i in fsd["state"]:
            assert fsd["state"][i].keys() == ssd["state"][i].keys()
            assert all(torch.equal(fsd["state"][i][k], ssd["state"][i][k]) for k in fsd["state"][i])
    assert fast.level_updates == slow.level_updates == [10, 10, 10] and fast.global_step == 10
    # A restored optimizer (new base state dicts and groups) takes the fast path on the restored state.
    twin_model = copy.deepcopy(fast_model)
    twin = ClockedOptimizer(wire_clocks(twin_model, (1, 1, 1), by="depth"), factory, model=twin_model)
    twin.load_state_dict(copy.deepcopy(slow.state_dict()))
    _refuse_direct_steps(twin)
    for x, y in _batches(3, seed=7):
        _train_step(twin_model, twin, x, y)
        _train_step(slow_model, slow, x, y)
    assert all(torch.equal(a, b) for a, b in zip(twin_model.parameters(), slow_model.parameters()))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_level_updates_floor_t_over_c_times_with_the_window_gradient(reduction):
    """P4.1 / P4.3 / P4.4: in T steps a level of period C updates floor(T/C) times, at s = C, 2C, ...; the
    k-th update applies the gradients of steps (k-1)C+1..kC (sum, or mean), recorded while the level was
    frozen; between updates its parameters are bitwise unchanged."""
    lr, periods, T = 0.1, (1, 3, 5), 17
    model = _mlp(hidden=(16, 16, 16))  # three body layers -> levels 0, 1, 2
    levels = wire_clocks(model, periods, by="depth")
    assert [lv.period for lv in levels] == list(periods)
    optimizer = ClockedOptimizer(levels, sgd(lr), model=model, reduction=reduction)
    window = {id(p): [] for lv in levels for p in lv.params}
    start = {id(p): p.detach().clone() for p in model.parameters()}
    for s, (x, y) in enumerate(_batches(T), start=1):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for lv in levels:
            for p in lv.params:
                window[id(p)].append(p.grad.clone())
        optimizer.step()
        for lv in levels:
            for p in lv.params:
                if s % lv.period:
                    assert torch.equal(p, start[id(p)])  # frozen inside the window
                    continue
                total = window[id(p)][0].clone()
                for g in window[id(p)][1:]:
                    total.add_(g)
                if reduction == "mean" and len(window[id(p)]) > 1:
                    total.div_(len(window[id(p)]))
                assert len(window[id(p)]) == lv.period
                assert torch.equal(p, start[id(p)].add(total, alpha=-lr))
                start[id(p)], window[id(p)] = p.detach().clone(), []
    assert optimizer.level_updates == [T // c for c in periods] == [17, 5, 3]
    assert optimizer.pending == [0, T % 3, T % 5] and optimizer.global_step == T


def test_a_level_that_is_not_due_keeps_its_optimizer_state():
    """P4.4 with Adam: state tensors bitwise unchanged between due steps; state['step'] counts level updates."""
    model = _mlp()
    optimizer = ClockedOptimizer(wire_clocks(model, (1, 4), by="depth"), adam(), model=model)
    slow = optimizer.bases[1]
    for s, (x, y) in enumerate(_batches(11), start=1):
        before = copy.deepcopy(slow.state_dict()["state"])
        _train_step(model, optimizer, x, y)
        after = slow.state_dict()["state"]
        if s % 4:
            assert all(torch.equal(before[i][k], after[i][k]) for i in before for k in before[i]) if before else not after
        for state in after.values():
            assert int(state["step"]) == s // 4
    assert optimizer.level_updates == [11, 2]


def test_state_dict_round_trips_the_clock_accumulators_and_base_states():
    model = _mlp(hidden=(16, 16, 16))
    optimizer = ClockedOptimizer(wire_clocks(model, (1, 3, 7), by="depth"), adam(), model=model)
    data = _batches(20)
    for x, y in data[:9]:
        _train_step(model, optimizer, x, y)
    assert optimizer.pending == [0, 0, 2]
    twin = copy.deepcopy(model)
    twin_optimizer = ClockedOptimizer(wire_clocks(twin, (1, 3, 7), by="depth"), adam(), model=twin)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert twin_optimizer.global_step == 9 and twin_optimizer.pending == [0, 0, 2]
    assert twin_optimizer.level_updates == optimizer.level_updates == [9, 3, 1]
    for x, y in data[9:]:
        _train_step(model, optimizer, x, y)
        _train_step(twin, twin_optimizer, x, y)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_new_param_groups_become_fast_levels_and_the_factory_must_respect_params():
    model = _mlp()
    optimizer = ClockedOptimizer(wire_clocks(model, (1, 8), by="depth"), adam(), model=model)
    head = nn.Linear(3, 2)
    optimizer.add_param_group({"params": list(head.parameters())})
    assert optimizer.periods == [1, 8, 1] and len(optimizer.bases) == 3 and optimizer.pending == [0, 0, 0]
    with pytest.raises(ValueError, match="only the parameters"):
        ClockedOptimizer(wire_clocks(model, (1, 8)), lambda m, params: torch.optim.SGD(m.parameters(), lr=0.1), model=model)
    with pytest.raises(ValueError, match="reduction"):
        ClockedOptimizer(wire_clocks(model, (1, 8)), adam(), reduction="max")


def test_learning_rate_changes_reach_the_level_optimizers():
    """LR schedulers and plugins write param_groups[i]["lr"] of the wrapper; the level's base follows."""
    model = _mlp()
    optimizer = ClockedOptimizer(wire_clocks(model, (1, 8), by="depth"), sgd(lr=0.1), model=model)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.1]
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    x, y = _batches(1)[0]
    _train_step(model, optimizer, x, y)
    scheduler.step()
    _train_step(model, optimizer, x, y)
    assert [b.param_groups[0]["lr"] for b in optimizer.bases] == [0.05, 0.05]


def test_flush_applies_partial_windows_without_advancing_the_clock():
    model = _mlp()
    optimizer = ClockedOptimizer(wire_clocks(model, (1, 8), by="depth"), sgd(), model=model)
    for x, y in _batches(5):
        _train_step(model, optimizer, x, y)
    assert optimizer.flush() == [1]
    assert optimizer.level_updates == [5, 1] and optimizer.pending == [0, 0] and optimizer.global_step == 5


# --------------------------------------------------------------------------------------------------
# CMS blocks


def test_cms_blocks_shapes_and_levels():
    chain = CMSSequential(16, 32, levels=3)
    assert chain(torch.randn(4, 7, 16)).shape == (4, 7, 16)
    assert [block.clock_level for block in chain] == [0, 1, 2]
    mlp = CMSMLP(CMSMLPConfig(input_dim=64, n_classes=10, width=32, levels=3))
    assert mlp(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    levels = wire_clocks(mlp, (1, 8, 64))
    assert [lv.period for lv in levels] == [1, 8, 64]
    assert {n.split(".")[0] for n in levels[0].names} == {"stem", "cms", "norm", "classifier"}

    variant = cms_variant(build_backbone("mlp", (1, 28, 28), 10), levels=3)
    assert isinstance(variant, CMSMLP) and variant.config.width == 400
    resnet = cms_variant(ResNet18(ResNetConfig(nf=4)), levels=3)  # CMS-clocked stages for CIFAR
    assert [getattr(resnet, f"layer{i}").clock_level for i in range(1, 5)] == [0, 1, 1, 2]
    by_period = {lv.period: lv.names for lv in wire_clocks(resnet, (1, 8, 64))}
    assert "conv1.weight" in by_period[1] and "classifier.weight" in by_period[1]
    assert all(n.startswith("layer4.") for n in by_period[64])
    assert resnet(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --------------------------------------------------------------------------------------------------
# Strategies in real Avalanche runs


def test_strategies_are_registered_with_clock_hyperparameters():
    known = strategies()
    for name in ("cms", "clocked-adam"):
        assert known[name].wraps_optimizer and not known[name].provides_optimizer
        assert known[name].family == "nested-learning"
    hp = resolve_hparams("cms", {"periods": "1,8,64", "reduction": "mean"})
    assert hp["periods"] == (1, 8, 64) and hp["reduction"] == "mean" and hp["optimizer"] == "adam"
    with pytest.raises(UserError, match="strictly increasing"):
        resolve_hparams("clocked-adam", {"periods": "8,1"})
    with pytest.raises(UserError, match="two clock wrappers"):
        resolve_hparams("cms+clocked-adam", {})


def test_registration_imports_no_heavy_library():
    """`cms`, `clocked-adam` and `hope` register without torch, numpy or Avalanche: their builders import them."""
    code = ("import sys; import nlbench.strategies.cms, nlbench.strategies.hope; "
            "print(sorted(m for m in ('torch', 'numpy', 'avalanche') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_clocked_strategy_with_every_period_one_reproduces_plain_training(digits):
    """P4.2 through the harness: `clocked-adam` with periods=1 gives adam's accuracy matrix, bitwise."""
    plain = run_one(resolve_spec("split-digits", "adam", device="cpu", epochs=1), benchmark=digits)
    clocked = run_one(resolve_spec("split-digits", "clocked-adam", device="cpu", epochs=1, hparams={"periods": "1"}),
                      benchmark=digits)
    assert clocked["status"] == plain["status"] == "completed", clocked["error"]
    assert clocked["accuracy_matrix"] == plain["accuracy_matrix"]
    assert clocked["clocks"]["updates"] == [clocked["clocks"]["global_step"]]


@pytest.mark.parametrize("flush", [False, True])
def test_accumulation_carries_across_an_experience_boundary(digits, flush):
    spec = resolve_spec("split-digits", "clocked-adam", device="cpu", epochs=1,
                        hparams={"periods": "1,7", "flush_on_experience_end": flush})
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    optimizer = strategy.optimizer
    assert isinstance(optimizer, ClockedOptimizer) and optimizer.periods == [1, 7]
    strategy.train(digits.train_stream[0])
    t0 = optimizer.global_step
    assert t0 % 7  # the boundary falls inside a window
    slow = optimizer.param_groups[1]["params"]
    if flush:
        assert optimizer.pending == [0, 0] and optimizer.level_updates == [t0, t0 // 7 + 1]
        assert all("acc" not in optimizer.state[p] for p in slow)
    else:
        assert optimizer.pending == [0, t0 % 7] and optimizer.level_updates == [t0, t0 // 7]
        assert all("acc" in optimizer.state[p] for p in slow)
    strategy.train(digits.train_stream[1])
    t = optimizer.global_step
    assert strategy.optimizer is optimizer and t > t0  # never reset
    if not flush:
        assert optimizer.level_updates == [t, t // 7] and optimizer.pending == [0, t % 7]


def test_cms_composes_with_replay_and_with_an_sgd_base(digits):
    spec = resolve_spec("split-digits", "cms+replay", device="cpu", epochs=1, hparams={"optimizer": "sgd", "lr": 0.05})
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    assert isinstance(strategy.model, CMSMLP) and strategy.model.config.width == 100
    assert {type(b).__name__ for b in strategy.optimizer.bases} == {"SGD"}
    assert "DeviceReplay" in {type(p).__name__ for p in strategy.plugins}
    first = run_one(spec, benchmark=digits)
    again = run_one(spec, benchmark=digits)
    assert first["status"] == "completed", first["error"]
    assert first["accuracy_matrix"] == again["accuracy_matrix"]  # deterministic on CPU
    assert first["clocks"]["periods"] == [1, 8, 64]


def test_cms_in_the_task_scenario_adds_new_heads_as_fast_levels():
    benchmark = build_benchmark(get_suite("split-digits"), "task", seed=0, data_root=DEFAULT_DATA_ROOT)
    spec = resolve_spec("split-digits", "cms", device="cpu", scenario="task", head="multi", epochs=1,
                        hparams={"periods": "1,4"})
    result = run_one(spec, benchmark=benchmark)
    assert result["status"] == "completed", result["error"]
    periods = result["clocks"]["periods"]
    assert periods[:2] == [1, 4] and len(periods) > 2 and set(periods[2:]) == {1}


def test_cms_with_deep_l2gd_gets_one_deep_l2gd_per_level(digits):
    if "deep-l2gd" not in strategies():
        pytest.skip("deep-l2gd is not registered yet")
    spec = resolve_spec("split-digits", "cms+deep-l2gd", device="cpu", epochs=1)
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    optimizer = strategy.optimizer
    assert isinstance(optimizer, ClockedOptimizer) and len(optimizer.bases) == 3
    from nlbench.strategies.deep_l2gd.optimizer import DeepL2GD

    assert all(isinstance(b, DeepL2GD) for b in optimizer.bases)
    result = run_one(spec, benchmark=digits)
    assert result["status"] == "completed", result["error"]
