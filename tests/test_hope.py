"""HOPE (nl-math.md section 9): the delta-rule inner loop, the self-modifying memory, HopeLM / HopeViT,
and the `hope` strategy in real Avalanche runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nlbench.data.bigram import build_bigram_benchmark
from nlbench.models.hope import (
    HopeConfig,
    HopeLM,
    HopeLMConfig,
    HopeViT,
    HopeViTConfig,
    SelfModifyingMemory,
    chunked_delta_update,
    delta_rule_write,
)
from nlbench.data.readers import DEFAULT_DATA_ROOT
from nlbench.core.registry import strategies
from nlbench.core.runner import build_strategy, run_one
from nlbench.core.spec import resolve_spec
from nlbench.strategies.cms.clocks import ClockedOptimizer
from nlbench.strategies.cms.wiring import wire_clocks
from nlbench.strategies.hope.backbone import hope_for_suite
from nlbench.data.streams import build_benchmark
from nlbench.data.suites import get_suite

pytestmark = pytest.mark.usefixtures("one_thread")

# The linear delta-rule memory with chunk-start reads and outer-learned gates (the former default): the
# properties below are stated for it; tests/test_hope_options.py checks every option against a reference.
LINEAR = {"memory": "linear", "read": "chunk", "gates": "linear"}


def _unit(*shape, generator):
    return nn.functional.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


# --------------------------------------------------------------------------------------------------
# The inner loop (pure functions)


def test_delta_write_recalls_the_association_and_spares_orthogonal_keys():
    """P9.2: alpha = eta = 1, ||k|| = 1: after one write M k = vhat exactly, M u unchanged for u _|_ k."""
    g = torch.Generator().manual_seed(0)
    M = torch.randn(8, 8, generator=g, dtype=torch.float64)
    k, vhat = _unit(8, generator=g), torch.randn(8, generator=g, dtype=torch.float64)
    u = torch.randn(8, generator=g, dtype=torch.float64)
    u = u - (u @ k) * k
    new = delta_rule_write(M, k, vhat, eta=1.0, alpha=1.0)
    assert torch.allclose(new @ k, vhat, atol=1e-12)
    assert torch.allclose(new @ u, M @ u, atol=1e-12)
    # the write factor (alpha I - eta k k^T) is a contraction for 0 < eta, alpha < 1 (nl-math.md 9.2)
    factor = 0.9 * torch.eye(8, dtype=torch.float64) - 0.5 * torch.outer(k, k)
    assert torch.linalg.eigvalsh(factor).abs().max() < 1


def test_chunk_of_one_is_the_residual_delta_rule_and_recalls():
    g = torch.Generator().manual_seed(1)
    B, S, H, d = 2, 3, 2, 4
    W = torch.randn(B, S, H, d, d, generator=g, dtype=torch.float64)
    k = _unit(B, 1, H, d, generator=g)
    vhat = torch.randn(B, S, 1, H, d, generator=g, dtype=torch.float64)
    ones = torch.ones(B, 1, H, dtype=torch.float64)
    new = chunked_delta_update(W, k, vhat, eta=ones, log_alpha=torch.zeros_like(ones))
    recalled = torch.einsum("bshij,bhj->bshi", new, k[:, 0]) + k[:, 0].unsqueeze(1)  # M(k) = k + W k
    assert torch.allclose(recalled, vhat[:, :, 0], atol=1e-12)
    # non-residual: the delta rule of delta_rule_write, for any gates
    eta, alpha = torch.rand(B, 1, H, generator=g, dtype=torch.float64), torch.rand(B, 1, H, generator=g, dtype=torch.float64)
    plain = chunked_delta_update(W, k, vhat, eta, alpha.log(), residual=False)
    expected = delta_rule_write(W, k[:, 0].unsqueeze(1), vhat[:, :, 0], eta[:, 0].unsqueeze(1), alpha[:, 0].unsqueeze(1))
    assert torch.allclose(plain, expected, atol=1e-12)


def test_chunked_update_is_sequential_gd_with_gradients_at_the_chunk_start():
    g = torch.Generator().manual_seed(2)
    B, S, n, H, d = 2, 3, 5, 2, 4
    W0 = torch.randn(B, S, H, d, d, generator=g, dtype=torch.float64)
    k = _unit(B, n, H, d, generator=g)
    vhat = torch.randn(B, S, n, H, d, generator=g, dtype=torch.float64)
    eta = 0.3 * torch.rand(B, n, H, generator=g, dtype=torch.float64)
    alpha = 0.8 + 0.2 * torch.rand(B, n, H, generator=g, dtype=torch.float64)
    W = W0.clone()
    for t in range(n):  # W <- alpha_t W - eta_t grad, grad of 1/2||k + W0 k - vhat||^2 at the chunk start W0
        err = torch.einsum("bshij,bhj->bshi", W0, k[:, t]) + k[:, t].unsqueeze(1) - vhat[:, :, t]
        grad = torch.einsum("bshi,bhj->bshij", err, k[:, t])
        W = alpha[:, t][:, None, :, None, None] * W - eta[:, t][:, None, :, None, None] * grad
    assert torch.allclose(chunked_delta_update(W0, k, vhat, eta, alpha.log()), W, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The memory module


def _identity_memory(chunk=1):
    """A memory whose conv passes z through, q = k = normalize(z) per head, eta = alpha = 1 exactly."""
    memory = SelfModifyingMemory(HopeConfig(d_model=8, n_heads=2, chunk=chunk, eta_max=1.0, alpha_bias=100.0, **LINEAR))
    with torch.no_grad():
        memory.conv.weight.zero_()
        memory.conv.weight[:, 0, -1] = 1.0  # the current token only
        memory.conv.bias.zero_()
        memory.q.weight.copy_(torch.eye(8))
        memory.eta.bias.fill_(100.0)  # sigmoid(100) == 1 in float32
        memory.init_state[0].zero_()  # W_mem,0 = 0
        memory.init_state[1].zero_()  # k = normalize(z)
    return memory


def test_memory_recalls_an_association_after_one_write():
    """HOPE's memory, one delta-rule step with a unit key: reading with that key returns the written value."""
    memory = _identity_memory(chunk=1)
    g = torch.Generator().manual_seed(3)
    token = torch.randn(1, 1, 8, generator=g)
    z = torch.cat([token, 2.0 * token], dim=1)  # the second token's query is the first token's key
    with torch.no_grad():
        out = memory(z)  # (1, 2, 8)
        u = token.view(2, 4)
        value = nn.functional.normalize(u + torch.einsum("hij,hj->hi", memory.init_state[2], u), dim=-1)
        # v_0 = normalize(M_v,0(z_0)); its target in the mem memory is vhat = M_mem,0(v_0) = v_0
    assert torch.allclose(out[0, 1].view(2, 4), value, atol=1e-5)
    assert torch.allclose(out[0, 0].view(2, 4), nn.functional.normalize(u, dim=-1), atol=1e-6)  # read before write: M_mem,0(q) = q


