"""NestedAdam (spec 8.3) and M3 (spec 8.4): properties P8.1-P8.4, state_dict, validation."""

from __future__ import annotations

import copy
import json
import io

import pytest
import torch
from torch import nn

from nlbench.strategies.dmgd.newton_schulz import newton_schulz5
from nlbench.strategies.nested_adam.adam import NestedAdam, is_due, slow_beta2
from nlbench.strategies.m3.optimizer import M3


def _mlp(seed: int = 0, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(),
                         nn.Linear(12, 3)).to(dtype)


def _data(seed: int = 1, n: int = 32, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen, dtype=dtype), torch.randint(0, 3, (n,), generator=gen)


def _train(model, opt, steps: int, batches=None):
    x, y = _data()
    for i in range(steps):
        xb, yb = (x, y) if batches is None else batches[i % len(batches)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()


def _minibatches(k: int = 5):
    x, y = _data(n=16 * k)
    return [(x[16 * i:16 * (i + 1)], y[16 * i:16 * (i + 1)]) for i in range(k)]


def _assert_models_equal(a: nn.Module, b: nn.Module):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


def _roundtrip(opt):
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf)


# ------------------------------------------------------------------------------------------ P8.1


@pytest.mark.parametrize("beta2_mode", ["plain", "horizon"])
def test_p81_period_one_is_torch_adam_bitwise(beta2_mode):
    m1, m2 = _mlp(), _mlp()
    a = torch.optim.Adam(m1.parameters(), lr=3e-3, betas=(0.8, 0.99), eps=1e-6, foreach=False)
    b = NestedAdam(m2.parameters(), lr=3e-3, betas=(0.8, 0.99), eps=1e-6, v_period=1,
                   beta2_mode=beta2_mode)
    batches = _minibatches()
    _train(m1, a, 25, batches)
    _train(m2, b, 25, batches)
    _assert_models_equal(m1, m2)  # bitwise: same op sequence as torch's single-tensor Adam


def test_p81_weight_decay_is_torch_adamw_bitwise():
    m1, m2 = _mlp(), _mlp()
    a = torch.optim.AdamW(m1.parameters(), lr=3e-3, weight_decay=0.1, foreach=False)
    b = NestedAdam(m2.parameters(), lr=3e-3, weight_decay=0.1, v_period=1)
    batches = _minibatches()
    _train(m1, a, 20, batches)
    _train(m2, b, 20, batches)
    _assert_models_equal(m1, m2)


def test_slower_clock_differs_from_adam():
    # Guards against v_period being ignored (which would make every other test vacuous).
    m1, m2 = _mlp(), _mlp()
    batches = _minibatches()
    _train(m1, torch.optim.Adam(m1.parameters(), lr=3e-3, foreach=False), 12, batches)
    _train(m2, NestedAdam(m2.parameters(), lr=3e-3, v_period=4), 12, batches)
    assert not torch.allclose(m1[0].weight, m2[0].weight, atol=1e-6)


# ------------------------------------------------------------------------------------------ P8.2


def _feed(opt, p, grads):
    for g in grads:
        p.grad = g.clone()
        opt.step()
        p.grad = None  # Avalanche-style: .grad gone between steps


@pytest.mark.parametrize("period", [3, 5])
def test_p82_v_changes_only_on_due_steps_and_kv_counts(period):
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    opt = NestedAdam([p], lr=1e-3, v_period=period)
    gen = torch.Generator().manual_seed(3)
    prev_v = None
    for s in range(1, 4 * period + 2):
        _feed(opt, p, [torch.randn(4, 3, generator=gen, dtype=torch.float64)])
        st = opt.state[p]
        assert st["v_updates"] == s // period
        assert opt.global_step == s
        v = st["exp_avg_sq"].clone()
        if prev_v is not None:
            assert (not torch.equal(v, prev_v)) == (s % period == 0), s
        prev_v = v


