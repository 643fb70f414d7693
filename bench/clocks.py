"""Cost of multi-clock training and of HOPE, measured side by side in one process.

    python bench/clocks.py [--threads N] [--rounds R] [--steps S] [--device cpu|cuda]

Prints:
1. The clocked training step (ClockedOptimizer, one Adam per level, every period 1) against the plain
   step (one torch.optim.Adam) on the same model and batch, for the bigram-shift Transformer and the
   split-fmnist MLP: the whole step (zero_grad, forward, backward, optimizer step) and the optimizer
   step alone. Target: both at most 1.05x the plain ones. With every period at 1 the two runs are
   bitwise identical (the script checks it), so the ratio is the wrapper's bookkeeping only. The two
   alternate step by step (rounds x steps pairs) and the medians of the per-step times are compared;
   on a one-thread CPU run each step is clocked in the thread's CPU time (time.thread_time), so the
   time a step spends preempted by other processes on a shared machine is charged to neither.
2. HOPE's forward+backward throughput next to a plain Transformer of the same width, depth and heads
   (tokens per second on a bigram-shift batch), with parameter counts; target: HOPE (chunk-parallel
   memory, chunk 8) at most 2x the Transformer's time. The same HOPE through the chunk loop of the
   reference path is timed alongside. On CPU this section clocks the thread's CPU time. Where the time
   goes: each model's matrix-product work (FLOPs of mm/bmm/addmm/baddbmm per fwd+bwd, counted by
   torch.utils.flop_counter) and the rate it runs at, HOPE's memories alone (fwd+bwd on their recorded
   inputs), and a Transformer with HOPE's parameter count (FFN 6x instead of 4x) for "same size" read
   as parameters rather than width/depth/heads.

Timings alternate between the contenders (step by step for 1, round by round for 2) and report
medians, so a machine whose load changes affects both alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nlbench.data.bigram import SequenceCrossEntropy, make_synth_bigrams
from nlbench.models import MLP, MLPConfig
from nlbench.models.transformer import TinyTransformer, TransformerConfig
from nlbench.strategies.cms.clocks import ClockedOptimizer
from nlbench.strategies.cms.wiring import wire_clocks
from nlbench.models.hope import HopeLM, HopeLMConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_step(model, optimizer, batch, loss_fn, device, clock=time.perf_counter) -> tuple[float, float]:
    """One training step; returns (seconds for the whole step, seconds for optimizer.step alone)."""
    x, y = batch
    _sync(device)
    start = clock()
    optimizer.zero_grad()
    loss_fn(model(x), y).backward()
    _sync(device)
    tick = clock()
    optimizer.step()
    _sync(device)
    end = clock()
    return end - start, end - tick


def _step_clock(device: torch.device):
    """This thread's CPU time on a one-thread CPU run: a step preempted by another process (the machine
    is shared) is not charged the time it waited, which wall time would add to whichever contender was
    running. With more intra-op threads (their work is not this thread's) or on a GPU: wall time."""
    if device.type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time, "thread CPU time"
    return time.perf_counter, "wall time"


def bench_clocks(name, make_model, batch, loss_fn, device, rounds, steps) -> dict[str, float]:
    """Plain Adam against ClockedOptimizer (one Adam per level, every period 1), step by step: the two
    alternate every step (and swap who goes first every step), so load changes hit both alike; the
    medians of the per-step times are compared. Returns the ratios (whole, optimizer)."""
    torch.manual_seed(0)
    plain = make_model().to(device)
    clocked = copy.deepcopy(plain)
    reference = torch.optim.Adam(plain.parameters(), lr=1e-3)
    periods = (1, 1, 1)
    optimizer = ClockedOptimizer(wire_clocks(clocked, periods), lambda m, p: torch.optim.Adam(p, lr=1e-3), model=clocked)
    contenders = {"plain": (plain, reference), "clocked": (clocked, optimizer)}
    clock, clock_name = _step_clock(device)
    for model, opt in contenders.values():  # warm-up
        for _ in range(3):
            _one_step(model, opt, batch, loss_fn, device, clock)
    times = {k: ([], []) for k in contenders}
    order = list(contenders)
    for _ in range(rounds * steps):
        for key in order:
            whole, opt = _one_step(*contenders[key], batch, loss_fn, device, clock)
            times[key][0].append(whole)
            times[key][1].append(opt)
        order.reverse()
    identical = all(torch.equal(a, b) for a, b in zip(plain.parameters(), clocked.parameters()))
    med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in times.items()}
    n_params = sum(p.numel() for p in plain.parameters())
    fast = getattr(optimizer, "_merged", None)
    print(f"  {name}: {n_params:,} parameters, {len(optimizer.bases)} levels all at period 1, "
          f"merged fast path: {'yes' if fast else 'no'}, bitwise identical: {identical}, clock: {clock_name}")
    ratios = {"whole": med["clocked"][0] / med["plain"][0], "optimizer": med["clocked"][1] / med["plain"][1]}
    print(f"    whole step      plain {1e3 * med['plain'][0]:8.3f} ms   clocked {1e3 * med['clocked'][0]:8.3f} ms   "
          f"ratio {ratios['whole']:.3f}x  (target <= 1.05x)")
    print(f"    optimizer step  plain {1e3 * med['plain'][1]:8.3f} ms   clocked {1e3 * med['clocked'][1]:8.3f} ms   "
          f"ratio {ratios['optimizer']:.3f}x  (target <= 1.05x)   "
          f"wrapper {1e6 * (med['clocked'][1] - med['plain'][1]):+.0f} us/step")
    return ratios


