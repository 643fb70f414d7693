"""DeepMomentumGD, DeltaMomentum, Muon and the Newton-Schulz maps (spec 7): P7.1-P7.5 and more."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from nlbench.strategies.dmgd.deep_momentum import (DeepMomentumGD, memory_forward, memory_grads,
                                                   value_target)
from nlbench.strategies.dmgd.delta_momentum import DeltaMomentum, delta_momentum_update
from nlbench.strategies.dmgd.muon import Muon
from nlbench.strategies.dmgd.newton_schulz import muon_scale, newton_schulz5, polar_cubic


class _NoBias(nn.Module):
    """Only >= 2-D weights (a conv kernel, a wide and a TALL linear), so whole trajectories can be
    compared with optimizers that have no 1-D fallback."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, bias=False)
        self.fc1 = nn.Linear(12, 20, bias=False)  # tall: d_out > d_in
        self.fc2 = nn.Linear(20, 4, bias=False)

    def forward(self, x):
        h = torch.tanh(self.conv(x)).flatten(1)
        return self.fc2(torch.tanh(self.fc1(h)))


def _nobias(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return _NoBias().to(dtype)


def _batches(dtype=torch.float64, k=4, n=8):
    gen = torch.Generator().manual_seed(7)
    return [(torch.randn(n, 2, 4, 4, generator=gen, dtype=dtype),
             torch.randint(0, 4, (n,), generator=gen)) for _ in range(k)]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))


def _mlp_batches(k=4, n=16):
    gen = torch.Generator().manual_seed(9)
    return [(torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen))
            for _ in range(k)]


def _train(model, opt, steps, batches):
    for i in range(steps):
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _assert_close_models(a, b, tol):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=tol), (n, (p - q).abs().max().item())


def _assert_equal_models(a, b):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


def _roundtrip(opt):
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf)


# ------------------------------------------------------------------------------ Newton-Schulz, P7.4


def _ns5_reference(G, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.clone()
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


@pytest.mark.parametrize("shape", [(16, 24), (24, 16), (20, 20)])
def test_ns5_matches_reference_and_is_odd_and_scale_invariant(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = newton_schulz5(G)
    assert out.shape == G.shape
    assert torch.allclose(out, _ns5_reference(G), atol=1e-12)
    assert torch.allclose(newton_schulz5(-G), -out, atol=1e-12)
    # Exactly scale-invariant without the normalisation epsilon; with it, nearly (P7.3 relies on it).
    assert torch.allclose(newton_schulz5(3e-3 * G, eps=0.0), newton_schulz5(G, eps=0.0), atol=1e-12)
    assert torch.allclose(newton_schulz5(0.1 * G), out, atol=1e-6)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 96)])
def test_p74_ns5_singular_values_are_near_one_but_not_exact(shape):
    # Rectangular only: a square Gaussian matrix has singular values near 0 that 5 steps cannot lift.
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    sv = torch.linalg.svdvals(newton_schulz5(G))
    assert sv.min() > 0.6 and sv.max() < 1.2
    assert (sv - 1).abs().max() > 1e-3  # NS5 is deliberately inexact; nobody should test == I


@pytest.mark.parametrize("shape", [(8, 12), (12, 8)])
def test_p74_cubic_polar_converges_to_polar_factor(shape):
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(X, full_matrices=False)
    err = (polar_cubic(X, 60) - U @ Vh).abs().max()
    assert err < 1e-12
    assert (polar_cubic(X, 3) - U @ Vh).abs().max() > 1e-3  # the iteration count matters


def test_muon_scale():
    assert muon_scale(20, 12) == pytest.approx(math.sqrt(20 / 12))
    assert muon_scale(4, 20) == 1.0


# ------------------------------------------------------------------------------ memory MLP gradients


