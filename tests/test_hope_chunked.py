"""HOPE's chunk-parallel memory forward (nlbench.models.hope_chunked, what `SelfModifyingMemory.forward`
runs) equals the box-by-box chunk loop `SelfModifyingMemory.forward_reference` (itself checked against a
token-by-token reference in tests/test_hope_options.py): outputs and the gradients of every parameter
and of the input, in float64 to 1e-10 and in float32 to float tolerance, for every memory option, chunk
sizes 1, dividing, non-dividing and longer than the sequence."""

from __future__ import annotations

import pytest
import torch

from nlbench.models.hope import HopeConfig, HopeLM, HopeLMConfig, SelfModifyingMemory

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = {
    "default": {},
    "linear-chunk-linear-gates": {"memory": "linear", "read": "chunk", "gates": "linear"},
    "linear-token-momentum": {"memory": "linear", "inner_momentum": 0.7},
    "mlp-chunk-read": {"read": "chunk"},
    "momentum-adaptive-q": {"inner_momentum": 0.9, "adaptive_q": True},
    "rank1-dgd-linear-gates": {"rank1_dgd": True, "inner_momentum": 0.5, "gates": "linear"},
    "fixed-k-v-momentum": {"self_modify": False, "inner_momentum": 0.5},
    "no-write-grad": {"write_grad": False, "inner_momentum": 0.3},
}
CHUNKS = [(1, 5), (3, 7), (4, 8), (8, 5)]  # (chunk, length): one token, non-dividing, dividing, longer


def _pair(memory, z):
    weights = torch.randn_like(z)
    inputs = [z] + list(memory.parameters())
    results = []
    for forward in (memory.forward, memory.forward_reference):
        out = forward(z)
        grads = torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True)
        results.append((out, [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]))
    return results


@pytest.mark.parametrize("chunk,length", CHUNKS)
@pytest.mark.parametrize("name", list(OPTIONS))
def test_chunk_parallel_form_equals_the_chunk_loop_float64(name, chunk, length):
    torch.manual_seed(0)
    memory = SelfModifyingMemory(HopeConfig(d_model=8, n_heads=2, chunk=chunk, eta_max=0.5, alpha_bias=1.0,
                                            **OPTIONS[name])).double()
    with torch.no_grad():  # move the gates and states off their init so every term is exercised
        for p in memory.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(3, length, 8, dtype=torch.float64, requires_grad=True)
    (fast, g_fast), (ref, g_ref) = _pair(memory, z)
    assert torch.allclose(fast, ref, atol=1e-12, rtol=0)
    names = ["input"] + [n for n, _ in memory.named_parameters()]
    for pname, a, b in zip(names, g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-10, rtol=0), pname


def test_chunk_parallel_form_equals_the_chunk_loop_float32_at_the_defaults():
    """The benchmarked size (d=64, 4 heads, chunk 8, 32 tokens): float32 outputs and gradients agree."""
    torch.manual_seed(1)
    memory = SelfModifyingMemory(HopeConfig())
    z = torch.randn(4, 32, 64, requires_grad=True)
    (fast, g_fast), (ref, g_ref) = _pair(memory, z)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-4)


def test_hope_lm_unchanged_by_the_chunk_parallel_form():
    """The whole model (two blocks): logits with the fast memory equal those with the reference loop."""
    torch.manual_seed(2)
    model = HopeLM(HopeLMConfig())
    x = torch.randint(32, (4, 32))
    with torch.no_grad():
        fast = model(x)
        for block in model.blocks:
            block.memory.forward = block.memory.forward_reference
        ref = model(x)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=1e-5)