def test_p82_slow_update_uses_mean_of_squares_not_square_of_mean():
    p = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    b2 = 0.9
    opt = NestedAdam([p], lr=1e-3, betas=(0.9, b2), v_period=3)
    g = [torch.tensor([1.0, -1.0, 2.0, 0.5, 0.0], dtype=torch.float64),
         torch.tensor([-1.0, 1.0, 2.0, 0.0, 3.0], dtype=torch.float64),
         torch.tensor([1.0, 1.0, -2.0, 1.5, 0.0], dtype=torch.float64)]
    _feed(opt, p, g[:2])
    st = opt.state[p]
    assert st["sq_count"] == 2 and torch.equal(st["exp_avg_sq"], torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(st["sq_sum"], g[0] ** 2 + g[1] ** 2)
    _feed(opt, p, g[2:])
    mean_sq = (g[0] ** 2 + g[1] ** 2 + g[2] ** 2) / 3
    assert torch.allclose(st["exp_avg_sq"], (1 - b2) * mean_sq, rtol=1e-12)
    assert st["sq_count"] == 0 and torch.count_nonzero(st["sq_sum"]) == 0
    # second window: the EMA combines windows with beta2v
    g2 = [torch.full((5,), 2.0, dtype=torch.float64)] * 3
    _feed(opt, p, g2)
    assert torch.allclose(st["exp_avg_sq"], b2 * (1 - b2) * mean_sq + (1 - b2) * 4.0, rtol=1e-12)


def test_horizon_mode_uses_beta2_to_the_period():
    assert slow_beta2(0.999, 10, "horizon") == pytest.approx(0.999 ** 10)
    assert slow_beta2(0.999, 10, "plain") == 0.999
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = NestedAdam([p], betas=(0.9, 0.99), v_period=4, beta2_mode="horizon")
    g = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    _feed(opt, p, [g] * 4)
    assert torch.allclose(opt.state[p]["exp_avg_sq"], (1 - 0.99 ** 4) * g ** 2, rtol=1e-12)


def test_is_due_clock_is_one_based():
    assert [s for s in range(1, 13) if is_due(s, 4)] == [4, 8, 12]


# ------------------------------------------------------------------------------------------ P8.3


@pytest.mark.parametrize("period", [1, 10, 100])
@pytest.mark.parametrize("beta2_mode", ["plain", "horizon"])
def test_p83_constant_gradient_gives_lr_sign_steps_in_every_phase(period, beta2_mode):
    lr, eps = 1e-2, 1e-8
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    g = torch.tensor([0.3, -2.0, 1e-3, 5.0], dtype=torch.float64)
    opt = NestedAdam([p], lr=lr, eps=eps, v_period=period, beta2_mode=beta2_mode)
    expected_step = lr * g / (g.abs() + eps)
    for s in range(1, 25):  # for period 100 all of these are in the provisional phase
        before = p.detach().clone()
        _feed(opt, p, [g])
        assert torch.allclose(before - p.detach(), expected_step, rtol=1e-9, atol=0), s


# ------------------------------------------------------------------------------------------ S002


def test_s002_literal_drops_intermediate_gradients():
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b2 = 0.9
    opt = NestedAdam([p], betas=(0.9, b2), v_period=3, variant="s002_literal")
    gs = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 4.0], dtype=torch.float64),
          torch.tensor([0.5, -1.0], dtype=torch.float64)]
    _feed(opt, p, gs)
    assert torch.allclose(opt.state[p]["exp_avg_sq"], (1 - b2) * gs[2] ** 2, rtol=1e-12)
    assert opt.state[p]["v_updates"] == 1


# ------------------------------------------------------------------------------------------ state


def test_state_dict_roundtrip_is_bitwise_mid_window():
    m1 = _mlp()
    opt1 = NestedAdam(m1.parameters(), lr=3e-3, v_period=4, weight_decay=0.01)
    batches = _minibatches()
    _train(m1, opt1, 6, batches)  # 6 % 4 != 0: the g^2 accumulator is half full
    m2 = copy.deepcopy(m1)
    opt2 = NestedAdam(m2.parameters(), lr=3e-3, v_period=4, weight_decay=0.01)
    opt2.load_state_dict(_roundtrip(opt1))
    assert opt2.global_step == 6
    _train(m1, opt1, 7, batches[1:] + batches[:1])
    _train(m2, opt2, 7, batches[1:] + batches[:1])
    _assert_models_equal(m1, m2)
    assert opt1.global_step == opt2.global_step == 13