@pytest.mark.parametrize("objective", ["dot", "l2"])
def test_memory_grads_match_autograd(objective):
    gen = torch.Generator().manual_seed(3)
    d_out, d_in, h = 5, 7, 4
    B = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64, requires_grad=True)
    Wa = torch.randn(d_in, h, generator=gen, dtype=torch.float64, requires_grad=True)
    Wb = torch.randn(h, d_in, generator=gen, dtype=torch.float64, requires_grad=True)
    U = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    V = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    m = B + torch.tanh(U @ Wb.T) @ Wa.T
    loss = (m * U).sum() if objective == "dot" else 0.5 * ((m - V) ** 2).sum()
    gB, gWa, gWb = torch.autograd.grad(loss, (B, Wa, Wb))
    with torch.no_grad():
        mine = memory_grads(B, Wa, Wb, U, objective, V)
        assert torch.allclose(memory_forward(B, Wa, Wb, U)[0], m)
    for ours, ref in zip(mine, (gB, gWa, gWb)):
        assert torch.allclose(ours, ref, atol=1e-12)


def test_value_targets():
    U = torch.tensor([[3.0, -4.0], [0.5, 0.0]], dtype=torch.float64)
    assert torch.equal(value_target(U, "identity"), -U)
    sq = 0.001 * U * U
    V = value_target(U, "adam", sq, 1, 0.999)
    assert torch.allclose(V, -U / (U.abs() + 1e-8))
    assert torch.allclose(value_target(U, "ns"), -newton_schulz5(U))


# ------------------------------------------------------------------------------ reductions P7.1-P7.3


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_p71_dot_memory_is_heavy_ball_sgd(mu):
    lr = 0.05
    m1, m2 = _nobias(), _nobias()
    sgd = torch.optim.SGD(m1.parameters(), lr=lr, momentum=mu, dampening=0)
    dm = DeepMomentumGD(m2.parameters(), lr=1.0, alpha=mu, zeta=lr, objective="dot", hidden=0)
    batches = _batches()
    _train(m1, sgd, 12, batches)
    _train(m2, dm, 12, batches)
    _assert_close_models(m1, m2, 1e-6)
    # B_s = -lr * buf_s
    for p, q in zip(m1.parameters(), m2.parameters()):
        buf = sgd.state[p]["momentum_buffer"] if mu else p.grad  # torch keeps no buffer at mu = 0
        assert torch.allclose(dm.state[q]["B"], -lr * buf.reshape(buf.shape[0], -1), atol=1e-9)


def test_p72_l2_identity_memory_is_ema_momentum():
    beta, lr = 0.8, 0.1
    m1, m2 = _nobias(), _nobias()
    dm = DeepMomentumGD(m2.parameters(), lr=lr, alpha=1.0, zeta=1 - beta, objective="l2",
                        precond="identity", hidden=0)
    ema = {p: torch.zeros_like(p) for p in m1.parameters()}
    batches = _batches()
    for i in range(10):
        x, y = batches[i % len(batches)]
        for m in (m1, m2):
            m.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
        with torch.no_grad():
            for p in m1.parameters():
                ema[p].mul_(beta).add_(p.grad, alpha=1 - beta)  # Adam's uncorrected first moment
                p.sub_(lr * ema[p])
        dm.step()
    _assert_close_models(m1, m2, 1e-10)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(dm.state[q]["B"], -ema[p].reshape(p.shape[0], -1), atol=1e-12)


@pytest.mark.parametrize("zeta", [0.02, 0.7])
def test_p73_ns_output_memory_is_muon_without_nesterov(zeta):
    lr, mu = 0.02, 0.95
    m1, m2 = _nobias(), _nobias()
    muon = Muon(m1.parameters(), lr=lr, momentum=mu, nesterov=False)
    dm = DeepMomentumGD(m2.parameters(), lr=lr, alpha=mu, zeta=zeta, objective="dot", hidden=0,
                        sigma_out="ns")
    batches = _batches()
    _train(m1, muon, 10, batches)
    _train(m2, dm, 10, batches)
    # Not exact: NS_5 normalises by ||X|| + 1e-7 and B = -zeta * buf has a different norm.
    _assert_close_models(m1, m2, 1e-5)


