"""HOPE's hand-written chunk-loop backward (nlbench.models.hope_chunk_grad.ChunkLoop): `gradcheck` in
float64 against finite differences of one chunk for every input (inputs per head, queries, the stacked
first layers with the gate rows, the second layers, the gate biases) and every output (reads, next
state), with and without a chunk end, chunk lengths 1 to 8 and several eta_max (the targets sg(M(v))
held fixed: finite differences of the whole loop would move them, every input moves a later chunk's);
the default memory runs it, every other option set keeps the autograd form; and across chunks the
module with it equals the autograd chunk-parallel form, output and every gradient, in float64."""

from __future__ import annotations

import pytest
import torch

from nlbench.models.hope import HopeConfig, SelfModifyingMemory
from nlbench.models.hope_chunk_grad import _chunk, _chunk_backward, supported

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(N: int, n: int, d: int, S: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=1.0):
        return (std * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()

    q = torch.nn.functional.normalize(torch.randn(N, n, d, generator=g, dtype=torch.float64), dim=-1)
    return r(N, n, d), q.requires_grad_(), r(N, S * d + 2, d, std=0.6), r(N * S, d, d, std=0.4), r(N, 1, 2)


class _OneChunk(torch.autograd.Function):
    """One chunk (`_chunk`, its reads and end state) with the hand-written `_chunk_backward`, targets fixed:
    they are stop-gradients, so finite differences must not move them. The end state is returned without
    the v box (first-layer rows 2d:3d, second layer 2): in the loop its gradient is exactly 0 (v enters only
    through the targets), which `_chunk_backward` relies on."""

    @staticmethod
    def forward(ctx, u, q, P, W1, bias, targets, eta_max, last):
        out, newP, newW, ctx.sv = _chunk(u, q, P, W1, bias, eta_max, 3, last, targets)
        ctx.eta_max, ctx.shapes = eta_max, (P.shape, W1.shape)
        if last:
            return out
        d = u.shape[-1]
        return out, torch.cat([newP[:, :2 * d], newP[:, 3 * d:]], 1), newW.unflatten(0, (3, -1))[:2]

    @staticmethod
    def backward(ctx, gout, gP=None, gW=None):
        if gP is not None:
            d = gout.shape[-1]
            full_P, full_W = gP.new_zeros(ctx.shapes[0]), gW.new_zeros(ctx.shapes[1])
            full_P[:, :2 * d], full_P[:, 3 * d:] = gP[:, :2 * d], gP[:, 2 * d:]
            full_W.unflatten(0, (3, -1))[:2] = gW
            gP, gW = full_P, full_W
        return *_chunk_backward(ctx.sv, gout, gP, gW, ctx.eta_max, 3), None, None, None


@pytest.mark.parametrize("n,eta_max,last", [(1, 0.5, False), (1, 0.5, True), (3, 0.9, False), (4, 1.0, True),
                                            (5, 0.3, False), (8, 0.1, True)])
def test_chunk_backward_passes_gradcheck(n, eta_max, last):
    """Every input of one chunk, every output (reads, and the next first layers and second layers)."""
    inputs = _inputs(N=2, n=n, d=3, seed=n)
    with torch.no_grad():
        targets = _chunk(*inputs, eta_max, 3, last)[3]["targets"]
    assert torch.autograd.gradcheck(lambda *x: _OneChunk.apply(*x, targets, eta_max, last), inputs,
                                    eps=1e-6, atol=1e-8, rtol=1e-6)


def test_only_the_default_options_take_the_hand_written_backward():
    assert supported(SelfModifyingMemory(HopeConfig()))
    for options in ({"memory": "linear"}, {"read": "chunk"}, {"gates": "linear"}, {"adaptive_q": True},
                    {"inner_momentum": 0.5}, {"rank1_dgd": True}, {"self_modify": False}, {"write_grad": False}):
        assert not supported(SelfModifyingMemory(HopeConfig(**options))), options
    static, forced = SelfModifyingMemory(HopeConfig()), SelfModifyingMemory(HopeConfig())
    static.writes, forced.hand_written_backward = False, False
    assert not supported(static) and not supported(forced)
    memory = SelfModifyingMemory(HopeConfig(d_model=8, n_heads=2, chunk=2))
    out = memory(torch.randn(2, 5, 8, requires_grad=True))
    names, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and type(fn).__name__ not in names:
            names.add(type(fn).__name__)
            stack.extend(f for f, _ in fn.next_functions)
    assert "ChunkLoopBackward" in names


@pytest.mark.parametrize("chunk,length", [(1, 4), (3, 7), (4, 8), (8, 5)])
def test_hand_written_backward_equals_the_autograd_form_float64(chunk, length):
    """Same module, same input: ChunkLoop against `hope_chunked`'s autograd loop, outputs and every gradient."""
    torch.manual_seed(3)
    memory = SelfModifyingMemory(HopeConfig(d_model=8, n_heads=2, chunk=chunk, eta_max=0.5, alpha_bias=1.0)).double()
    with torch.no_grad():
        for p in memory.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(3, length, 8, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, length, 8, dtype=torch.float64)
    inputs = [z] + list(memory.parameters())
    results = []
    for flag in (True, False):
        memory.hand_written_backward = flag
        out = memory(z)
        results.append((out, torch.autograd.grad((out * weights).sum(), inputs)))
    (fast, g_fast), (ref, g_ref) = results
    assert torch.allclose(fast, ref, atol=1e-12, rtol=0)
    for name, a, b in zip(["input"] + [n for n, _ in memory.named_parameters()], g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-11, rtol=0), name


def test_runs_under_bf16_autocast_in_float32():
    """Autocast (the GPU check's bf16 mode) leaves the recurrence in the parameters' float32: the
    gradients match the float32 run to bf16 tolerance (the rest of the model runs in bf16)."""
    torch.manual_seed(4)
    memory = SelfModifyingMemory(HopeConfig(d_model=16, n_heads=2, chunk=4))
    z = torch.randn(2, 10, 16)
    grads = []
    for enabled in (True, False):
        memory.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = memory(z)
        out.float().square().sum().backward()
        grads.append(memory.init_w2.grad.clone())
    assert torch.isfinite(grads[0]).all()
    assert torch.allclose(grads[0], grads[1], atol=0.05 * grads[1].abs().max().item())
