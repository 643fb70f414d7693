"""Property tests for DeepL2GD / DeepL2GD-EMA / the conv channel-covariance variant (nl-math.md §1-3).

Each test pins a property that a plausible wrong implementation breaks: projection on the wrong side or
after the base step, sum instead of mean Gram, no guard, EMA without bias correction, a low-rank path
that silently forms the Gram, hooks that record during evaluation, state that does not round-trip.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from nlbench.strategies.deep_l2gd.conv import conv_channel_gram, conv_channel_projection_, conv_patch_gram
from nlbench.strategies.deep_l2gd.ema import DeepL2GDEMA
from nlbench.strategies.deep_l2gd.functional import (
    augmented_gram,
    ema_gram_update_,
    gram_projection_,
    guarded_alpha,
    lambda_max_power_iteration,
    lowrank_projection_,
)
from nlbench.strategies.deep_l2gd.optimizer import DeepL2GD
from nlbench.strategies.deep_l2gd.options import CONV_PRESETS
from nlbench.strategies.deep_l2gd.recording import find_head

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class MLP(nn.Module):
    def __init__(self, d_in=6, h=8, out=3, dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_in, h)
        self.fc2 = nn.Linear(h, h)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(h, out)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = self.drop(torch.relu(self.fc2(x)))
        return self.classifier(x)


def make_mlp(seed=0, dtype=DT, **kw):
    torch.manual_seed(seed)
    return MLP(**kw).to(dtype)


def batches(n_steps, n, d_in, out=3, seed=1, dtype=DT, scale=1.0):
    g = gen(seed)
    return [
        (scale * torch.randn(n, d_in, generator=g, dtype=dtype), torch.randint(0, out, (n,), generator=g))
        for _ in range(n_steps)
    ]


def train(model, opt, data, closure_loss=nn.functional.cross_entropy):
    for x, y in data:
        opt.zero_grad()
        closure_loss(model(x), y).backward()
        opt.step()


def single_layer(d_in, d_out, seed=0, bias=True):
    """A model whose only participating layer is `lin` (the head is a separate, excluded Linear)."""
    torch.manual_seed(seed)
    m = nn.Sequential()
    m.add_module("lin", nn.Linear(d_in, d_out, bias=bias))
    m.add_module("classifier", nn.Linear(d_out, 2))
    return m.to(DT)


def project_once(model, x, lowrank, **kw):
    """One step with lr = 0: only the projection moves the weights."""
    kw.setdefault("lr", 0.0)
    opt = DeepL2GD(model, lowrank=lowrank, **kw)
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    return opt


def rank_deficient_inputs(n, d_in, rank, seed=3, coeff_seed=None):
    g = gen(seed)
    basis = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=DT))[0]
    coeff = torch.randn(n, rank, generator=g if coeff_seed is None else gen(coeff_seed), dtype=DT)
    return coeff @ basis[:, :rank].T, basis[:, rank:]  # rows span the first `rank` directions


PATHS = [pytest.param(True, id="lowrank"), pytest.param(False, id="full")]


# ------------------------------------------------------------------------------------------------ P1.1


@pytest.mark.parametrize(
    "base,kw,ref",
    [
        ("sgd", {}, lambda p: torch.optim.SGD(p, lr=0.05)),
        ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
        ("adam", {"weight_decay": 1e-3}, lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=1e-3)),
        ("adamw", {"weight_decay": 1e-2, "betas": (0.8, 0.99)},
         lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=1e-2, betas=(0.8, 0.99))),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_p1_1_alpha_zero_is_bitwise_the_base_optimizer(base, kw, ref, dtype):
    data = batches(5, 4, 6, dtype=dtype) + batches(2, 16, 6, seed=9, dtype=dtype)  # both paths
    torch.manual_seed(123)
    m_ref = make_mlp(dtype=dtype, dropout=0.3)
    o_ref = ref(m_ref.parameters())
    torch.manual_seed(7)  # dropout masks come from the global RNG: the hooks must not consume it
    traj_ref = []
    for x, y in data:
        o_ref.zero_grad()
        nn.functional.cross_entropy(m_ref(x), y).backward()
        o_ref.step()
        traj_ref.append([p.detach().clone() for p in m_ref.parameters()])

    m = make_mlp(dtype=dtype, dropout=0.3)
    opt = DeepL2GD(m, lr=0.05, alpha=0.0, base=base, **kw)
    torch.manual_seed(7)
    for (x, y), ref_params in zip(data, traj_ref):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        for p, q in zip(m.parameters(), ref_params):
            assert torch.equal(p, q)
    # the hooks really ran (and recorded) on both paths
    assert opt.counters["lowrank"] > 0 and opt.counters["full"] > 0


def test_p1_1_hooks_do_not_change_the_forward_with_alpha_positive():
    x, _ = batches(1, 5, 6)[0]
    m_ref, m = make_mlp(dropout=0.5), make_mlp(dropout=0.5)
    opt = DeepL2GD(m, alpha=1e-2)
    torch.manual_seed(3)
    out_ref, rng_ref = m_ref(x), torch.rand(3)
    torch.manual_seed(3)
    out, rng = m(x), torch.rand(3)
    assert torch.equal(out, out_ref) and torch.equal(rng, rng_ref)
    assert all(opt.has_statistics(m_) for m_ in opt.layers)


# ------------------------------------------------------------------------------------------------ P1.2


@pytest.mark.parametrize("lowrank", PATHS)
def test_p1_2_null_space_invariance_and_eigen_scaling(lowrank):
    d_in, n, alpha = 8, 5, 0.05
    x, null = rank_deficient_inputs(n, d_in, rank=3)
    model = single_layer(d_in, 4)
    w0 = model.lin.weight.detach().clone()
    opt = project_once(model, x, lowrank, alpha=alpha, rho=1.0)
    assert opt.counters["lowrank" if lowrank else "full"] == 1
    w1 = model.lin.weight.detach()
    assert not torch.allclose(w1, w0)
    torch.testing.assert_close(w1 @ null, w0 @ null, rtol=0, atol=1e-14)
    g = x.T @ x / n
    lam, vecs = torch.linalg.eigh(g)
    for i in range(d_in):
        e = vecs[:, i]
        torch.testing.assert_close(w1 @ e, (1 - alpha * lam[i]) * (w0 @ e), rtol=0, atol=1e-13)
    assert torch.linalg.matrix_norm(w1) <= torch.linalg.matrix_norm(w0)


# ------------------------------------------------------------------------------------------------ P1.3


@pytest.mark.parametrize("n", [3, 12], ids=["N<d_in", "N>d_in"])
def test_p1_3_one_step_equals_sgd_on_output_energy_regulariser(n):
    d_in, eta, alpha = 5, 0.1, 0.03
    x, y = batches(1, n, d_in)[0]
    model = single_layer(d_in, 7)
    ref = copy.deepcopy(model)
    opt = DeepL2GD(model, lr=eta, alpha=alpha, rho=1.0)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y % 2).backward()
    opt.step()
    assert opt.last_projection["lin"]["alpha_eff"] == alpha  # guard inactive: the identity is exact

    sgd = torch.optim.SGD(ref.parameters(), lr=eta)
    sgd.zero_grad()
    w = ref.lin.weight
    reg = (alpha / (2 * eta)) * ((x @ w.T) ** 2).sum(1).mean()  # bias excluded
    (nn.functional.cross_entropy(ref(x), y % 2) + reg).backward()
    sgd.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------------------------ P1.4


@pytest.mark.parametrize("lowrank", PATHS)
def test_p1_4_projection_happens_before_the_base_step(lowrank):
    d_in, n, eta, alpha = 6, 4, 0.5, 0.2
    g_ = gen(5)
    x = torch.randn(n, d_in, generator=g_, dtype=DT)
    target = 5.0 * torch.randn(n, 3, generator=g_, dtype=DT)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d_in, 3, bias=False)).to(DT)
    lin = model[0]
    opt = DeepL2GD(model, lr=eta, alpha=alpha, rho=1.0, layers=[lin], lowrank=lowrank)
    w0 = lin.weight.detach().clone()
    opt.zero_grad()
    ((model(x) - target) ** 2).sum(1).mean().backward()
    grad = lin.weight.grad.clone()
    opt.step()
    gram = x.T @ x / n
    eye = torch.eye(d_in, dtype=DT)
    assert alpha * torch.linalg.eigvalsh(gram)[-1] <= 1.0
    project_then_step = w0 @ (eye - alpha * gram) - eta * grad
    step_then_project = (w0 - eta * grad) @ (eye - alpha * gram)
    torch.testing.assert_close(lin.weight.detach(), project_then_step, rtol=0, atol=1e-12)
    assert (project_then_step - step_then_project).abs().max() > 0.1
    assert torch.equal(lin.weight.grad, grad)  # the grad is untouched by the projection


# ------------------------------------------------------------------------------------------------ low-rank path


def test_lowrank_projection_and_lambda_equal_the_full_gram_ones():
    g_ = gen(11)
    n, d_in, d_out, a = 7, 20, 5, 0.03
    x = torch.randn(n, d_in, generator=g_, dtype=DT)
    w = torch.randn(d_out, d_in, generator=g_, dtype=DT)
    gram = x.T @ x / n
    full = gram_projection_(w.clone(), gram, a)
    torch.testing.assert_close(full, w @ (torch.eye(d_in, dtype=DT) - a * gram), rtol=0, atol=1e-14)
    torch.testing.assert_close(lowrank_projection_(w.clone(), x, a), full, rtol=0, atol=1e-14)
    torch.testing.assert_close(lowrank_projection_(w.clone(), x, a, y=x @ w.T), full, rtol=0, atol=1e-14)
    exact = torch.linalg.eigvalsh(gram)[-1].item()
    lam_x, _ = lambda_max_power_iteration(x=x, count=n)  # N x N eigen-problem
    lam_g, _ = lambda_max_power_iteration(gram)
    assert lam_x == pytest.approx(exact, rel=1e-12) and lam_g == pytest.approx(exact, rel=1e-12)
    # power iteration (forced), both forms; warm start keeps the vector
    lam_px, v = lambda_max_power_iteration(x=x, count=n, iters=300, exact_max_dim=0)
    lam_pg, _ = lambda_max_power_iteration(gram, iters=300, exact_max_dim=0)
    assert lam_px == pytest.approx(exact, rel=1e-9) and lam_pg == pytest.approx(exact, rel=1e-9)
    lam_warm, _ = lambda_max_power_iteration(x=x, count=n, v=v, iters=1, exact_max_dim=0)
    assert lam_warm == pytest.approx(exact, rel=1e-9)
    assert lam_warm <= exact * (1 + 1e-12)  # Rayleigh quotient: never above lambda_max


def test_power_iteration_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    lambda_max_power_iteration(torch.eye(4, dtype=DT), exact_max_dim=0)
    assert torch.equal(torch.rand(2), expected)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_optimizer_lowrank_and_full_paths_agree(base):
    data = batches(4, 4, 10, seed=4)
    runs = []
    for lowrank in (True, False):
        m = make_mlp(d_in=10, h=12)
        opt = DeepL2GD(m, lr=0.05, alpha=0.05, base=base, trace_shortcut=False, lowrank=lowrank)
        train(m, opt, data)
        assert opt.counters["full" if not lowrank else "lowrank"] == 8
        runs.append((m, {k: v["lambda_max"] for k, v in opt.last_projection.items()}))
    for p, q in zip(runs[0][0].parameters(), runs[1][0].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)
    for k in runs[0][1]:
        assert runs[0][1][k] == pytest.approx(runs[1][1][k], rel=1e-12)


def test_lowrank_path_never_builds_the_d_in_square_gram():
    torch.manual_seed(0)
    d_in, n = 4096, 16
    model = nn.Sequential(nn.Linear(d_in, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = DeepL2GD(model, lr=0.0, alpha=1.0, rho=0.5, trace_shortcut=False)  # lambda_max must be computed
    x = torch.randn(n, d_in)
    opt.zero_grad()
    model(x).sum().backward()
    st = opt.state[model[0].weight]
    tensors = [t for v in st.values() for t in (v if isinstance(v, list) else [v]) if isinstance(t, torch.Tensor)]
    assert max(t.numel() for t in tensors) <= n * d_in
    w0 = model[0].weight.detach().clone().double()
    opt.step()
    assert opt.counters == {**opt.counters, "lowrank": 1, "full": 0, "lambda_exact": 1}
    info = opt.last_projection["0"]
    xd = x.double()
    lam = torch.linalg.eigvalsh(xd @ xd.T / n)[-1].item()
    assert info["lambda_max"] == pytest.approx(lam, rel=1e-4)
    assert info["alpha_eff"] == pytest.approx(0.5 / lam, rel=1e-4)
    expected = w0 - info["alpha_eff"] * (w0 @ xd.T) @ xd / n
    torch.testing.assert_close(model[0].weight.double(), expected, rtol=0, atol=1e-5)
    assert "proj_x" not in st and "proj_gram" not in st  # statistics consumed


@pytest.mark.parametrize("chunks", [(3, 3), (6, 6), (4, 9)], ids=["stay-lowrank", "cross-d_in", "cross-late"])
def test_accumulated_forwards_use_the_mean_gram_of_the_window(chunks):
    d_in = 10
    x, _ = batches(1, sum(chunks), d_in, seed=8)[0]
    parts = torch.split(x, list(chunks))
    m1, m2 = single_layer(d_in, 4), single_layer(d_in, 4)
    o1 = DeepL2GD(m1, lr=0.0, alpha=0.1, rho=1.0)
    o1.zero_grad()
    for p in parts:
        m1(p).sum().backward()
    o1.step()
    expect_path = "lowrank" if sum(chunks) < d_in else "full"
    assert o1.last_projection["lin"]["path"] == expect_path
    project_once(m2, x, False, alpha=0.1, rho=1.0)
    torch.testing.assert_close(m1.lin.weight, m2.lin.weight, rtol=0, atol=1e-14)


def test_stale_cached_outputs_are_recomputed_when_w_changed_in_place():
    d_in, n = 10, 4
    x, _ = batches(1, n, d_in)[0]
    m1, m2 = single_layer(d_in, 4), single_layer(d_in, 4)
    o1 = DeepL2GD(m1, lr=0.0, alpha=0.1, rho=1.0)
    o1.zero_grad()
    m1(x).sum().backward()
    with torch.no_grad():
        m1.lin.weight.mul_(2.0)
        m2.lin.weight.mul_(2.0)
    o1.step()
    gram = x.T @ x / n
    expected = m2.lin.weight @ (torch.eye(d_in, dtype=DT) - 0.1 * gram)
    torch.testing.assert_close(m1.lin.weight, expected, rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------------------------ rho guard


def test_guarded_alpha():
    assert guarded_alpha(1e-3, 0.5, 10.0) == 1e-3
    assert guarded_alpha(1.0, 0.5, 10.0) == 0.05
    assert guarded_alpha(1.0, 0.5, 0.0) == 1.0
    assert guarded_alpha(0.0, 0.5, 100.0) == 0.0


@pytest.mark.parametrize("lowrank", PATHS)
@pytest.mark.parametrize("shortcut", [True, False])
def test_rho_guard_keeps_every_shrink_factor_in_range(lowrank, shortcut):
    d_in, n, rho, alpha = 6, 4, 0.5, 1.0
    x = 3.0 * batches(1, n, d_in, seed=2)[0][0]
    model = single_layer(d_in, 5)
    w0 = model.lin.weight.detach().clone()
    opt = project_once(model, x, lowrank, alpha=alpha, rho=rho, trace_shortcut=shortcut)
    gram = x.T @ x / n
    lam, vecs = torch.linalg.eigh(gram)
    info = opt.last_projection["lin"]
    assert info["lambda_max"] == pytest.approx(lam[-1].item(), rel=1e-12)
    assert info["alpha_eff"] == pytest.approx(min(alpha, rho / lam[-1].item()), rel=1e-12)
    w1 = model.lin.weight.detach()
    for i in range(d_in):
        e = vecs[:, i]
        factor = ((w1 @ e) @ (w0 @ e) / (w0 @ e).square().sum()).item()
        assert 1 - rho - 1e-12 <= factor <= 1 + 1e-12
    top = vecs[:, -1]
    torch.testing.assert_close(w1 @ top, (1 - rho) * (w0 @ top), rtol=0, atol=1e-12)


def test_trace_shortcut_skips_lambda_only_when_the_guard_cannot_bind():
    x = batches(1, 4, 6, seed=2)[0][0]
    tr = (x.T @ x / 4).trace().item()
    model = single_layer(6, 5)
    opt = project_once(model, x, True, alpha=0.4 / tr, rho=0.5)
    assert opt.counters["lambda_skipped"] == 1 and opt.last_projection["lin"]["alpha_eff"] == 0.4 / tr
    model = single_layer(6, 5)
    opt = project_once(model, x, True, alpha=0.6 / tr, rho=0.5)
    assert opt.counters["lambda_exact"] == 1


# ----------------------------------------------------------------------------------- project_bias, gram_norm


@pytest.mark.parametrize("lowrank", PATHS)
def test_project_bias_matches_the_augmented_matrix_formula(lowrank):
    d_in, n, alpha = 6, 4 if lowrank else 9, 0.1
    x = batches(1, n, d_in, seed=6)[0][0] + 0.5  # nonzero mean: the cross terms matter
    model = single_layer(d_in, 5)
    w0, b0 = model.lin.weight.detach().clone(), model.lin.bias.detach().clone()
    project_once(model, x, lowrank, alpha=alpha, rho=1.0, project_bias=True)
    xt = torch.cat([x, torch.ones(n, 1, dtype=DT)], 1)
    gt = xt.T @ xt / n
    torch.testing.assert_close(gt, augmented_gram(x.T @ x / n, x.mean(0)), rtol=0, atol=1e-14)
    wt = torch.cat([w0, b0[:, None]], 1) @ (torch.eye(d_in + 1, dtype=DT) - alpha * gt)
    torch.testing.assert_close(model.lin.weight.detach(), wt[:, :-1], rtol=0, atol=1e-13)
    torch.testing.assert_close(model.lin.bias.detach(), wt[:, -1], rtol=0, atol=1e-13)
    assert not torch.allclose(model.lin.bias, b0)


@pytest.mark.parametrize("lowrank", PATHS)
def test_bias_untouched_by_default(lowrank):
    x = batches(1, 4, 6)[0][0]
    model = single_layer(6, 5)
    b0 = model.lin.bias.detach().clone()
    project_once(model, x, lowrank, alpha=0.1)
    assert torch.equal(model.lin.bias, b0)


@pytest.mark.parametrize("lowrank", PATHS)
def test_gram_norm_trace(lowrank):
    d_in, n, alpha = 6, 4, 0.02
    x = batches(1, n, d_in, seed=7)[0][0]
    results = []
    for scale in (1.0, 10.0):
        model = single_layer(d_in, 5)
        w0 = model.lin.weight.detach().clone()
        project_once(model, scale * x, lowrank, alpha=alpha, rho=1.0, gram_norm="trace")
        results.append(model.lin.weight.detach().clone())
    gram = x.T @ x / n
    g_norm = gram * d_in / gram.trace()
    expected = w0 @ (torch.eye(d_in, dtype=DT) - alpha * g_norm)
    torch.testing.assert_close(results[0], expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(results[1], expected, rtol=0, atol=1e-13)  # input-scale invariant


# ------------------------------------------------------------------------------------------------ EMA (§2)


def test_ema_update_matches_the_literal_bias_corrected_formula():
    g_ = gen(12)
    grams = [(lambda a: a.T @ a / 5)(torch.randn(5, 4, generator=g_, dtype=DT)) for _ in range(6)]
    for beta in (0.0, 0.5, 0.99):
        for bc in (True, False):
            buf, gbar = torch.zeros(4, 4, dtype=DT), torch.zeros(4, 4, dtype=DT)
            for k, g in enumerate(grams, start=1):
                ema_gram_update_(buf, g, beta, k, bias_correction=bc)
                gbar = beta * gbar + (1 - beta) * g
                ref = gbar / (1 - beta**k) if bc else gbar
                torch.testing.assert_close(buf, ref, rtol=1e-13, atol=1e-15)
    buf = torch.zeros(4, 4, dtype=DT)
    assert torch.equal(ema_gram_update_(buf, grams[0], 0.99, 1), grams[0])  # bias-corrected step 1 is exact


@pytest.mark.parametrize("n", [4, 16], ids=["lowrank", "full"])
def test_p2_1_ema_beta_zero_is_bitwise_deepl2gd(n):
    data = batches(4, n, 6, seed=13)
    m1, m2 = make_mlp(), make_mlp()
    o1 = DeepL2GD(m1, lr=0.05, alpha=0.05, base="adam")
    o2 = DeepL2GDEMA(m2, lr=0.05, alpha=0.05, base="adam", beta=0.0)
    for batch in data:
        train(m1, o1, [batch])
        train(m2, o2, [batch])
        for p, q in zip(m1.parameters(), m2.parameters()):
            assert torch.equal(p, q)


@pytest.mark.parametrize("beta", [0.5, 0.9, 0.99])
def test_p2_1_first_ema_step_equals_deepl2gd_for_any_beta(beta):
    data = batches(2, 16, 6, seed=14)
    m1, m2 = make_mlp(), make_mlp()
    o1 = DeepL2GD(m1, lr=0.05, alpha=0.05, base="sgd", lowrank=False)
    o2 = DeepL2GDEMA(m2, lr=0.05, alpha=0.05, base="sgd", beta=beta)
    train(m1, o1, data[:1])
    train(m2, o2, data[:1])
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    train(m1, o1, data[1:])
    train(m2, o2, data[1:])  # second step: the memory now differs from the batch Gram
    assert not torch.allclose(m1.fc1.weight, m2.fc1.weight, rtol=0, atol=1e-12)


def test_p2_1_ema_without_bias_correction_is_weaker_on_step_one():
    x = batches(1, 16, 6)[0][0]
    m1, m2 = single_layer(6, 5), single_layer(6, 5)
    w0 = m1.lin.weight.detach().clone()
    project_once(m1, x, False, alpha=0.1, rho=1.0)
    o2 = DeepL2GDEMA(m2, lr=0.0, alpha=0.1, rho=1.0, beta=0.9, bias_correction=False)
    o2.zero_grad()
    m2(x).sum().backward()
    o2.step()
    torch.testing.assert_close(m2.lin.weight - w0, 0.1 * (m1.lin.weight - w0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n", [16, 4], ids=["full", "lowrank-deepl2gd"])
def test_p2_2_repeated_batch_gives_the_deepl2gd_trajectory(n):
    data = batches(1, n, 6, seed=15) * 5
    m1, m2 = make_mlp(), make_mlp()
    # only fc1 sees the same Gram every step (deeper inputs change with the weights)
    o1 = DeepL2GD(m1, lr=0.05, alpha=0.05, base="adam", layers=["fc1"])
    o2 = DeepL2GDEMA(m2, lr=0.05, alpha=0.05, base="adam", beta=0.9, layers=["fc1"])
    train(m1, o1, data)
    train(m2, o2, data)
    for p, q in zip(m1.parameters(), m2.parameters()):
        if n >= 6:
            assert torch.equal(p, q)  # same Gram, same code path: bitwise
        else:
            torch.testing.assert_close(p, q, rtol=0, atol=1e-13)
    assert o2.state[m2.fc1.weight]["proj_k"] == 5


def test_p2_3_ema_gram_is_symmetric_psd_and_keeps_the_null_space():
    d_in, alpha = 8, 0.05
    model = single_layer(d_in, 4)
    opt = DeepL2GDEMA(model, lr=0.0, alpha=alpha, rho=1.0, beta=0.9)
    w0 = model.lin.weight.detach().clone()
    grams = []
    for seed in range(5):
        x, null = rank_deficient_inputs(6, d_in, rank=3, seed=3, coeff_seed=100 + seed)  # same subspace
        grams.append(x.T @ x / 6)
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    ghat = opt.state[model.lin.weight]["proj_ema"]
    torch.testing.assert_close(ghat, ghat.T, rtol=0, atol=1e-14)
    assert torch.linalg.eigvalsh(ghat)[0] >= -1e-12
    gbar = torch.zeros_like(ghat)
    for g in grams:
        gbar = 0.9 * gbar + 0.1 * g
    torch.testing.assert_close(ghat, gbar / (1 - 0.9**5), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.lin.weight @ null, w0 @ null, rtol=0, atol=1e-13)
    assert not torch.allclose(model.lin.weight, w0)


def test_ema_window_without_data_leaves_memory_and_weight_alone():
    model = single_layer(6, 4)
    opt = DeepL2GDEMA(model, lr=0.0, alpha=0.05)
    x = batches(1, 8, 6)[0][0]
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    w1 = model.lin.weight.detach().clone()
    ema = opt.state[model.lin.weight]["proj_ema"].clone()
    opt.step()  # no forward since the last update
    assert torch.equal(model.lin.weight, w1) and torch.equal(opt.state[model.lin.weight]["proj_ema"], ema)
    assert opt.state[model.lin.weight]["proj_k"] == 1


# ------------------------------------------------------------------------------------------------ conv (§3)


def conv_model(cin=4, cout=5, k=3, padding=1, seed=0, **kw):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=padding, **kw), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cout, 2)
    ).to(DT)


def conv_project(model, x, **kw):
    kw.setdefault("lr", 0.0)
    opt = DeepL2GD(model, conv=True, **kw)
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    return opt


MODES = [("mean_tap", "shift"), ("mean_tap", "scale"), ("per_tap", "shift"), ("exact", "shift")]


@pytest.mark.parametrize("mode,apply", MODES)
def test_p3_1_one_by_one_conv_equals_deepl2gd_on_pixels(mode, apply):
    alpha = 0.05
    x = torch.randn(2, 4, 3, 3, generator=gen(20), dtype=DT)
    model = conv_model(k=1, padding=0)
    k0 = model[0].weight.detach().clone()
    conv_project(model, x, alpha=alpha, rho=1.0, conv_mode=mode, conv_apply=apply)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 4)
    lin = single_layer(4, 5)
    with torch.no_grad():
        lin.lin.weight.copy_(k0[:, :, 0, 0])
    project_once(lin, pixels, False, alpha=alpha, rho=1.0)
    torch.testing.assert_close(model[0].weight[:, :, 0, 0], lin.lin.weight, rtol=0, atol=1e-13)


@pytest.mark.parametrize("apply", ["shift", "scale"])
def test_p3_2_mean_tap_moves_the_tap_mean_exactly(apply):
    alpha = 0.05
    x = torch.randn(2, 4, 6, 6, generator=gen(21), dtype=DT)
    model = conv_model()
    k0 = model[0].weight.detach().clone()
    conv_project(model, x, alpha=alpha, rho=1.0, conv_mode="mean_tap", conv_apply=apply)
    gc = conv_channel_gram(x)
    kbar = k0.mean((2, 3))
    k1 = model[0].weight.detach()
    torch.testing.assert_close(k1.mean((2, 3)), kbar @ (torch.eye(4, dtype=DT) - alpha * gc), rtol=0, atol=1e-14)
    if apply == "shift":  # the zero-mean spatial pattern is untouched
        torch.testing.assert_close(k1 - k1.mean((2, 3), keepdim=True), k0 - k0.mean((2, 3), keepdim=True),
                                   rtol=0, atol=1e-14)
    else:  # each slice is rescaled, so its shape is kept up to a factor
        ratio = k1 / k0
        torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode,apply", MODES)
def test_p3_3_dead_input_channel_leaves_its_kernel_column(mode, apply):
    x = torch.randn(2, 4, 5, 5, generator=gen(22), dtype=DT)
    x[:, 2] = 0.0
    model = conv_model()
    k0 = model[0].weight.detach().clone()
    conv_project(model, x, alpha=0.05, rho=1.0, conv_mode=mode, conv_apply=apply)
    k1 = model[0].weight.detach()
    assert torch.equal(k1[:, 2], k0[:, 2])
    assert not torch.allclose(k1[:, [0, 1, 3]], k0[:, [0, 1, 3]])


def test_p3_4_exact_on_constant_input_equals_mean_tap_with_k_squared():
    alpha, k = 0.002, 3
    x = torch.randn(2, 4, 1, 1, generator=gen(23), dtype=DT).expand(2, 4, 6, 6).contiguous()
    m1, m2 = conv_model(k=k, padding=0), conv_model(k=k, padding=0)
    conv_project(m1, x, alpha=alpha, rho=1.0, conv_mode="exact")
    conv_project(m2, x, alpha=alpha * k * k, rho=1.0, conv_mode="mean_tap", conv_apply="shift")
    torch.testing.assert_close(m1[0].weight, m2[0].weight, rtol=0, atol=1e-14)


def test_conv_exact_matches_the_patch_gram_and_respects_padding():
    x = torch.randn(2, 3, 5, 5, generator=gen(24), dtype=DT)
    conv = nn.Conv2d(3, 2, 3, padding=1, stride=2).to(DT)
    p = nn.functional.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 27)
    torch.testing.assert_close(conv_patch_gram(x, conv), p.T @ p / p.shape[0], rtol=0, atol=1e-14)
    # the patch rows really are what the conv multiplies with its flattened kernel
    out = conv(x) - conv.bias[None, :, None, None]
    torch.testing.assert_close(out.permute(0, 2, 3, 1).reshape(-1, 2), p @ conv.weight.reshape(2, -1).T)


def test_conv_centered_gram_and_preserve_magnitude():
    x = torch.randn(3, 4, 5, 5, generator=gen(25), dtype=DT) + 1.0
    xc = x.permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(conv_channel_gram(x, centered=True), torch.cov(xc.T, correction=0),
                               rtol=0, atol=1e-13)
    k = torch.randn(5, 4, 3, 3, generator=gen(26), dtype=DT)
    k1 = conv_channel_projection_(k.clone(), conv_channel_gram(x), 0.05, preserve_magnitude=True)
    torch.testing.assert_close(k1.abs().mean((1, 2, 3)), k.abs().mean((1, 2, 3)), rtol=1e-13, atol=0)
    assert not torch.allclose(k1, k)
    model = conv_model()
    opt = DeepL2GD(model, conv=True, conv_mode="s000_guess")
    assert {k: opt.defaults[k] for k in CONV_PRESETS["s000_guess"]} == CONV_PRESETS["s000_guess"]


def test_conv_on_resnet18_projects_every_plain_conv_and_skips_grouped_ones():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10)
    opt = DeepL2GD(model, lr=0.01, alpha=1e-3, base="sgd", momentum=0.9, conv=True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and opt.layers == convs  # fc is the head; BN params only get the base step
    bn0 = model.bn1.weight.detach().clone()
    x = torch.randn(2, 3, 32, 32, generator=gen(27))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    opt.step()
    assert opt.counters["full"] == 20 and set(opt.last_projection) == {opt.layer_names[c] for c in convs}
    assert not torch.equal(model.bn1.weight, bn0)

    dw = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 6, 1), nn.Flatten(), nn.Linear(6, 2))
    opt = DeepL2GD(dw, conv=True)
    assert opt.layers == [dw[1]]
    with pytest.raises(ValueError, match="grouped"):
        DeepL2GD(dw, conv=True, layers=[dw[0]])


# ------------------------------------------------------------------------------------------------ hooks


def test_hooks_record_nothing_in_eval_or_no_grad_and_close_removes_them():
    x = batches(1, 4, 6)[0][0]
    model = make_mlp()
    opt = DeepL2GD(model, alpha=0.1)
    model.eval()
    model(x)
    model.train()
    with torch.no_grad():
        model(x)
    with torch.inference_mode():
        model(x)
    assert not any(opt.has_statistics(m) for m in opt.layers)
    w0 = model.fc1.weight.detach().clone()
    opt.step()  # nothing recorded, no grads: nothing moves
    assert torch.equal(model.fc1.weight, w0)
    model(x)
    assert all(opt.has_statistics(m) for m in opt.layers)
    n_hooks = len(model.fc1._forward_hooks)
    opt.close()
    assert len(model.fc1._forward_hooks) == n_hooks - 1
    opt.project_layers()
    model(x)
    assert not any(opt.has_statistics(m) for m in opt.layers)
    opt.close()  # idempotent


def test_head_selection_and_layers_override():
    model = make_mlp()
    assert find_head(model) == [model.classifier]
    assert DeepL2GD(model).layers == [model.fc1, model.fc2]
    assert DeepL2GD(model, include_head=True).layers == [model.fc1, model.fc2, model.classifier]
    assert DeepL2GD(model, layers=["fc2"]).layers == [model.fc2]
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert find_head(seq) == [seq[2]] and DeepL2GD(seq).layers == [seq[0]]
    # every parameter is in the optimizer, Linear or not
    assert sum(len(g["params"]) for g in DeepL2GD(model).param_groups) == len(list(model.parameters()))


def test_clock_seam_should_project_and_partial_base_step():
    d_in = 6
    data = batches(2, 4, d_in, seed=30)

    class EveryOther(DeepL2GD):
        def should_project(self, module):
            return self.has_statistics(module) and self.clock % 2 == 0

    model, ref = single_layer(d_in, 4), single_layer(d_in, 4)
    opt = EveryOther(model, lr=0.0, alpha=0.1, rho=1.0)
    for opt.clock, (x, _) in enumerate(data, start=1):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
        if opt.clock == 1:
            assert opt.has_statistics(model.lin)
    x_all = torch.cat([x for x, _ in data])
    project_once(ref, x_all, False, alpha=0.1, rho=1.0)  # one projection with the window's mean Gram
    torch.testing.assert_close(model.lin.weight, ref.lin.weight, rtol=0, atol=1e-14)

    m = make_mlp()
    o = DeepL2GD(m, lr=0.1, base="adam")
    o.zero_grad()
    nn.functional.cross_entropy(m(data[0][0]), data[0][1]).backward()
    before = [p.detach().clone() for p in m.parameters()]
    o.base_step([m.fc2.weight])
    moved = [not torch.equal(p, q) for p, q in zip(m.parameters(), before)]
    assert moved == [n == "fc2.weight" for n, _ in m.named_parameters()]
    assert set(o.state[m.fc2.weight]) >= {"exp_avg", "step"} and "exp_avg" not in o.state[m.fc1.weight]


# ------------------------------------------------------------------------------------------------ state_dict


@pytest.mark.parametrize("cls,kw", [
    (DeepL2GD, {"base": "adam"}),
    (DeepL2GD, {"base": "sgd", "momentum": 0.9, "exact_max_dim": 0, "trace_shortcut": False, "alpha": 0.5}),
    (DeepL2GDEMA, {"base": "adamw", "weight_decay": 1e-2, "beta": 0.9, "exact_max_dim": 0,
                   "trace_shortcut": False, "alpha": 0.5}),
])
def test_state_dict_round_trip_continues_bitwise(cls, kw):
    data = batches(3, 4, 6, seed=40) + batches(3, 16, 6, seed=41)
    kw = {"lr": 0.05, "alpha": 0.05, **kw}
    m1 = make_mlp(dropout=0.2)
    o1 = cls(m1, **kw)
    torch.manual_seed(0)
    train(m1, o1, data[:2] + data[3:5])
    x, y = data[2]
    o1.zero_grad()
    nn.functional.cross_entropy(m1(x), y).backward()  # save mid-window: cached inputs must travel too
    m2 = copy.deepcopy(m1)  # the copy carries o1's hook object, which must ignore foreign modules
    for p, q in zip(m1.parameters(), m2.parameters()):
        q.grad = p.grad.clone()
    o2 = cls(m2, **kw)
    buf = io.BytesIO()
    torch.save(o1.state_dict(), buf)
    buf.seek(0)
    o2.load_state_dict(torch.load(buf, weights_only=False))
    st = o2.state[m2.fc1.weight]
    assert "proj_count" in st and ("exp_avg" in st or "momentum_buffer" in st)
    if kw.get("exact_max_dim") == 0:
        assert "proj_v" in st
    if cls is DeepL2GDEMA:
        assert "proj_ema" in st and st["proj_k"] >= 2
    rng = torch.get_rng_state()
    o1.step()
    torch.set_rng_state(rng)
    o2.step()
    for batch in [data[5], data[0], data[4]]:
        for m, o in ((m1, o1), (m2, o2)):
            torch.manual_seed(5)
            train(m, o, [batch])
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(m1.fc1.weight, make_mlp().fc1.weight)


# ------------------------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize("kw", [
    {"lr": -1e-3}, {"alpha": -1e-4}, {"alpha": float("nan")}, {"rho": 0.0}, {"rho": 1.5},
    {"base": "rmsprop"}, {"gram_norm": "frobenius"}, {"betas": (1.0, 0.9)}, {"eps": -1.0},
    {"weight_decay": -0.1}, {"momentum": -0.5}, {"base": "adam", "momentum": 0.9},
    {"nesterov": True}, {"conv_mode": "diag"}, {"conv_apply": "rotate"}, {"lowrank": "sometimes"},
    {"layers": ["nope"]}, {"power_iters": 0},
    {"conv_mode": "s000_guess", "conv_apply": "shift"},
])
def test_bad_arguments_raise_value_error(kw):
    with pytest.raises(ValueError):
        DeepL2GD(make_mlp(), **kw)


def test_bad_layers_and_model_type():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Conv2d(1, 1, 1), nn.Linear(4, 2))
    with pytest.raises(ValueError):
        DeepL2GD(model, layers=[model[1]])
    with pytest.raises(ValueError):
        DeepL2GD(model, layers=[model[2]])  # conv without conv=True
    with pytest.raises(ValueError):
        DeepL2GD(model, layers=[nn.Linear(3, 3)])  # not in the model
    with pytest.raises(ValueError):
        DeepL2GDEMA(model, beta=1.0)
    with pytest.raises(TypeError):
        DeepL2GD(list(model.parameters()))
    model[0].weight.requires_grad_(False)
    assert DeepL2GD(model).layers == []  # frozen layers are skipped by default...
    with pytest.raises(ValueError, match="frozen"):
        DeepL2GD(model, layers=[model[0]])  # ...and refused when named
    model[0].weight.requires_grad_(True)
    opt = DeepL2GD(model)
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "rho": 2.0})


def test_non_finite_inputs_skip_the_projection_instead_of_raising():
    model = single_layer(6, 4)
    x = batches(1, 8, 6)[0][0]
    x[0, 0] = float("nan")
    w0 = model.lin.weight.detach().clone()
    opt = DeepL2GD(model, alpha=1.0, lowrank=False)
    model(x)
    opt.project_layers()  # projection only: the base step would spread the NaN gradient anyway
    assert opt.counters["nonfinite"] == 1 and torch.equal(model.lin.weight, w0)


def test_parameter_subset_limits_the_optimizer_and_its_layers():
    """One DeepL2GD per clock level: only the level's parameters step, only its layers are projected."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    level = list(model[0].parameters())
    opt = DeepL2GD(model, lr=0.1, alpha=1e-2, base="sgd", params=level)
    assert opt.layers == [model[0]]
    frozen = [p.detach().clone() for p in model[2].parameters()]
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(frozen, model[2].parameters()))
    assert opt.last_projection and set(opt.last_projection) == {"0"}
    opt.close()