def _muon_reference_run(model, batches, steps, lr, mu, nesterov):
    bufs = {p: torch.zeros(p.shape[0], p[0].numel(), dtype=p.dtype) for p in model.parameters()}
    for i in range(steps):
        x, y = batches[i % len(batches)]
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                g = p.grad.reshape(p.shape[0], -1)
                bufs[p] = mu * bufs[p] + g
                X = g + mu * bufs[p] if nesterov else bufs[p]
                d_out, d_in = g.shape
                p.sub_(lr * max(1.0, d_out / d_in) ** 0.5 * _ns5_reference(X).reshape(p.shape))


@pytest.mark.parametrize("nesterov", [False, True])
def test_muon_matches_independent_reference(nesterov):
    m1, m2 = _nobias(), _nobias()
    batches = _batches()
    _muon_reference_run(m1, batches, 8, 0.02, 0.9, nesterov)
    _train(m2, Muon(m2.parameters(), lr=0.02, momentum=0.9, nesterov=nesterov), 8, batches)
    _assert_close_models(m1, m2, 1e-10)


def test_muon_1d_fallback_is_torch_adamw():
    torch.manual_seed(0)
    p1 = nn.Parameter(torch.randn(7))
    p2 = nn.Parameter(p1.detach().clone())
    target = torch.randn(7)
    a = torch.optim.AdamW([p1], lr=0.01, betas=(0.8, 0.95), weight_decay=0.1, foreach=False)
    b = Muon([p2], adam_lr=0.01, adam_betas=(0.8, 0.95), adam_weight_decay=0.1)
    for _ in range(15):
        for p, o in ((p1, a), (p2, b)):
            o.zero_grad()
            ((p - target) ** 4).sum().backward()
            o.step()
    assert torch.equal(p1, p2)


def test_muon_use_muon_false_group_goes_to_adamw():
    m = _mlp()
    opt = Muon([{"params": m[0].parameters()}, {"params": m[2].parameters(), "use_muon": False}])
    _train(m, opt, 2, _mlp_batches())
    assert "momentum_buffer" in opt.state[m[0].weight]
    assert "exp_avg" in opt.state[m[2].weight] and "momentum_buffer" not in opt.state[m[2].weight]


# ------------------------------------------------------------------------------ DMGD behaviour


def test_dmgd_mlp_memory_learns_and_changes_the_update():
    m1, m2 = _nobias(), _nobias()
    batches = _batches()
    lin = DeepMomentumGD(m1.parameters(), lr=0.05, hidden=0)
    deep = DeepMomentumGD(m2.parameters(), lr=0.05, hidden=8, mlp_reduction="sum")
    _train(m1, lin, 6, batches)
    _train(m2, deep, 6, batches)
    st = deep.state[m2.fc1.weight]
    assert st["Wa"].abs().max() > 0 and st["Wa"].shape == (12, 8) and st["Wb"].shape == (8, 12)
    assert not torch.allclose(m1.fc1.weight, m2.fc1.weight, atol=1e-9)


def test_dmgd_mlp_reduction_mean_divides_shared_weight_step_by_rows():
    torch.manual_seed(0)
    U = torch.randn(6, 4, dtype=torch.float64)
    Wa = {}
    for red in ("mean", "sum"):
        W = nn.Parameter(torch.zeros(6, 4, dtype=torch.float64))
        opt = DeepMomentumGD([W], hidden=3, precond="adam", mlp_reduction=red, seed=1)
        W.grad = U.clone()
        opt.step()
        Wa[red] = opt.state[W]["Wa"]
        assert Wa[red].abs().max() > 0
    assert torch.allclose(Wa["mean"] * 6, Wa["sum"], atol=1e-14)


def test_dmgd_first_step_uses_updated_memory():
    # From zero state, l2/identity: B_1 = zeta * V = -zeta U, so W_1 = W_0 - lr * zeta * U
    # (a bug that applies the memory before the inner step would leave W unchanged).
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    W0 = W.detach().clone()
    U = torch.randn(3, 4, dtype=torch.float64)
    opt = DeepMomentumGD([W], lr=0.5, zeta=0.1, hidden=0)
    W.grad = U.clone()
    opt.step()
    assert torch.allclose(W.detach(), W0 - 0.05 * U, atol=1e-14)