def test_no_op_inner_loop_equals_the_static_network():
    """P9.1: eta_max = 0 and alpha = 1 leave the fast state unchanged: outputs equal a forward that never writes."""
    model = HopeLM(HopeLMConfig(eta_max=0.0, alpha_bias=100.0, chunk=4))
    x = torch.randint(32, (3, 32))
    with torch.no_grad():
        live = model(x)
        for block in model.blocks:
            block.memory.writes = False
        static = model(x)
    assert torch.equal(live, static)


def test_reads_are_causal_and_a_full_length_chunk_reads_the_initial_state():
    """P9.3."""
    torch.manual_seed(0)
    model = HopeLM(HopeLMConfig(chunk=8)).eval()
    x = torch.randint(32, (2, 32))
    y = x.clone()
    y[:, 20] = (y[:, 20] + 1) % 32
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :20], b[:, :20], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 20:], b[:, 20:])
    model = HopeLM(HopeLMConfig(chunk=32, read="chunk")).eval()
    with torch.no_grad():
        live = model(x)
        for block in model.blocks:
            block.memory.writes = False
        assert torch.equal(live, model(x))


def test_the_self_referential_writes_stay_bounded():
    """Every memory writes its own target M_box(v); with unit keys and values that loop cannot blow up,
    even with eta = alpha = 1 on every token of a long sequence, or in the 32x32 HopeViT (8 chunks x 4 blocks)."""
    torch.manual_seed(0)
    lm = HopeLM(HopeLMConfig(max_len=256, chunk=1, eta_max=1.0, alpha_bias=100.0, **LINEAR))
    for block in lm.blocks:
        with torch.no_grad():
            block.memory.eta.bias.fill_(100.0)
    vit = hope_for_suite(type("Suite", (), {"kind": "image", "input_shape": (3, 32, 32), "n_classes": 10}), **LINEAR)
    with torch.no_grad():
        assert lm(torch.randint(32, (2, 256))).abs().max() < 100
        assert vit(100 * torch.randn(4, 3, 32, 32)).abs().max() < 100