# --------------------------------------------------------------------------------------------------
# The fused DeepL2GD+SGD step (nl-math.md 1.3; fused.py): one product, same result to float rounding

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _fused_pair(seed, d_in, hidden, alpha, lr, gram_norm="none", rho=0.5):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.Tanh(),
                        nn.Linear(hidden, 3)).to(DT)
    twin = copy.deepcopy(net)
    kw = dict(lr=lr, alpha=alpha, base="sgd", gram_norm=gram_norm, rho=rho)
    return net, DeepL2GD(net, **kw), twin, DeepL2GD(twin, fused=True, **kw)


def _loss(net, x, y):
    return nn.functional.cross_entropy(net(x), y)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), d_in=st.integers(2, 24), hidden=st.integers(2, 20), batch=st.integers(1, 40),
       alpha=st.sampled_from([1e-4, 1e-2, 0.3, 2.0]), lr=st.sampled_from([0.0, 1e-3, 0.1]),
       gram_norm=st.sampled_from(["none", "trace"]),
       pattern=st.sampled_from(["one", "two-forwards", "accumulate", "lr-change", "forward-only", "retain"]))
def test_fused_sgd_step_equals_the_unfused_step(seed, d_in, hidden, batch, alpha, lr, gram_norm, pattern):
    """Property: for any shapes, strengths (guard binding or not), learning rates (0 included) and any
    pattern of forwards and backwards between steps, fused and unfused trajectories agree to float64
    rounding, and the fused one never forms a Gram nor caches the layer output for the step."""
    unfused_net, unfused, fused_net, fused = _fused_pair(seed, d_in, hidden, alpha, lr, gram_norm)
    g = gen(seed)
    for _ in range(4):
        x1, x2 = torch.randn(batch, d_in, generator=g, dtype=DT) * 2, torch.randn(batch, d_in, generator=g, dtype=DT)
        y1, y2 = torch.randint(3, (batch,), generator=g), torch.randint(3, (batch,), generator=g)
        for net, opt in ((unfused_net, unfused), (fused_net, fused)):
            opt.zero_grad()
            if pattern == "one":
                _loss(net, x1, y1).backward()
            elif pattern == "two-forwards":  # DER-style: two forward calls, one backward
                (_loss(net, x1, y1) + _loss(net, x2, y2)).backward()
            elif pattern == "accumulate":  # forward/backward twice before the step
                _loss(net, x1, y1).backward()
                _loss(net, x2, y2).backward()
            elif pattern == "lr-change":  # a scheduler moves lr between backward and step
                _loss(net, x1, y1).backward()
                opt.param_groups[0]["lr"] = lr * 0.5
            elif pattern == "retain":  # two backwards through one retained graph (the saved Z is reused once)
                loss = _loss(net, x1, y1)
                loss.backward(retain_graph=True)
                loss.backward()
            else:  # a second training forward that never reaches a loss
                _loss(net, x1, y1).backward()
                net(x2)
            opt.step()
    for a, b in zip(unfused_net.parameters(), fused_net.parameters()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (a - b).abs().max()
    assert fused.counters["full"] == fused.counters["lowrank"] == 0  # no Gram, no unfused projection
    assert fused.counters["fused"] + fused.counters["fused_corrected"] == 4 * 2  # two fused layers, four steps
    if pattern == "one" and lr > 0:
        assert fused.counters["fused_corrected"] == 0  # the plain loop never needs the extra product
    assert {k: v["alpha_eff"] for k, v in fused.last_projection.items()} == pytest.approx(
        {k: v["alpha_eff"] for k, v in unfused.last_projection.items()})


def test_fused_step_on_sequence_inputs_and_under_create_graph_equals_the_unfused_step():
    """A fused layer fed (B, T, d) inputs (a Transformer's Linear) and a backward with create_graph=True
    (backward recorded: no in-place reuse of Z) give the unfused trajectory; the fused layer has no
    forward hook (its forward records)."""
    unfused_net, unfused, fused_net, fused = _fused_pair(3, 6, 5, alpha=0.3, lr=0.1)
    assert not fused_net[0]._forward_hooks and unfused_net[0]._forward_hooks
    g = gen(3)
    for step in range(3):
        x = torch.randn(4, 7, 6, generator=g, dtype=DT)
        y = torch.randint(3, (4, 7), generator=g)
        for net, opt in ((unfused_net, unfused), (fused_net, fused)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x).transpose(1, 2), y)
            if step == 1:
                grads = torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
                for p, gp in zip(net.parameters(), grads):
                    p.grad = gp.detach()
            else:
                loss.backward()
            opt.step()
    for a, b in zip(unfused_net.parameters(), fused_net.parameters()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (a - b).abs().max()
    assert fused.counters["fused"] + fused.counters["fused_corrected"] == 3 * 2


def test_fused_layers_carry_the_regularised_gradient_copies_run_plain_and_close_restores():
    """The fused layer's .grad is the gradient of L + (c / (2 eta N)) sum ||W x||^2 (P1.3); a deep copy of
    the model (LwF/DER keep one) runs the plain forward; close() restores the class's forward;
    invalid settings are refused."""
    net, _, twin, fused = _fused_pair(0, 5, 4, alpha=0.01, lr=0.1)
    x, y = torch.randn(6, 5, dtype=DT), torch.randint(3, (6,))
    frozen = copy.deepcopy(twin)
    frozen(x)  # a copy records nothing
    assert all(frozen[0].weight is not w for w in fused.state)
    _loss(twin, x, y).backward()
    w = twin[0].weight
    plain_grad = torch.autograd.grad(_loss(frozen, x, y), frozen[0].weight)[0]
    z = x @ w.detach().T
    assert torch.allclose(w.grad, plain_grad + (0.01 / (0.1 * 6)) * z.T @ x)  # alpha tr(G) small: no guard
    fused.close()
    assert "forward" not in twin[0].__dict__
    with pytest.raises(ValueError, match="fused=True needs"):
        DeepL2GD(copy.deepcopy(net), base="adam", fused=True)
    with pytest.raises(ValueError, match="fused=True needs"):
        DeepL2GD(copy.deepcopy(net), base="sgd", momentum=0.9, fused=True)


def _clocked_pair(seed, d_in, hidden, periods, alpha, lr, gram_norm):
    """cms+deep-l2gd's optimizer, unfused (base="sgd") and fused: one DeepL2GD per clock level of a
    three-level chain (nl-math.md 4.2), the head fast."""
    from nlbench.strategies.cms.clocks import ClockedOptimizer
    from nlbench.strategies.cms.wiring import wire_clocks

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(),
                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3)).to(DT)
    twin = copy.deepcopy(net)
    by = {"0.*": 0, "2.*": 1, "4.*": 2}
    pair = []
    for model, fused in ((net, False), (twin, True)):
        def factory(m, params, fused=fused):
            return DeepL2GD(m, lr=lr, alpha=alpha, base="sgd", gram_norm=gram_norm, params=params, fused=fused)
        pair += [model, ClockedOptimizer(wire_clocks(model, periods, by=by), factory, model=model)]
    return pair


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), d_in=st.integers(2, 16), hidden=st.integers(2, 12), batch=st.integers(1, 12),
       periods=st.sampled_from([(1, 2, 3), (1, 3, 8), (2, 5, 5)]), alpha=st.sampled_from([1e-4, 1e-2, 0.3, 2.0]),
       lr=st.sampled_from([0.0, 1e-3, 0.1]), gram_norm=st.sampled_from(["none", "trace"]),
       accumulate=st.booleans())