def test_dmgd_adam_precond_first_step_is_sign_like():
    torch.manual_seed(0)
    W = nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    U = torch.randn(3, 4, dtype=torch.float64)
    opt = DeepMomentumGD([W], lr=1.0, zeta=0.1, precond="adam", hidden=0)
    W.grad = U.clone()
    opt.step()
    assert torch.allclose(W.detach(), -0.1 * U / (U.abs() + 1e-8), atol=1e-12)


def test_dmgd_does_not_touch_global_rng_and_is_seeded():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    m1, m2 = _nobias(), _nobias()
    torch.set_rng_state(state)
    o1 = DeepMomentumGD(m1.parameters(), hidden=4, seed=5)
    batches = _batches()
    _train(m1, o1, 1, batches)
    assert torch.equal(torch.get_rng_state(), state)
    o2 = DeepMomentumGD(m2.parameters(), hidden=4, seed=5)
    _train(m2, o2, 1, batches)
    assert torch.equal(o1.state[m1.fc1.weight]["Wb"], o2.state[m2.fc1.weight]["Wb"])
    m3 = _nobias()
    o3 = DeepMomentumGD(m3.parameters(), hidden=4, seed=6)
    _train(m3, o3, 1, batches)
    assert not torch.equal(o1.state[m1.fc1.weight]["Wb"], o3.state[m3.fc1.weight]["Wb"])
    Wb = o1.state[m1.fc1.weight]["Wb"]
    assert abs(Wb.var().item() * 12 - 1.0) < 0.5  # N(0, 1/d_in), d_in = 12


def test_dmgd_1d_params_use_adam_fallback():
    torch.manual_seed(0)
    p1 = nn.Parameter(torch.randn(5))
    p2 = nn.Parameter(p1.detach().clone())
    a = torch.optim.Adam([p1], lr=0.01, foreach=False)
    b = DeepMomentumGD([p2], adam_lr=0.01)
    for _ in range(10):
        for p, o in ((p1, a), (p2, b)):
            o.zero_grad()
            (p.sin() * p).sum().backward()
            o.step()
    assert torch.equal(p1, p2)


# ------------------------------------------------------------------------------ Delta momentum P7.5


def test_p75_delta_momentum_with_zero_erase_is_heavy_ball():
    lr, mu = 0.05, 0.9
    m1, m2 = _nobias(), _nobias()
    sgd = torch.optim.SGD(m1.parameters(), lr=lr, momentum=mu)
    dm = DeltaMomentum(m2.parameters(), lr=lr, alpha=mu, zeta_p=0.0)
    batches = _batches()
    _train(m1, sgd, 10, batches)
    _train(m2, dm, 10, batches)
    _assert_close_models(m1, m2, 1e-6)


@pytest.mark.parametrize("shape", [(4, 9), (9, 4)])
def test_p75_delta_momentum_erases_only_the_key_row_space(shape):
    gen = torch.Generator().manual_seed(4)
    d_out, d_in = shape
    M = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(d_in, d_in, generator=gen, dtype=torch.float64))[0]
    rows, orth = basis[:, :2], basis[:, 2]  # U's row space = span(rows); orth is orthogonal to it
    U = torch.randn(d_out, 2, generator=gen, dtype=torch.float64) @ rows.T
    alpha, zeta, zp = 0.9, 0.1, 0.5
    new = delta_momentum_update(M, U, alpha, zeta, zp)
    assert torch.allclose(new @ orth, alpha * (M @ orth), atol=1e-12)
    Uhat = U / U.norm()
    explicit = M @ (alpha * torch.eye(d_in, dtype=torch.float64) - zp * Uhat.T @ Uhat) - zeta * U
    assert torch.allclose(new, explicit, atol=1e-12)
    v = rows[:, 0]
    assert not torch.allclose(new @ v, alpha * (M @ v) - zeta * (U @ v), atol=1e-6)


