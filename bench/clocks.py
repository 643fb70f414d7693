"""Cost of multi-clock training and of HOPE, measured side by side in one process.

    python bench/clocks.py [--threads N] [--rounds R] [--steps S] [--device cpu|cuda]

Prints:
1. The clocked training step (ClockedOptimizer, one Adam per level, every period 1) against the plain
   step (one torch.optim.Adam) on the same model and batch, for the bigram-shift Transformer and the
   split-fmnist MLP: the whole step (zero_grad, forward, backward, optimizer step) and the optimizer
   step alone. Target: the whole clocked step at most 1.05x the plain one. With every period at 1 the
   two runs are bitwise identical (the script checks it), so the ratio is the wrapper's bookkeeping only.
2. HOPE's forward+backward throughput next to a plain Transformer of the same width, depth and heads
   (tokens per second on a bigram-shift batch), with parameter counts.

Timings alternate between the contenders round by round and report medians, so a machine whose load
changes affects both alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from nlbench.data.bigram import SequenceCrossEntropy, make_synth_bigrams
from nlbench.models import MLP, MLPConfig
from nlbench.models.transformer import TinyTransformer, TransformerConfig
from nlbench.strategies.cms.clocks import ClockedOptimizer
from nlbench.strategies.cms.wiring import wire_clocks
from nlbench.models.hope import HopeLM, HopeLMConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_timer(model, optimizer, batch, loss_fn, device):
    """Closure: run `steps` training steps; returns (seconds per whole step, seconds per optimizer step)."""
    x, y = batch

    def run(steps: int) -> tuple[float, float]:
        opt_time = 0.0
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            _sync(device)
            tick = time.perf_counter()
            optimizer.step()
            _sync(device)
            opt_time += time.perf_counter() - tick
        total = time.perf_counter() - start
        return total / steps, opt_time / steps

    return run


def bench_clocks(name, make_model, batch, loss_fn, device, rounds, steps) -> None:
    torch.manual_seed(0)
    plain = make_model().to(device)
    clocked = copy.deepcopy(plain)
    reference = torch.optim.Adam(plain.parameters(), lr=1e-3)
    periods = (1, 1, 1)
    optimizer = ClockedOptimizer(wire_clocks(clocked, periods), lambda m, p: torch.optim.Adam(p, lr=1e-3), model=clocked)
    runs = {"plain": _step_timer(plain, reference, batch, loss_fn, device),
            "clocked": _step_timer(clocked, optimizer, batch, loss_fn, device)}
    for run in runs.values():  # warm-up
        run(3)
    times = {k: ([], []) for k in runs}
    for _ in range(rounds):
        for key, run in runs.items():
            whole, opt = run(steps)
            times[key][0].append(whole)
            times[key][1].append(opt)
    identical = all(torch.equal(a, b) for a, b in zip(plain.parameters(), clocked.parameters()))
    med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in times.items()}
    n_params = sum(p.numel() for p in plain.parameters())
    print(f"  {name}: {n_params:,} parameters, {len(optimizer.bases)} levels all at period 1, bitwise identical: {identical}")
    print(f"    whole step      plain {1e3 * med['plain'][0]:8.3f} ms   clocked {1e3 * med['clocked'][0]:8.3f} ms   "
          f"ratio {med['clocked'][0] / med['plain'][0]:.3f}x  (target <= 1.05x)")
    print(f"    optimizer step  plain {1e3 * med['plain'][1]:8.3f} ms   clocked {1e3 * med['clocked'][1]:8.3f} ms   "
          f"ratio {med['clocked'][1] / med['plain'][1]:.3f}x")


def bench_hope(device, rounds, steps, batch_size, d_model, n_layers, n_heads) -> None:
    torch.manual_seed(0)
    x, y = make_synth_bigrams(n_train=batch_size, n_test=1).train[0]
    x, y = x.to(device), y.to(device)
    models = {
        "transformer": TinyTransformer(TransformerConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads)),
        "hope": HopeLM(HopeLMConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads, chunk=8)),
    }
    loss_fn = SequenceCrossEntropy()

    def run(model: nn.Module, n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
        _sync(device)
        return (time.perf_counter() - start) / n

    for model in models.values():
        model.to(device)
        run(model, 2)
    times = {k: [] for k in models}
    for _ in range(rounds):
        for key, model in models.items():
            times[key].append(run(model, steps))
    tokens = x.numel()
    base = statistics.median(times["transformer"])
    for key, model in models.items():
        t = statistics.median(times[key])
        n_params = sum(p.numel() for p in model.parameters())
        print(f"    {key:<12} {n_params:>9,} params   fwd+bwd {1e3 * t:8.2f} ms/batch   {tokens / t:>10,.0f} tokens/s   "
              f"{t / base:.2f}x the transformer's time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{args.rounds} rounds x {args.steps} steps, medians")

    print("1. clocked step vs plain step, every period at 1")
    x, y = make_synth_bigrams(n_train=64, n_test=1).train[0]
    bench_clocks("bigram-shift Transformer (d=64, 2 layers), batch 64 x 32 tokens", lambda: TinyTransformer(TransformerConfig()),
                 (x.to(device), y.to(device)), SequenceCrossEntropy(), device, args.rounds, args.steps)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(128, 1, 28, 28, generator=g), torch.randint(10, (128,), generator=g)
    bench_clocks("split-fmnist MLP (784-400-400-10), batch 128", lambda: MLP(MLPConfig(input_dim=784)),
                 (images.to(device), labels.to(device)), nn.CrossEntropyLoss(), device, args.rounds, args.steps)

    print("2. HOPE vs a plain Transformer of the same width/depth/heads (d=64, 2 layers, 4 heads), batch 64 x 32 tokens")
    bench_hope(device, args.rounds, max(1, args.steps // 2), 64, 64, 2, 4)


if __name__ == "__main__":
    main()