def test_param_groups_have_their_own_clock_and_lr():
    m = _mlp()
    opt = NestedAdam([{"params": m[0].parameters(), "v_period": 2},
                      {"params": m[2].parameters(), "v_period": 3, "lr": 0.0},
                      {"params": m[4].parameters()}], lr=1e-3)
    w_frozen = m[2].weight.detach().clone()
    _train(m, opt, 6)
    assert opt.state[m[0].weight]["v_updates"] == 3
    assert opt.state[m[2].weight]["v_updates"] == 2
    assert opt.state[m[4].weight]["v_updates"] == 0  # default period 10
    assert torch.equal(m[2].weight, w_frozen)


def test_closure_and_none_grads():
    m = _mlp()
    opt = NestedAdam(m.parameters())
    x, y = _data()

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))
    opt.zero_grad()
    opt.step()  # all grads None: only the clock moves
    assert opt.global_step == 2 and opt.state[m[0].weight]["step"] == 1


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9,)),
                                    dict(eps=-1.0), dict(weight_decay=-0.1), dict(v_period=0),
                                    dict(v_period=2.5), dict(beta2_mode="slow"),
                                    dict(variant="s002")])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        NestedAdam(_mlp().parameters(), **kwargs)


# ------------------------------------------------------------------------------------------ M3 / P8.4


def test_p84_m3_alpha_zero_is_adam_normalised_muon_and_slow_buffer_clock():
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(5, 7, dtype=torch.float64))
    Wref = W.detach().clone()
    lr, b1, b2, eps, f = 1e-3, 0.9, 0.99, 1e-8, 3
    opt = M3([W], lr=lr, betas=(b1, b2, 0.5), alpha=0.0, eps=eps, slow_period=f, decay="ema")
    M1 = torch.zeros_like(Wref)
    V = torch.zeros_like(Wref)
    gen = torch.Generator().manual_seed(5)
    prev_M2 = torch.zeros_like(Wref)
    M2_ref = torch.zeros_like(Wref)
    chunk = torch.zeros_like(Wref)
    for s in range(1, 11):
        g = torch.randn(5, 7, generator=gen, dtype=torch.float64)
        chunk = chunk + g
        if s % f == 0:
            M2_ref = 0.5 * M2_ref + 0.5 * chunk  # beta3 = 0.5, EMA of the chunk sums
            chunk = torch.zeros_like(Wref)
        M1 = b1 * M1 + (1 - b1) * g
        V = b2 * V + (1 - b2) * g * g
        Wref = Wref - lr * newton_schulz5(M1) / (V.sqrt() + eps)
        _feed(opt, W, [g])
        assert torch.allclose(W.detach(), Wref, rtol=1e-12, atol=1e-12), s
        M2 = opt.state[W]["M2"].clone()
        assert (not torch.equal(M2, prev_M2)) == (s % f == 0), s
        assert torch.allclose(M2, M2_ref, atol=1e-12)
        prev_M2 = M2


def test_m3_slow_level_contributes_chunk_sums():
    W = nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    opt = M3([W], lr=1e-3, betas=(0.9, 0.99, 0.5), alpha=1.0, slow_period=2, decay="literal")
    gen = torch.Generator().manual_seed(2)
    gs = [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(4)]
    _feed(opt, W, gs)
    st = opt.state[W]
    assert torch.allclose(st["M2"], 0.5 * sum(gs))  # literal: plain sums of the two chunks
    assert torch.allclose(st["M1"], 0.9 * sum(gs))
    assert torch.allclose(st["O2"], newton_schulz5(st["M2"]))
    assert st["slow_updates"] == 2


def test_m3_state_dict_roundtrip_bitwise():
    m1 = _mlp()
    opt1 = M3(m1.parameters(), lr=1e-5, slow_period=3)
    batches = _minibatches()
    _train(m1, opt1, 4, batches)
    m2 = copy.deepcopy(m1)
    opt2 = M3(m2.parameters(), lr=1e-5, slow_period=3)
    opt2.load_state_dict(_roundtrip(opt1))
    _train(m1, opt1, 5, batches)
    _train(m2, opt2, 5, batches)
    _assert_models_equal(m1, m2)


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(betas=(0.9, 0.99)), dict(slow_period=0),
                                    dict(decay="sum"), dict(alpha=-1.0), dict(ns_steps=0)])