# ------------------------------------------------------------------------------ state, groups, args


_FACTORIES = {
    "dmgd": lambda ps: DeepMomentumGD(ps, lr=0.05, hidden=6, precond="adam", weight_decay=0.01),
    "dmgd_ns": lambda ps: DeepMomentumGD(ps, lr=0.01, hidden=4, objective="l2", precond="ns",
                                         sigma_out="ns"),
    "delta": lambda ps: DeltaMomentum(ps, lr=0.05),
    "muon": lambda ps: Muon(ps, lr=0.02, nesterov=True, weight_decay=0.01),
}


@pytest.mark.parametrize("name", sorted(_FACTORIES))
def test_state_dict_roundtrip_is_bitwise(name):
    make = _FACTORIES[name]
    m1 = _mlp()
    o1 = make(m1.parameters())
    batches = _mlp_batches()
    _train(m1, o1, 5, batches)
    m2 = copy.deepcopy(m1)
    o2 = make(m2.parameters())
    o2.load_state_dict(_roundtrip(o1))
    assert o2.global_step == 5
    _train(m1, o1, 6, batches[1:])
    _train(m2, o2, 6, batches[1:])
    _assert_equal_models(m1, m2)
    assert o1.global_step == o2.global_step == 11


@pytest.mark.parametrize("name", sorted(_FACTORIES))
def test_param_groups_respected(name):
    make = _FACTORIES[name]
    m = _mlp()
    opt = make([{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.0,
                                                 "adam_lr": 0.0}])
    frozen = [p.detach().clone() for p in m[2].parameters()]
    first = m[0].weight.detach().clone()
    _train(m, opt, 3, _mlp_batches())
    for p, q in zip(m[2].parameters(), frozen):
        assert torch.equal(p, q)
    assert not torch.equal(m[0].weight, first)


@pytest.mark.parametrize("make", [
    lambda ps: DeepMomentumGD(ps, lr=-1.0),
    lambda ps: DeepMomentumGD(ps, objective="cos"),
    lambda ps: DeepMomentumGD(ps, precond="hessian"),
    lambda ps: DeepMomentumGD(ps, objective="dot", precond="adam"),
    lambda ps: DeepMomentumGD(ps, sigma_out="tanh"),
    lambda ps: DeepMomentumGD(ps, hidden=-1),
    lambda ps: DeepMomentumGD(ps, mlp_reduction="max"),
    lambda ps: DeepMomentumGD(ps, zeta=-0.1),
    lambda ps: DeepMomentumGD(ps, adam_betas=(0.9, 1.0)),
    lambda ps: DeltaMomentum(ps, lr=-1.0),
    lambda ps: DeltaMomentum(ps, zeta_p=-1.0),
    lambda ps: DeltaMomentum(ps, alpha=float("nan")),
    lambda ps: Muon(ps, momentum=1.0),
    lambda ps: Muon(ps, ns_steps=0),
    lambda ps: Muon(ps, momentum=0.0, nesterov=True),
    lambda ps: Muon(ps, weight_decay=-1.0),
    lambda ps: Muon(ps, adam_lr=-1.0),
])
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError):
        make(_mlp().parameters())


def test_ns_functions_reject_non_matrices():
    with pytest.raises(ValueError):
        newton_schulz5(torch.ones(3))
    with pytest.raises(ValueError):
        polar_cubic(torch.ones(2, 2, 2))


# ------------------------------------------------- DMGD: an autograd reference and the defaults


