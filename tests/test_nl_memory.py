"""MultiTimescaleMemoryOpt (spec 6, seed S001): P6.1-P6.4, intervals, kf_compat quirks, state."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from nlbench.strategies.nl_memory.memory import adaptive_logit_delta, blend_weights, effective_gradient
from nlbench.strategies.nl_memory.optimizer import MultiTimescaleMemoryOpt
from nlbench.strategies.nl_memory.schedule import (compute_depths, interval_from_depth,
                                                   per_variable_relative_depths, sawtooth_lr,
                                                   should_update)

DECAYS = (0.94, 0.994, 0.9999)


def _four_layers(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 4),
                         nn.Linear(4, 2)).to(dtype)


def _layers(model):
    return [m for m in model if isinstance(m, nn.Linear)]


def _grad_stream(params, steps, seed=11):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params] for _ in range(steps)]


def _feed(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    for p in params:
        p.grad = None  # Avalanche zeroes grads every iteration: nothing may live in .grad


def _roundtrip(opt):
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf)


# -------------------------------------------------------------------------- reference (spec 6.2)


def _reference_run(params, grad_stream, intervals, *, kf_compat=True, blend="attention", mix=0.5,
                   lr=1e-2, beta2=0.999, eps=1e-7, warmup=0, accumulate=True, amsgrad=False,
                   beta1=None, fixed=(0.1, 0.3, 0.6)):
    """Independent, deliberately plain re-statement of spec 6.2 (separate S/Mm/Lg tensors, Python
    loops); returns the list of parameter tensors after every step."""
    P = [p.detach().clone() for p in params]
    S = [torch.zeros_like(p) for p in P]
    Mm = [torch.zeros_like(p) for p in P]
    Lg = [torch.zeros_like(p) for p in P]
    v = [torch.zeros_like(p) for p in P]
    vmax = [torch.zeros_like(p) for p in P]
    m1 = [torch.zeros_like(p) for p in P]
    A = [torch.zeros_like(p) for p in P]
    n = [0] * len(P)
    k = [0] * len(P)
    b = [torch.tensor(fixed, dtype=P[0].dtype) for _ in P]
    out = []
    for s, grads in enumerate(grad_stream, start=1):
        for i, g in enumerate(grads):
            S[i] = DECAYS[0] * S[i] + (1 - DECAYS[0]) * g
            Mm[i] = DECAYS[1] * Mm[i] + (1 - DECAYS[1]) * g
            Lg[i] = DECAYS[2] * Lg[i] + (1 - DECAYS[2]) * g
            c = intervals[i]
            due = c <= 1 or s < warmup or s % c == 0
            if not due:
                if accumulate:
                    A[i] = A[i] + g
                    n[i] += 1
                continue
            e = (A[i] + g) / (n[i] + 1) if (accumulate and n[i] > 0) else g
            A[i] = torch.zeros_like(g)
            n[i] = 0
            mems = [S[i], Mm[i], Lg[i]]
            if blend == "fixed":
                w = list(fixed)
            elif blend == "adaptive":
                w = torch.softmax(b[i], 0).tolist()
            else:
                z = torch.tensor([float((e * M).sum()) for M in mems], dtype=torch.float64)
                z = z / math.sqrt(e.numel() + 1e-8)
                w = torch.softmax(z, 0).tolist()
            h = (1 - mix) * e + mix * (w[0] * S[i] + w[1] * Mm[i] + w[2] * Lg[i])
            k[i] += 1
            v[i] = beta2 * v[i] + (1 - beta2) * h * h
            vmax[i] = torch.maximum(vmax[i], v[i])
            vh = vmax[i] if amsgrad else v[i]
            bc = 1 - beta2 ** (s + 1) if kf_compat else 1 - beta2 ** k[i]
            num = h
            if beta1 is not None:
                m1[i] = beta1 * m1[i] + (1 - beta1) * h
                num = m1[i] / (1 - beta1 ** k[i])
            P[i] = P[i] - lr * num / (torch.sqrt(vh / bc) + eps)
            if blend == "adaptive":
                en = e.norm() + 1e-8
                b[i] = b[i] + 0.01 * torch.tensor([float((e * M).sum()) for M in mems],
                                                  dtype=b[i].dtype) / en
        out.append([p.clone() for p in P])
    return out


# -------------------------------------------------------------------------- depths and intervals


def test_compute_depths_uses_owning_modules_in_named_modules_order():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))  # owned by the block itself
            self.inner = nn.Linear(3, 3)

    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), Block(), nn.Linear(3, 2))
    model[3].requires_grad_(False)
    assert compute_depths(model) == {"0.weight": 0, "0.bias": 0, "2.scale": 1,
                                     "2.inner.weight": 2, "2.inner.bias": 2}


@pytest.mark.parametrize("kf_compat,reverse,curve,expected", [
    (True, True, "cosine", (1, 2, 5, 7)),      # spec 6.1 example
    (True, False, "cosine", (7, 5, 2, 1)),
    # the seed's floor(6 * (1 - (1 - 1/3)) + 1) is floor(2.9999999999999996) = 2, reproduced as is
    (True, True, "linear", (1, 2, 5, 7)),
    (True, True, "exponential", (1, 1, 3, 7)),
    (False, True, "cosine", (1, 2, 5, 6)),     # fixed: max interval M, round half up
    (False, True, "linear", (1, 2, 4, 6)),
])
def test_intervals_from_model_depth(kf_compat, reverse, curve, expected):
    model = _four_layers()
    opt = MultiTimescaleMemoryOpt(model.parameters(), model=model, kf_compat=kf_compat,
                                  max_interval=6, schedule_curve=curve, reverse_depth_order=reverse)
    iv = opt.update_intervals()
    names = ["0", "2", "4", "5"]
    assert tuple(iv[f"{n}.weight"] for n in names) == expected
    assert all(iv[f"{n}.bias"] == iv[f"{n}.weight"] for n in names)  # depth is per module


def test_interval_function_edges():
    assert interval_from_depth(1.0, 6, "cosine", True, True) == 7  # deepest: M + 1 under kf_compat
    assert interval_from_depth(1.0, 6, "cosine", True, False) == 6
    assert interval_from_depth(0.0, 6, "cosine", False, True) == 7  # not reversed: first is slowest
    assert interval_from_depth(0.0, 6, "cosine", True, True) == 1
    assert interval_from_depth(0.0, 6, "exponential", True, False) == 1  # round(6 e^-3) = 0 -> 1
    assert interval_from_depth(0.5, 0, "linear", True, True) == 1
    with pytest.raises(ValueError):
        interval_from_depth(0.5, 6, "step")


def test_kf_fallback_depth_is_per_variable():
    model = _four_layers()
    opt = MultiTimescaleMemoryOpt(model.parameters())  # kf_compat, no model: seed's fallback
    rds = per_variable_relative_depths(8)
    assert list(opt.update_intervals().values()) == [interval_from_depth(r, 6) for r in rds]
    iv = opt.update_intervals()
    assert (iv["group0.6"], iv["group0.7"]) == (6, 7)  # kernel and bias of one layer differ
    assert per_variable_relative_depths(1) == [0.5]


def test_fixed_mode_depth_from_names_equals_depth_from_model():
    model = _four_layers()
    a = MultiTimescaleMemoryOpt(model.named_parameters(), kf_compat=False)
    b = MultiTimescaleMemoryOpt(model.parameters(), model=model, kf_compat=False)
    assert a.update_intervals() == b.update_intervals()
    with pytest.raises(ValueError):  # fixed mode never guesses depth per variable
        MultiTimescaleMemoryOpt(model.parameters(), kf_compat=False)


def test_manual_intervals_by_name():
    model = _four_layers()
    opt = MultiTimescaleMemoryOpt(model.named_parameters(), auto_schedule=False,
                                  layer_update_intervals={"2.": 3, "5.weight": 4}, default_interval=2)
    iv = opt.update_intervals()
    assert iv == {"0.weight": 2, "0.bias": 2, "2.weight": 3, "2.bias": 3, "4.weight": 2,
                  "4.bias": 2, "5.weight": 4, "5.bias": 2}


def test_should_update_clock():
    assert [s for s in range(1, 15) if should_update(s, 5)] == [5, 10]
    assert [s for s in range(1, 15) if should_update(s, 5, warmup_steps=4)] == [1, 2, 3, 5, 10]
    assert all(should_update(s, 1) for s in range(1, 5))


# -------------------------------------------------------------------------- P6.1


def test_p61_memories_follow_closed_form_regardless_of_interval():
    model = _four_layers()
    params = list(model.parameters())
    opt = MultiTimescaleMemoryOpt(params, model=model, lr=1e-3)
    gs = [torch.full_like(p, 0.5) + torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) * 0.1
          for p in params]
    for s in range(1, 16):
        _feed(opt, params, gs)
        for p, g in zip(params, gs):
            mem = opt.state[p]["memory"]
            for j, d in enumerate(DECAYS):
                assert torch.allclose(mem[j], (1 - d ** s) * g, rtol=1e-10, atol=1e-14), (s, j)


# -------------------------------------------------------------------------- P6.2


def test_p62_parameter_changes_only_on_due_steps():
    model = _four_layers()
    params = list(model.parameters())
    opt = MultiTimescaleMemoryOpt(params, model=model, warmup_steps=4)
    intervals = [opt.update_intervals()[n] for n, _ in model.named_parameters()]
    assert sorted(set(intervals)) == [1, 2, 5, 7]
    for s, grads in enumerate(_grad_stream(params, 15), start=1):
        before = [p.detach().clone() for p in params]
        _feed(opt, params, grads)
        for p, b, c in zip(params, before, intervals):
            assert (not torch.equal(p, b)) == (s < 4 or s % c == 0), (s, c)


@pytest.mark.parametrize("kf_compat", [True, False])
def test_p62_applied_gradient_is_mean_since_last_update(kf_compat):
    # blend 'fixed' makes h = (1-mix) e + mix * (0.1 S + 0.3 Mm + 0.6 Lg) with known memories, so e
    # can be recovered from the committed v (magnitude) and the parameter change (sign).
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(6, dtype=torch.float64))
    b2 = 0.9
    mix = 0.5 if kf_compat else 0.3
    opt = MultiTimescaleMemoryOpt([p], auto_schedule=False, default_interval=4, blend_mode="fixed",
                                  beta2=b2, kf_compat=kf_compat, mix=mix)
    stream = _grad_stream([p], 12)
    since = []
    for s, (g,) in enumerate(stream, start=1):
        st = opt.state[p]
        v_before = st["exp_avg_sq"].clone() if "exp_avg_sq" in st else torch.zeros(6, dtype=torch.float64)
        p_before = p.detach().clone()
        _feed(opt, [p], [g])
        since.append(g)
        if s % 4:
            assert st["acc_count"] == len(since) and torch.allclose(st["acc"], sum(since))
            continue
        h_abs = ((st["exp_avg_sq"] - b2 * v_before) / (1 - b2)).sqrt()
        h = h_abs * torch.sign(p_before - p.detach())
        mem = st["memory"]
        e = (h - mix * (0.1 * mem[0] + 0.3 * mem[1] + 0.6 * mem[2])) / (1 - mix)
        assert torch.allclose(e, sum(since) / len(since), atol=1e-9), s
        assert st["acc_count"] == 0 and torch.count_nonzero(st["acc"]) == 0
        since = []


def test_accumulate_off_applies_only_the_current_gradient():
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    params = [p]
    stream = _grad_stream(params, 9)
    ref = _reference_run(params, stream, [3], accumulate=False)
    ref_acc = _reference_run(params, stream, [3], accumulate=True)
    opt = MultiTimescaleMemoryOpt(params, lr=1e-2, auto_schedule=False, default_interval=3,
                                  accumulate=False)
    for grads in stream:
        _feed(opt, params, grads)
    assert "acc" not in opt.state[p]
    assert torch.allclose(p.detach(), ref[-1][0], atol=1e-12)
    assert not torch.allclose(ref[-1][0], ref_acc[-1][0], atol=1e-6)


# -------------------------------------------------------------------------- P6.3


def test_p63_blend_weights_are_a_distribution():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        e = torch.randn(7, 3, generator=gen) * 10
        mem = torch.randn(3, 7, 3, generator=gen) * 10
        for mode, logits in (("attention", None), ("adaptive", torch.randn(3, generator=gen) * 5)):
            w = blend_weights(mode, e, mem, logits=logits)
            assert (w >= 0).all() and torch.isclose(w.sum(), torch.tensor(1.0))
    e = torch.ones(4)
    mem = torch.stack([torch.ones(4), torch.zeros(4), -torch.ones(4)])
    w = blend_weights("attention", e, mem)
    assert w[0] > w[1] > w[2]  # the memory most aligned with the query gets the largest weight
    assert torch.allclose(w, torch.softmax(torch.tensor([4.0, 0.0, -4.0]) / 2.0, 0))


@pytest.mark.parametrize("mode", ["fixed", "adaptive", "attention"])
def test_p63_first_step_h_parallel_to_g(mode):
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
    g = torch.randn(5, 4, dtype=torch.float64)
    opt = MultiTimescaleMemoryOpt([p], blend_mode=mode, auto_schedule=False)
    _feed(opt, [p], [g])
    ratio = opt.state[p]["exp_avg_sq"] / g ** 2  # v = (1 - b2) lambda^2 g^2 for h = lambda g
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-10)
    mem = opt.state[p]["memory"]
    w = blend_weights(mode, g, mem, logits=torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64))
    h = effective_gradient(g, mem, w)
    lam = (h / g).flatten()
    assert torch.allclose(lam, lam[0].expand_as(lam)) and lam[0] > 0.5


def test_adaptive_logits_move_after_each_update():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(4, dtype=torch.float64))
    opt = MultiTimescaleMemoryOpt([p], blend_mode="adaptive", auto_schedule=False, adaptive_lr=0.01)
    g = torch.randn(4, dtype=torch.float64)
    _feed(opt, [p], [g])
    st = opt.state[p]
    expected = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64) + 0.01 * adaptive_logit_delta(
        g, st["memory"])
    assert torch.allclose(st["blend_logits"], expected)
    assert not torch.allclose(st["blend_logits"], torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64))


# -------------------------------------------------------------------------- P6.4 and reference


@pytest.mark.parametrize("beta1,amsgrad", [(None, False), (0.9, False), (None, True)])
def test_p64_fixed_mode_reduces_to_adam(beta1, amsgrad):
    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    m2 = copy.deepcopy(m1)
    adam = torch.optim.Adam(m1.parameters(), lr=3e-3, betas=(beta1 or 0.0, 0.99), eps=1e-7,
                            amsgrad=amsgrad, foreach=False)
    mtm = MultiTimescaleMemoryOpt(m2.parameters(), lr=3e-3, kf_compat=False, mix=0.0,
                                  accumulate=False, auto_schedule=False, beta1=beta1, beta2=0.99,
                                  amsgrad=amsgrad)
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        for m, o in ((m1, adam), (m2, mtm)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


@pytest.mark.parametrize("cfg", [
    dict(kf_compat=True, blend="attention"),
    dict(kf_compat=True, blend="adaptive", warmup=3),
    dict(kf_compat=True, blend="fixed", amsgrad=True),
    dict(kf_compat=False, blend="attention", mix=0.7, beta1=0.8),
    dict(kf_compat=False, blend="adaptive", accumulate=False),
])
def test_trajectory_matches_reference(cfg):
    model = _four_layers()
    params = list(model.parameters())
    kw = dict(blend_mode=cfg["blend"], kf_compat=cfg["kf_compat"], lr=1e-2,
              warmup_steps=cfg.get("warmup", 0), amsgrad=cfg.get("amsgrad", False),
              accumulate=cfg.get("accumulate", True), mix=cfg.get("mix", 0.5), beta1=cfg.get("beta1"))
    opt = MultiTimescaleMemoryOpt(params, model=model, **kw)
    intervals = [opt.update_intervals()[n] for n, _ in model.named_parameters()]
    stream = _grad_stream(params, 16)
    ref = _reference_run(params, stream, intervals, kf_compat=cfg["kf_compat"], blend=cfg["blend"],
                         mix=kw["mix"], warmup=kw["warmup_steps"], accumulate=kw["accumulate"],
                         amsgrad=kw["amsgrad"], beta1=kw["beta1"])
    for s, grads in enumerate(stream):
        _feed(opt, params, grads)
        for p, r in zip(params, ref[s]):
            assert torch.allclose(p.detach(), r, rtol=0, atol=1e-11), s


def test_kf_bias_correction_uses_global_step_plus_one():
    # First applied update of a parameter with interval c happens at s = c: the seed divides v by
    # 1 - b2^(c+1) although v has seen one update, so |step| = lr*sqrt((1-b2^(c+1))/(1-b2)).
    # The fixed version divides by 1 - b2 and steps by lr.
    lr, b2 = 1e-3, 0.999
    for kf, c in ((True, 1), (True, 7), (False, 1), (False, 7)):
        p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
        opt = MultiTimescaleMemoryOpt([p], lr=lr, auto_schedule=False, default_interval=c,
                                      kf_compat=kf, eps=0.0)
        for _ in range(c):
            _feed(opt, [p], [torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)])
        expected = lr * math.sqrt((1 - b2 ** (c + 1)) / (1 - b2)) if kf else lr
        assert torch.allclose(p.detach().abs(), torch.full((3,), expected, dtype=torch.float64)), (kf, c)


# -------------------------------------------------------------------------- LR schedule


def test_sawtooth_lr_values():
    f = lambda s: sawtooth_lr(s, 1.0, 100)
    assert f(1) == pytest.approx(0.01)
    assert f(26) == pytest.approx(1.0) and f(51) == pytest.approx(1.0)
    assert f(13) == pytest.approx(0.01 + 12 / 25 * 0.99)
    assert f(76) == pytest.approx(1.0 - 25 / 50 * 0.99)
    assert f(100) == pytest.approx(1.0 - 49 / 50 * 0.99)
    assert f(101) == pytest.approx(0.01)  # restarts every epoch


def test_optimizer_uses_sawtooth_lr():
    lr = 1e-2
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = MultiTimescaleMemoryOpt([p], lr=lr, auto_schedule=False, kf_compat=False, mix=0.0,
                                  eps=0.0, steps_per_epoch=8)
    steps = []
    for s in range(1, 10):
        before = p.detach().clone()
        _feed(opt, [p], [torch.tensor([1.0, 1.0], dtype=torch.float64)])
        steps.append((before - p.detach())[0].item())
    for s, st in enumerate(steps, start=1):
        assert st == pytest.approx(sawtooth_lr(s, lr, 8), rel=1e-9)
    assert steps[8] == pytest.approx(0.01 * lr)


# -------------------------------------------------------------------------- compression


def test_compression_stores_low_rank_gradients_in_memory_only():
    torch.manual_seed(0)
    p = nn.Parameter(torch.zeros(6, 5, dtype=torch.float64))
    opt = MultiTimescaleMemoryOpt([p], auto_schedule=False, compression_rank=1, accumulate=True)
    for _ in range(3):
        _feed(opt, [p], [torch.randn(6, 5, dtype=torch.float64)])
    mem = opt.state[p]["memory"]
    assert torch.linalg.matrix_rank(mem[0]) == 3  # sum of three rank-1 terms
    p2 = nn.Parameter(torch.zeros(6, 5, dtype=torch.float64))
    opt2 = MultiTimescaleMemoryOpt([p2], auto_schedule=False, compression_rank=1)
    _feed(opt2, [p2], [torch.randn(6, 5, dtype=torch.float64)])
    assert torch.linalg.matrix_rank(opt2.state[p2]["memory"][0]) == 1


# -------------------------------------------------------------------------- state, groups, args


@pytest.mark.parametrize("kw", [dict(), dict(blend_mode="adaptive", amsgrad=True, warmup_steps=2),
                                dict(kf_compat=False, beta1=0.9, mix=0.25, steps_per_epoch=5)])
def test_state_dict_roundtrip_is_bitwise(kw):
    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen))
            for _ in range(4)]

    def run(model, opt, steps, offset):
        for i in range(steps):
            x, y = data[(i + offset) % 4]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    o1 = MultiTimescaleMemoryOpt(m1.parameters(), model=m1, **kw)
    run(m1, o1, 5, 0)  # intervals 1, 4, 7 in this net: mid-window for the slow layers
    assert any(o1.state[p].get("acc_count", 0) > 0 for p in m1.parameters())
    m2 = copy.deepcopy(m1)
    o2 = MultiTimescaleMemoryOpt(m2.parameters(), model=m2, **kw)
    o2.load_state_dict(_roundtrip(o1))
    assert o2.global_step == 5
    run(m1, o1, 9, 5)
    run(m2, o2, 9, 5)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert o1.global_step == o2.global_step == 14


def test_param_groups_have_own_hyperparameters():
    model = _four_layers()
    opt = MultiTimescaleMemoryOpt([{"params": model[0].parameters(), "lr": 0.0},
                                   {"params": list(model[2].parameters()) + list(model[4].parameters())
                                    + list(model[5].parameters()), "max_interval": 2}],
                                  model=model, max_interval=6)
    iv = opt.update_intervals()
    assert iv["0.weight"] == 1  # depth 0 with reverse order: fastest
    assert (iv["2.weight"], iv["4.weight"], iv["5.weight"]) == (1, 2, 3)  # M = 2 in this group
    frozen = model[0].weight.detach().clone()
    params = list(model.parameters())
    for grads in _grad_stream(params, 3):
        _feed(opt, params, grads)
    assert torch.equal(model[0].weight, frozen)
    assert opt.update_counts()["2.weight"] == 3


def test_grown_parameter_swapped_in_by_avalanche_keeps_its_depth():
    # avalanche.models.dynamic_optimizers.update_optimizer: group["params"][i] = new_p; state[new_p] = {}
    model = _four_layers()
    opt = MultiTimescaleMemoryOpt(model.named_parameters(), model=model, auto_schedule=True)
    params = list(model.parameters())
    for grads in _grad_stream(params, 2):
        _feed(opt, params, grads)
    old = model[0].weight
    new = nn.Parameter(torch.randn(7, 3, dtype=torch.float64))
    opt.param_groups[0]["params"][0] = new
    opt.state.pop(old)
    opt.state[new] = {}
    new.grad = torch.randn(7, 3, dtype=torch.float64)
    opt.step()
    assert opt.state[new]["interval"] == 1 and opt.state[new]["memory"].shape == (3, 7, 3)
    assert opt.update_intervals()["0.weight"] == 1


def test_closure_and_global_step():
    model = _four_layers()
    opt = MultiTimescaleMemoryOpt(model.parameters(), model=model)
    x = torch.randn(4, 3, dtype=torch.float64)

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))
    opt.zero_grad()
    opt.step()
    assert opt.global_step == 2 and opt.state_dict()["state"]["global_step"] == 2


@pytest.mark.parametrize("kw", [
    dict(lr=-1.0), dict(blend_mode="mean"), dict(schedule_curve="step"), dict(max_interval=-1),
    dict(warmup_steps=-1), dict(beta2=1.0), dict(eps=-1.0), dict(decays=(0.9, 0.99)),
    dict(fixed_weights=(0.5, 0.5)), dict(default_interval=0), dict(beta1=0.9),
    dict(mix=0.3), dict(kf_compat=False, mix=1.5), dict(kf_compat=False, beta1=1.0),
    dict(compression_rank=0), dict(steps_per_epoch=0), dict(lr_hold_fraction=-0.1),
    dict(layer_update_intervals={"0.": 2}), dict(kf_compat="yes"), dict(accumulate=1),
    dict(auto_schedule=False, layer_update_intervals={"0.": 0}),
])
def test_bad_arguments_raise(kw):
    model = _four_layers()
    with pytest.raises(ValueError):
        MultiTimescaleMemoryOpt(model.named_parameters(), model=model, **kw)


def test_manual_mapping_needs_names():
    with pytest.raises(ValueError):
        MultiTimescaleMemoryOpt(_four_layers().parameters(), auto_schedule=False,
                                layer_update_intervals={"0.": 2})