def test_m3_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        M3(_mlp().parameters(), **kwargs)


def test_guard_bounds_the_step_of_a_coordinate_silent_for_a_whole_window():
    """A coordinate with zero gradient through the first slow window, then a gradient: without the
    guard its step is lr * mhat / eps (here ~1e5); with it, at most an Adam-sized step."""
    p = torch.nn.Parameter(torch.zeros(2))
    opt = NestedAdam([p], lr=1e-3, v_period=10)
    for s in range(1, 11):
        p.grad = torch.tensor([1.0, 0.0])
        opt.step()
    before = p.detach().clone()
    p.grad = torch.tensor([1.0, 1.0])
    opt.step()
    step = (p.detach() - before).abs()
    assert step[1] <= 1e-3 * 1.01  # |mhat| / sqrt(unseen) = 0.1/0.65 / 1 < 1: bounded by lr
    assert torch.isfinite(p).all()


def test_nested_adam_trains_a_real_stream_without_diverging():
    from nlbench.data.readers import DEFAULT_DATA_ROOT
    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    benchmark = build_benchmark(get_suite("split-digits"), "class", 0, DEFAULT_DATA_ROOT)
    spec = resolve_spec("split-digits", "nested-adam", device="cpu", epochs=2)
    result = run_one(spec, benchmark=benchmark)
    assert result["status"] == "completed", result["error"]
    assert max(result["accuracy_matrix"][0]) > 0.4


# ------------------------------------------------------- reference, guard option and diagnostics


def _reference_nested_adam(params0, grads, *, lr, b1, b2, eps, period, guard):
    """Spec 8.3 in plain float64 tensor maths, independent of the optimizer's code: the slow v is
    bias-corrected with k_v (its own update count); returns the trajectory and the diagnostics."""
    ps = [p.clone() for p in params0]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    av = [torch.zeros_like(p) for p in ps]
    Q = [torch.zeros_like(p) for p in ps]
    n, k_v, traj = 0, 0, []
    step_sum = adam_sum = cells = acted = 0.0
    for s, gs in enumerate(grads, start=1):
        for Qi, g in zip(Q, gs):
            Qi += g * g
        n += 1
        due = s % period == 0
        if due:
            for vi, Qi in zip(v, Q):
                vi.copy_(b2 * vi + (1 - b2) * Qi / n)
            k_v += 1
        for i, g in enumerate(gs):
            m[i] = b1 * m[i] + (1 - b1) * g
            mhat = m[i] / (1 - b1 ** s)
            # not yet in v: the window so far; at a due step the optimizer's guard takes g^2
            unseen = g * g if due else Q[i] / n
            if k_v == 0:
                denom_sq = unseen
            else:
                vhat = v[i] / (1 - b2 ** k_v)
                denom_sq = torch.maximum(vhat, unseen) if guard else vhat
                cells += g.numel()
                acted += float((unseen > vhat).sum())
            av[i] = b2 * av[i] + (1 - b2) * g * g
            step = lr * mhat / (denom_sq.sqrt() + eps)
            step_sum += float(step.abs().sum())
            adam_sum += float((lr * mhat / ((av[i] / (1 - b2 ** s)).sqrt() + eps)).abs().sum())
            ps[i] = ps[i] - step
        if due:
            for Qi in Q:
                Qi.zero_()
            n = 0
        traj.append([p.clone() for p in ps])
    return traj, {"guard_rate": acted / cells, "step_ratio_to_adam": step_sum / adam_sum}