def test_clocked_fused_sgd_equals_the_clocked_unfused_step(seed, d_in, hidden, batch, periods, alpha, lr, gram_norm,
                                                         accumulate):
    """Property (cms+deep-l2gd, base=sgd-fused): under a clock, a slow level's window spans many steps;
    the fused trajectory equals the unfused one to float64 rounding, however long the window (short:
    the chunks are kept; d_in rows or more: their Gram), with or without two backwards per step, and
    over partial windows at the end."""
    unfused_net, unfused, fused_net, fused = _clocked_pair(seed, d_in, hidden, periods, alpha, lr, gram_norm)
    g = gen(seed)
    for _ in range(2 * math.lcm(*periods) + 1):
        x1, x2 = torch.randn(batch, d_in, generator=g, dtype=DT) * 2, torch.randn(batch, d_in, generator=g, dtype=DT)
        y1, y2 = torch.randint(3, (batch,), generator=g), torch.randint(3, (batch,), generator=g)
        for net, opt in ((unfused_net, unfused), (fused_net, fused)):
            opt.zero_grad()
            _loss(net, x1, y1).backward()
            if accumulate:
                _loss(net, x2, y2).backward()
            opt.step()
    for a, b in zip(unfused_net.parameters(), fused_net.parameters()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (a - b).abs().max()
    assert all(b.counters["full"] == b.counters["lowrank"] == 0 for b in fused.bases)  # never the unfused path
    assert fused.level_updates == unfused.level_updates


def test_clocked_fused_slow_level_keeps_a_gram_not_its_window():
    """A fused slow layer whose window outgrows d_in rows keeps X^T X of its window, not every X (the
    guard over the growing window at every backward made cms+deep-l2gd with base=sgd-fused 2x its parts,
    bench/compose.py), and its trajectory still equals the unfused one."""
    unfused_net, unfused, fused_net, fused = _clocked_pair(0, 6, 5, (1, 16, 16), alpha=0.3, lr=0.1, gram_norm="none")
    g = gen(0)
    slow = fused_net[2].weight
    for step in range(1, 25):
        x, y = torch.randn(4, 6, generator=g, dtype=DT) * 2, torch.randint(3, (4,), generator=g)
        for net, opt in ((unfused_net, unfused), (fused_net, fused)):
            opt.zero_grad()
            _loss(net, x, y).backward()
            opt.step()
        state = fused.bases[1].state[slow]
        if step in (12, 24):  # 48 rows and 32 rows into windows of 64: folded into the Gram
            assert state["fused_gram"].shape == (5, 5) and len(state["fused_chunks"]) <= 1
    for a, b in zip(unfused_net.parameters(), fused_net.parameters()):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (a - b).abs().max()
    assert fused.level_updates == [24, 1, 1]


def test_sgd_fused_is_a_base_choice_of_the_registration(digits):
    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec
    from nlbench.errors import UserError

    spec = resolve_spec("split-digits", "deep-l2gd", device="cpu", epochs=1, hparams={"base": "sgd-fused"})
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    assert strategy.optimizer._fused and strategy.optimizer.param_groups[0]["base"] == "sgd"
    # the default (base=adam) is untouched: same resolved hyperparameters as before, no new key
    assert sorted(dict(resolve_spec("split-digits", "deep-l2gd", device="cpu").hparams)) == [
        "alpha", "base", "conv", "gram_norm", "lr", "project_bias", "rho", "weight_decay"]
    ema = resolve_spec("split-digits", "deep-l2gd-ema", device="cpu", epochs=1, hparams={"base": "sgd-fused"})
    with pytest.raises(UserError, match="sgd-fused"):
        build_strategy(ema, digits, torch.device("cpu"))
