"""HOPE's memory options (nl-math.md 9.2) against a token-by-token reference written from the definition:
2-layer residual MLP or linear memories, per-token or chunk-start reads, gates from self-modified memories
or linear, inner momentum, adaptive q, rank1_dgd. The reference loops over samples, heads and tokens and
takes every inner gradient with autograd at the chunk-start state; it shares no code with the module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlbench.models.hope import HopeConfig, HopeLM, HopeLMConfig, SelfModifyingMemory

pytestmark = pytest.mark.usefixtures("one_thread")


def _box_map(weights, u, mlp):
    """M(u) = u + W u (linear) or u + W1 silu(W2 u) (mlp), for one head."""
    if not mlp:
        return u + weights[0] @ u
    return u + weights[0] @ F.silu(weights[1] @ u)


def _reference(memory: SelfModifyingMemory, z: torch.Tensor) -> torch.Tensor:
    cfg = memory.config
    mlp, H, dh = cfg.memory == "mlp", memory.n_heads, memory.head_dim
    b, n, d = z.shape
    zc = memory.conv(F.pad(z.transpose(1, 2), (cfg.conv_window - 1, 0))).transpose(1, 2)
    init = [memory.init_state] if not mlp else [memory.init_w1, memory.init_w2]
    S = init[0].shape[0]
    out = torch.zeros(b, n, H, dh, dtype=z.dtype)
    rows = []
    for i in range(b):
        heads = []
        for h in range(H):
            # state: per box a list of weights; gate boxes (eta, alpha) one (1, dh) weight each
            state = [[w[s, h] for w in init] for s in range(S)]
            gates = [[memory.init_gates[g, h]] for g in range(2)] if cfg.gates == "memory" else []
            mom = [[torch.zeros_like(w) for w in box] for box in state + gates]
            outs = []
            for start in range(0, n, cfg.chunk):
                frozen = [list(box) for box in state + gates]
                for t in range(start, min(start + cfg.chunk, n)):
                    ut, zt = zc[i, t].view(H, dh)[h], zc[i, t]
                    boxes = frozen[:S] if cfg.self_modify else [[w[s, h] for w in init] for s in range(S)]
                    k = F.normalize(_box_map(boxes[1], ut, mlp), dim=0)
                    v = F.normalize(_box_map(boxes[2], ut, mlp), dim=0)
                    if cfg.adaptive_q:
                        q = F.normalize(_box_map(boxes[3], ut, mlp), dim=0)
                    else:
                        q = F.normalize(memory.q(zt).view(H, dh)[h], dim=0)
                    if cfg.gates == "memory":
                        ge, ga = frozen[S][0], frozen[S + 1][0]
                        eta = cfg.eta_max * torch.sigmoid(ge @ ut + memory.gate_bias[0, h])
                        alpha = torch.sigmoid(ga @ ut + memory.gate_bias[1, h])
                    else:
                        eta = cfg.eta_max * torch.sigmoid(memory.eta(zt)[h])
                        alpha = torch.sigmoid(memory.alpha(zt)[h])
                    read_from = state[0] if cfg.read == "token" else frozen[0]
                    outs.append(_box_map(read_from, q, mlp))
                    writers = range(len(state) + len(gates)) if cfg.self_modify else [0]
                    for j in writers:
                        # aliases: the inner gradient is w.r.t. the weights as used in this loss only
                        # (k, v, q and the gates computed from the same state are data here)
                        P = [w.view_as(w) for w in frozen[j]]
                        if j < S:
                            target = _box_map(P, v, mlp) if cfg.self_modify else v
                            loss = 0.5 * (_box_map(P, k, mlp) - target.detach()).pow(2).sum()
                        else:
                            loss = 0.5 * (P[0] @ k - (P[0] @ v).detach()).pow(2).sum()
                        grads = list(torch.autograd.grad(loss, P, create_graph=True))
                        if cfg.rank1_dgd and mlp and j < S:
                            grads[1] = grads[1] + torch.outer(P[1] @ k, k)
                        box = (state + gates)[j]
                        for w_i, g in enumerate(grads):
                            mom[j][w_i] = cfg.inner_momentum * mom[j][w_i] - eta * g
                            box[w_i] = alpha * box[w_i] + mom[j][w_i]
            heads.append(torch.stack(outs))
        rows.append(torch.stack(heads, dim=1))  # (n, H, dh)
    return torch.stack(rows).reshape(b, n, d)


CONFIGS = {
    "default": {},
    "old-linear": {"memory": "linear", "read": "chunk", "gates": "linear"},
    "linear-token-memory-gates": {"memory": "linear"},
    "mlp-chunk-linear-gates": {"read": "chunk", "gates": "linear"},
    "momentum-adaptive-q": {"inner_momentum": 0.9, "adaptive_q": True},
    "rank1-dgd": {"rank1_dgd": True, "inner_momentum": 0.5},
    "fixed-k-v": {"self_modify": False},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_memory_matches_the_token_by_token_reference(name):
    """Outputs and OUTER gradients of every parameter equal the reference (float64). A missing stop-gradient
    on the self-generated targets leaves outputs equal but changes the gradients; an inverted retention gate
    changes both."""
    torch.manual_seed(0)
    cfg = HopeConfig(d_model=8, n_heads=2, chunk=3, eta_max=0.5, alpha_bias=1.0, **CONFIGS[name])
    memory = SelfModifyingMemory(cfg).double()
    with torch.no_grad():  # move the gates off their init so every term is exercised
        for p in memory.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(2, 7, 8, dtype=torch.float64)
    weights = torch.randn(2, 7, 8, dtype=torch.float64)
    got = memory(z)
    want = _reference(memory, z)
    assert torch.allclose(got, want, atol=1e-10, rtol=0)
    params = [p for p in memory.parameters()]
    g_got = torch.autograd.grad((got * weights).sum(), params, allow_unused=True)
    g_want = torch.autograd.grad((want * weights).sum(), params, allow_unused=True)
    for (pname, _), a, b in zip(memory.named_parameters(), g_got, g_want):
        if b is None:
            assert a is None or a.abs().max() == 0, pname
            continue
        assert torch.allclose(a, b, atol=1e-9, rtol=0), pname


def test_chunk_of_one_token_reads_equal_chunk_start_reads():
    """With chunk = 1 the state before token t's write IS the chunk-start state."""
    torch.manual_seed(1)
    x = torch.randint(32, (2, 16))
    a = HopeLM(HopeLMConfig(max_len=16, chunk=1, read="token"))
    b = HopeLM(HopeLMConfig(max_len=16, chunk=1, read="chunk"))
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("options", [{}, {"inner_momentum": 0.9, "adaptive_q": True, "rank1_dgd": True}])
def test_token_reads_are_causal_and_depend_on_earlier_tokens_of_the_chunk(options):
    """P9.3 for per-token reads: o_t depends on tokens < t of its own chunk, never on tokens > t."""
    torch.manual_seed(2)
    memory = SelfModifyingMemory(HopeConfig(d_model=16, n_heads=2, chunk=8, **options)).eval()
    z = torch.randn(1, 16, 16)
    y = z.clone()
    y[:, 10] += 1.0
    with torch.no_grad():
        a, b = memory(z), memory(y)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 11:16], b[:, 11:16])  # same chunk (8..15), after the change


def test_momentum_zero_and_no_rank1_reproduce_the_plain_write():
    torch.manual_seed(3)
    x = torch.randint(32, (2, 32))
    a = HopeLM(HopeLMConfig(chunk=4))
    b = HopeLM(HopeLMConfig(chunk=4, inner_momentum=0.5))
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


def test_the_default_memories_stay_bounded_without_forgetting():
    """eta = eta_max = 0.1 and alpha = 1 (no retention) on every token of a long sequence: the MLP memories'
    self-referential writes stay bounded. (Unlike the linear delta rule, an MLP write is not a contraction
    for every eta <= 1: with eta = 1 this sequence overflows.)"""
    torch.manual_seed(0)
    lm = HopeLM(HopeLMConfig(max_len=256, chunk=4, alpha_bias=100.0))
    with torch.no_grad():
        for block in lm.blocks:
            block.memory.gate_bias[0].fill_(100.0)
        out = lm(torch.randint(32, (2, 256)))
    assert torch.isfinite(out).all() and out.abs().max() < 100