def test_per_sample_isolation_and_deterministic_eval():
    """P9.4: permuting the batch permutes the outputs; two eval passes agree; eval changes no parameter."""
    torch.manual_seed(0)
    model = HopeViT(HopeViTConfig(in_channels=1, image_size=28, n_classes=10, d_model=32, n_layers=2, chunk=4)).eval()
    x = torch.randn(5, 1, 28, 28)
    perm = torch.tensor([3, 0, 4, 1, 2])
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        out = model(x)
        assert torch.allclose(model(x[perm]), out[perm], atol=1e-5, rtol=0)
        assert torch.equal(model(x), out)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_shapes_levels_and_gradients():
    lm = HopeLM(HopeLMConfig())
    x = torch.randint(32, (4, 32))
    out = lm(x)
    assert out.shape == (4, 32, 32)
    out.logsumexp(-1).mean().backward()
    memory = lm.blocks[0].memory
    for name in ("init_w1", "init_w2", "init_gates", "gate_bias", "q", "conv"):
        param = getattr(memory, name) if name.startswith(("init", "gate")) else getattr(memory, name).weight
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for shape, n_patches in (((2, 1, 28, 28), 16), ((2, 3, 32, 32), 64), ((2, 8, 8), 16)):
        suite = type("Suite", (), {"kind": "image", "input_shape": shape[1:], "n_classes": 10})
        vit = hope_for_suite(suite)
        assert vit.config.n_patches == n_patches and vit.config.n_patches % vit.config.chunk == 0
        assert vit(torch.randn(*shape)).shape == (2, 10)
    periods = {lv.period: lv.names for lv in wire_clocks(lm, (1, 8, 64))}
    assert all(".cms.2." in n for n in periods[64]) and all(".cms.1." in n for n in periods[8])
    assert "blocks.0.memory.init_w1" in periods[1] and "classifier.weight" in periods[1]


# --------------------------------------------------------------------------------------------------
# The strategy


def test_hope_strategy_is_registered_and_runs_on_the_bigram_stream():
    assert strategies()["hope"].wraps_optimizer
    benchmark = build_bigram_benchmark(get_suite("bigram-shift"), "domain", n_train=128, n_test=32)
    spec = resolve_spec("bigram-shift", "hope", device="cpu", epochs=1, batch_size=32)
    result = run_one(spec, benchmark=benchmark)
    assert result["status"] == "completed", result["error"]
    assert len(result["accuracy_matrix"]) == 2 and result["clocks"]["global_step"] == 8
    assert result["clocks"]["updates"] == [8, 1, 0]


def test_hope_vit_learns_split_digits_with_replay():
    benchmark = build_benchmark(get_suite("split-digits"), "class", seed=0, data_root=DEFAULT_DATA_ROOT)
    spec = resolve_spec("split-digits", "hope+replay", device="cpu", epochs=1, hparams={"hope_dim": 32, "lr": 3e-3})
    strategy, _ = build_strategy(spec, benchmark, torch.device("cpu"))
    assert isinstance(strategy.model, HopeViT) and strategy.model.config.d_model == 32
    assert isinstance(strategy.optimizer, ClockedOptimizer) and strategy.optimizer.periods == [1, 8, 64]
    assert "DeviceReplay" in {type(p).__name__ for p in strategy.plugins}
    result = run_one(spec, benchmark=benchmark)
    assert result["status"] == "completed", result["error"]
    matrix = torch.tensor(result["accuracy_matrix"])
    assert matrix.diagonal().mean() > 0.5  # learns each new experience (chance: 10%)
    assert (matrix[-1, :-1] > 0).any()  # and replay keeps some old classes alive