@pytest.mark.parametrize("guard", [False, True])
def test_slow_moment_matches_reference_and_is_corrected_by_its_own_count(guard):
    """Trajectory and diagnostics against an independent float64 reference of spec 8.3, with
    gradients whose scale changes (so the guard does not hide the slow v's bias correction: with
    the global step instead of k_v in the correction, this test fails)."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(4, 3), (5,)]
    params0 = [torch.randn(*sh, generator=gen, dtype=torch.float64) for sh in shapes]
    grads = [[torch.randn(*sh, generator=gen, dtype=torch.float64) * (1 + 0.2 * s) for sh in shapes]
             for s in range(23)]
    ps = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = NestedAdam(ps, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, v_period=4, guard=guard)
    expected, diag = _reference_nested_adam(params0, grads, lr=1e-2, b1=0.9, b2=0.99, eps=1e-8,
                                            period=4, guard=guard)
    for gs, want in zip(grads, expected):
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
        for p, w in zip(ps, want):
            assert torch.allclose(p.detach(), w, rtol=0, atol=1e-12)
    got = opt.diagnostics()
    assert json.loads(json.dumps(got)) == got
    assert got["guard_rate"] == pytest.approx(diag["guard_rate"], abs=1e-12)
    assert 0 < got["guard_rate"] < 1
    assert got["step_ratio_to_adam"] == pytest.approx(diag["step_ratio_to_adam"], rel=1e-9)


def test_diagnostics_at_period_one_report_adam():
    model = _mlp()
    opt = NestedAdam(model.parameters(), lr=1e-3, v_period=1)
    _train(model, opt, 7, _minibatches())
    d = opt.diagnostics()
    assert d["step_ratio_to_adam"] == pytest.approx(1.0, rel=1e-6)
    assert d["guard_rate"] == 0.0 and d["guard_coordinate_steps"] == 0 and d["global_step"] == 7


def test_diagnostics_off_and_guard_off_are_spec_as_written():
    """diagnose=False changes no number; guard=False takes vhat alone even where mean g^2 is larger."""
    a, b = _mlp(), _mlp()
    oa = NestedAdam(a.parameters(), lr=1e-3, v_period=3)
    ob = NestedAdam(b.parameters(), lr=1e-3, v_period=3, diagnose=False)
    _train(a, oa, 9, _minibatches())
    _train(b, ob, 9, _minibatches())
    _assert_models_equal(a, b)
    assert ob.diagnostics() == {}
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = NestedAdam([p], lr=1e-3, v_period=2, guard=False)
    for g in (1.0, 1.0, 3.0):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
    # steps 1-2 move by lr (mhat = 1, vhat = 1); step 3: vhat = 1 (k_v = 1) but mean g^2 = 9, and
    # the step uses vhat alone: lr * mhat / 1 (the guard would divide by 3)
    mhat3 = (0.9 * 0.19 + 0.1 * 3.0) / (1 - 0.9 ** 3)
    assert p.item() == pytest.approx(-1e-3 * (2.0 + mhat3) / (1 + 1e-8), abs=1e-12)
    assert opt.diagnostics()["guard_rate"] == 0.5


def test_warm_start_starts_v_at_g1_squared_with_a_tensor_floor_and_skips_correction():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = NestedAdam([p], lr=1e-3, v_period=5, guard=False, warm_start=True)
    p.grad = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    opt.step()
    v = opt.state[p]["exp_avg_sq"]
    assert torch.equal(v, torch.tensor([4.0, 5.0 / 3.0, 5.0 / 3.0], dtype=torch.float64))
    # first step: mhat = g, denominator sqrt(v0): the silent coordinate does not move, none explodes
    assert torch.allclose(p.detach(), -1e-3 * torch.tensor([1.0, 0.0, 1.0 / (5 / 3) ** 0.5],
                                                           dtype=torch.float64))
    for _ in range(4):
        p.grad = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
        opt.step()
    # the due step (s = 5) folds the window mean into v with no bias correction
    assert torch.allclose(opt.state[p]["exp_avg_sq"],
                          0.999 * torch.tensor([4.0, 5 / 3, 5 / 3], dtype=torch.float64)
                          + 0.001 * torch.tensor([4.0, 0.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("hp", [{}, {"guard": False, "warm_start": True}])
def test_nested_adam_records_diagnostics_in_the_result(hp):
    """The runner stores optimizer.diagnostics(); guard-free with the warm start trains stably."""
    from nlbench.data.readers import DEFAULT_DATA_ROOT
    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    benchmark = build_benchmark(get_suite("split-digits"), "class", 0, DEFAULT_DATA_ROOT)
    spec = resolve_spec("split-digits", "nested-adam", device="cpu", epochs=1, hparams=hp)
    result = run_one(spec, benchmark=benchmark)
    assert result["status"] == "completed", result["error"]
    d = result["diagnostics"]
    assert 0 < d["guard_rate"] < 1 and 0.3 < d["step_ratio_to_adam"] < 1.5
    assert max(result["accuracy_matrix"][0]) > 0.4