def _reference_dmgd(W0, grads, *, lr, alpha, zeta, objective, precond, hidden, key_norm, seed=0,
                    beta2=0.999):
    """DMGD (spec 7.2) for one weight from its definition, with autograd for the inner gradient:
    phi <- alpha phi - zeta grad_phi l(phi; U, V) (shared Wa, Wb: row mean), then W <- W + lr m_phi(U)
    read from the UPDATED memory."""
    d_out, d_in = W0.shape
    B = torch.zeros_like(W0)
    gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003)
    Wb = (torch.randn(hidden, d_in, generator=gen, dtype=torch.float32) / math.sqrt(d_in)).to(W0.dtype)
    Wa = torch.zeros(d_in, hidden, dtype=W0.dtype)
    sq, W, traj = torch.zeros_like(W0), W0.clone(), []
    for t, U in enumerate(grads, start=1):
        phi = [x.clone().requires_grad_(True) for x in (B, Wa, Wb)]
        K = U / U.pow(2).mean().sqrt() if key_norm == "rms" else U
        m = phi[0] + torch.tanh(K @ phi[2].T) @ phi[1].T
        if objective == "dot":
            loss = (m * U).sum()
        else:
            sq = beta2 * sq + (1 - beta2) * U * U
            V = -U / ((sq / (1 - beta2 ** t)).sqrt() + 1e-8) if precond == "adam" else -U
            loss = 0.5 * ((m - V) ** 2).sum()
        gB, gWa, gWb = torch.autograd.grad(loss, phi)
        B = alpha * B - zeta * gB
        Wa = alpha * Wa - zeta * gWa / d_out
        Wb = alpha * Wb - zeta * gWb / d_out
        W = W + lr * (B + torch.tanh(K @ Wb.T) @ Wa.T)
        traj.append(W.clone())
    return traj


@pytest.mark.parametrize("objective,precond,key_norm", [("l2", "adam", "rms"), ("l2", "identity", "none"),
                                                       ("dot", "identity", "rms")])
def test_dmgd_with_an_mlp_memory_matches_an_autograd_reference(objective, precond, key_norm):
    """hidden > 0: the outer step must read the memory AFTER its inner update (reading it before is
    invisible with hidden = 0 only at the first step; here every step is compared)."""
    gen = torch.Generator().manual_seed(4)
    W0 = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    grads = [torch.randn(5, 7, generator=gen, dtype=torch.float64) * (1 + s) for s in range(6)]
    W = nn.Parameter(W0.clone())
    opt = DeepMomentumGD([W], lr=0.3, alpha=0.95, zeta=0.5, objective=objective, precond=precond, hidden=4,
                         key_norm=key_norm)
    expected = _reference_dmgd(W0, grads, lr=0.3, alpha=0.95, zeta=0.5, objective=objective,
                               precond=precond, hidden=4, key_norm=key_norm)
    for U, want in zip(grads, expected):
        W.grad = U.clone()
        opt.step()
        assert torch.allclose(W.detach(), want, rtol=0, atol=1e-11)
    assert opt.state[W]["Wa"].abs().max() > 0.01


def _digits(n=256):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X[:n] / 16.0, dtype=torch.float64), torch.tensor(y[:n])


def _dmgd_strategy_trajectory(overrides, steps=40):
    from nlbench.core.registry import BuildContext, build_parts, resolve_hparams

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).double()
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    ctx = BuildContext(spec=None, suite=None, model=model, device=torch.device("cpu"))
    opt = build_parts("dmgd", ctx, resolve_hparams("dmgd", overrides)).optimizer(model, None)
    X, y = _digits()
    for s in range(steps):
        idx = slice(32 * (s % 8), 32 * (s % 8 + 1))
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    return start, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_dmgd_defaults_make_the_mlp_memory_material():
    """At the strategy's defaults the learned MLP part moves the trajectory by a large fraction of its
    displacement (measured 0.23 at 40 steps on digits); with raw gradient keys (key_norm none, the former
    default) 0.0019: EMA momentum under another name."""
    def materiality(**hp):
        start, deep = _dmgd_strategy_trajectory(hp)
        _, linear = _dmgd_strategy_trajectory({**hp, "hidden": 0})
        return float((deep - linear).norm() / (linear - start).norm())

    assert materiality() > 0.1
    assert materiality(key_norm="none") < 0.01