def _product_flops(model: nn.Module, x: torch.Tensor, loss) -> tuple[int, int]:
    """(all, memory): FLOPs of the matrix products of one fwd+bwd, and the share inside HOPE's memories."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss(model(x)).backward()
    model.zero_grad(set_to_none=True)
    memory = sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name.endswith(".memory"))
    return counter.get_total_flops(), memory


def _memories_alone(model: nn.Module, x: torch.Tensor, device, clock, rounds: int, steps: int) -> float:
    """Seconds per fwd+bwd of all of HOPE's memories on the inputs they saw in one forward of `x`."""
    inputs = []
    hooks = [b.memory.register_forward_pre_hook(lambda m, a: inputs.append((m, a[0].detach()))) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    g = torch.Generator(device="cpu").manual_seed(1)
    cases = [(m, z.requires_grad_(), torch.randn(z.shape, generator=g).to(device)) for m, z in inputs]

    def run(n: int) -> float:
        _sync(device)
        start = clock()
        for _ in range(n):
            for m, z, gout in cases:
                m(z).backward(gout)
        _sync(device)
        return (clock() - start) / n

    run(2)
    return statistics.median(run(steps) for _ in range(rounds))


def bench_hope(device, rounds, steps, batch_size, d_model, n_layers, n_heads) -> dict[str, float]:
    """HOPE (chunk-parallel memory with the hand-written chunk-loop backward, what the model runs), the same
    weights with autograd's backward of the chunk-parallel form, and through the box-by-box chunk loop
    (`SelfModifyingMemory.forward_reference`, the pre-issue-19 implementation) against a plain
    Transformer of the same width/depth/heads and one of HOPE's parameter count; on CPU the clock is
    this thread's CPU time, so other processes' load is not counted."""
    torch.manual_seed(0)
    x, y = make_synth_bigrams(n_train=batch_size, n_test=1).train[0]
    x, y = x.to(device), y.to(device)
    hope = HopeLM(HopeLMConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads, chunk=8))
    loop, autograd = copy.deepcopy(hope), copy.deepcopy(hope)
    for block in loop.blocks:
        block.memory.forward = block.memory.forward_reference
    for block in autograd.blocks:  # chunk-parallel form, autograd's backward instead of the hand-written one
        block.memory.hand_written_backward = False
    size = dict(d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    models = {
        "transformer": TinyTransformer(TransformerConfig(**size)),
        "transformer 6x": TinyTransformer(TransformerConfig(**size, ffn_mult=6)),  # about HOPE's parameter count
        "hope": hope,
        "hope (autograd)": autograd,
        "hope (loop)": loop,
    }
    loss_fn = SequenceCrossEntropy()
    clock = time.thread_time if device.type == "cpu" else time.perf_counter

    def run(model: nn.Module, n: int) -> float:
        _sync(device)
        start = clock()
        for _ in range(n):
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
        _sync(device)
        return (clock() - start) / n

    for model in models.values():
        model.to(device)
        run(model, 2)
    with torch.no_grad():
        gap = (hope(x) - loop(x)).abs().max().item()
    times = {k: [] for k in models}
    for _ in range(rounds):
        for key, model in models.items():
            times[key].append(run(model, steps))
    tokens = x.numel()
    base = statistics.median(times["transformer"])
    for key, model in models.items():
        t = statistics.median(times[key])
        n_params = sum(p.numel() for p in model.parameters())
        target = "  (target <= 2x)" if key == "hope" else ""
        print(f"    {key:<15} {n_params:>9,} params   fwd+bwd {1e3 * t:8.2f} ms/batch   {tokens / t:>10,.0f} tokens/s   "
              f"{t / base:.2f}x the transformer's time{target}")
    print(f"    chunk-parallel form vs the chunk loop: {statistics.median(times['hope (loop)']) / statistics.median(times['hope']):.2f}x "
          f"faster, max |logit difference| {gap:.1e}; hand-written backward vs autograd's: "
          f"{statistics.median(times['hope (autograd)']) / statistics.median(times['hope']):.2f}x faster")
    t_hope, t_matched = statistics.median(times["hope"]), statistics.median(times["transformer 6x"])
    print(f"    HOPE vs the Transformer of its parameter count (FFN 6x): {t_hope / t_matched:.2f}x the time")
    # FLOPs of the three models the breakdown below compares (not of the two slower HOPE variants)
    flops = {key: _product_flops(models[key], x, lambda out: loss_fn(out, y)) for key in ("transformer", "transformer 6x", "hope")}
    t_mem = _memories_alone(hope, x, device, clock, rounds, steps)
    total, mem = flops["hope"]
    print("    where the time goes (matrix products: FLOPs of mm/bmm/addmm/baddbmm per fwd+bwd, and their rate):")
    for key in ("transformer", "transformer 6x"):
        f, t = flops[key][0], statistics.median(times[key])
        print(f"      {key:<29} {f / 1e6:7.0f} MFLOP in {1e3 * t:7.2f} ms   {f / t / 1e9:6.1f} GFLOP/s")
    rest = t_hope - t_mem
    print(f"      {'hope, its memories alone':<29} {mem / 1e6:7.0f} MFLOP in {1e3 * t_mem:7.2f} ms   "
          f"{mem / t_mem / 1e9:6.1f} GFLOP/s   ({100 * t_mem / t_hope:.0f}% of HOPE's time)")
    print(f"      {'hope, everything else':<29} {(total - mem) / 1e6:7.0f} MFLOP in {1e3 * rest:7.2f} ms   "
          f"{(total - mem) / rest / 1e9:6.1f} GFLOP/s")
    print(f"      2x the transformer leaves the memories {1e3 * (2 * base - rest):.1f} ms, "
          f"{t_mem / max(2 * base - rest, 1e-9):.1f}x less than they take now")
    return {"hope": t_hope / base, "hope_vs_param_matched": t_hope / t_matched, "memory_share": t_mem / t_hope}


def bench_all_clocks(device, rounds, steps) -> dict[str, dict[str, float]]:
    """Section 1 on both models; {"transformer" | "mlp": {"whole", "optimizer"}} ratios."""
    print("1. clocked step vs plain step, every period at 1")
    x, y = make_synth_bigrams(n_train=64, n_test=1).train[0]
    ratios = {"transformer": bench_clocks(
        "bigram-shift Transformer (d=64, 2 layers), batch 64 x 32 tokens", lambda: TinyTransformer(TransformerConfig()),
        (x.to(device), y.to(device)), SequenceCrossEntropy(), device, rounds, steps)}
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(128, 1, 28, 28, generator=g), torch.randint(10, (128,), generator=g)
    ratios["mlp"] = bench_clocks("split-fmnist MLP (784-400-400-10), batch 128", lambda: MLP(MLPConfig(input_dim=784)),
                                 (images.to(device), labels.to(device)), nn.CrossEntropyLoss(), device, rounds, steps)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--section", type=int, choices=(1, 2), default=None, help="run only section 1 or 2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.rounds} rounds x {args.steps} steps, medians")

    if args.section != 2:
        bench_all_clocks(device, args.rounds, args.steps)
    if args.section != 1:
        print("2. HOPE vs a plain Transformer of the same width/depth/heads (d=64, 2 layers, 4 heads), batch 64 x 32 tokens")
        bench_hope(device, args.rounds, max(1, args.steps // 2), 64, 64, 2, 4)


if __name__ == "__main__":
    main()
