"""Training-step time of every Nested Learning optimizer as a ratio to Adam's, measured side by side.

    python bench/optimizers.py [--device cpu|cuda] [--repeats 30] [--workloads mlp,resnet]

One training step = forward + backward + optimizer step (zero_grad included), on a fixed batch.
All optimizers of a workload are timed in one process, interleaved step by step in a fresh random
order each repeat (seeded), from identical initial weights, after warm-up steps (DeepL2GD needs one
to fill its statistics). A random order, not a fixed or alternating one: what runs just before a step
decides how warm its caches are (worth +-3% on the MLP), so every optimizer must draw its predecessors
alike, and none may run twice in a row (an alternating order did that to the first and the last).
Printed: median and minimum milliseconds per step and the ratio of medians to Adam and to plain SGD.
Targets on the MLP: DeepL2GD (Adam base) at most 1.3x Adam; the fused DeepL2GD+SGD (nl-math.md 1.3,
strategies/deep_l2gd/fused.py) at most 1.05x SGD. At the default 30 repeats a ratio moves by about
+-3% from run to run on a shared machine; judge a 5% target with --repeats 150 or more.

Workloads: `mlp` = MLP 784-400-400-10 at batch 128; `resnet` = reduced ResNet-18 (nf=20) on
CIFAR-shaped input at batch 32 (DeepL2GD with its conv channel-covariance projection).
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nlbench.core.backbones import build_backbone  # noqa: E402
from nlbench.strategies.deep_l2gd.ema import DeepL2GDEMA  # noqa: E402
from nlbench.strategies.deep_l2gd.optimizer import DeepL2GD  # noqa: E402
from nlbench.strategies.dmgd.deep_momentum import DeepMomentumGD  # noqa: E402
from nlbench.strategies.dmgd.delta_momentum import DeltaMomentum  # noqa: E402
from nlbench.strategies.dmgd.muon import Muon  # noqa: E402
from nlbench.strategies.nested_adam.adam import NestedAdam  # noqa: E402
from nlbench.strategies.nl_memory.optimizer import MultiTimescaleMemoryOpt  # noqa: E402

OPTIMIZERS: dict[str, Callable[[torch.nn.Module, bool], torch.optim.Optimizer]] = {
    "adam": lambda m, conv: torch.optim.Adam(m.parameters(), lr=1e-3),
    "sgd": lambda m, conv: torch.optim.SGD(m.parameters(), lr=1e-2),
    "deep-l2gd (adam)": lambda m, conv: DeepL2GD(m, lr=1e-3, alpha=1e-4, base="adam", conv=conv),
    "deep-l2gd (sgd)": lambda m, conv: DeepL2GD(m, lr=1e-2, alpha=1e-4, base="sgd", conv=conv),
    "deep-l2gd (sgd-fused)": lambda m, conv: DeepL2GD(m, lr=1e-2, alpha=1e-4, base="sgd", conv=conv, fused=True),
    "deep-l2gd-ema": lambda m, conv: DeepL2GDEMA(m, lr=1e-3, alpha=1e-4, base="adam", conv=conv),
    "nested-adam": lambda m, conv: NestedAdam(m.parameters(), lr=1e-3, v_period=10),
    "nl-memory": lambda m, conv: MultiTimescaleMemoryOpt(m.parameters(), lr=1e-3, model=m),
    "dmgd": lambda m, conv: DeepMomentumGD(m.parameters(), lr=1e-2),
    "delta-momentum": lambda m, conv: DeltaMomentum(m.parameters(), lr=1e-2),
    "muon": lambda m, conv: Muon(m.parameters(), lr=0.02),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(workload: str, device: torch.device, repeats: int, warmup: int) -> dict[str, dict[str, float]]:
    """Time every optimizer on one workload; returns {optimizer: {"adam": ratio, "sgd": ratio}}."""
    torch.manual_seed(0)
    if workload == "mlp":
        model = build_backbone("mlp", (1, 28, 28), 10)
        x, y, conv = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,)), False
    elif workload == "resnet":
        model = build_backbone("reduced-resnet18", (3, 32, 32), 10)
        x, y, conv = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,)), True
    else:
        raise SystemExit(f"unknown workload {workload!r}; valid: mlp, resnet")
    x, y = x.to(device), y.to(device)
    model = model.to(device)
    setups = {}
    for name, make in OPTIMIZERS.items():
        copy_ = copy.deepcopy(model)
        setups[name] = (copy_, make(copy_, conv))

    def step(net, optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    for net, optimizer in setups.values():
        for _ in range(warmup):
            step(net, optimizer)
    times: dict[str, list[float]] = {name: [] for name in setups}
    order = list(setups)
    # One CPU thread: the thread's CPU time, so a step preempted by another process on a shared machine
    # is not charged the wait; with more threads (their work is not this thread's) or a GPU: wall time.
    clock = time.thread_time if device.type == "cpu" and torch.get_num_threads() == 1 else time.perf_counter
    rng = random.Random(0)
    for _ in range(repeats):
        last = order[-1]
        rng.shuffle(order)  # see the module docstring: fair predecessors, and load changes hit all alike
        if order[0] == last:
            order[0], order[-1] = order[-1], order[0]
        for name in order:
            net, optimizer = setups[name]
            sync(device)
            start = clock()
            step(net, optimizer)
            sync(device)
            times[name].append(clock() - start)

    base, sgd = statistics.median(times["adam"]), statistics.median(times["sgd"])
    kind = "thread CPU time" if clock is time.thread_time else "wall time"
    print(f"\n{workload}: batch {len(x)}, {device}, {repeats} interleaved repeats after {warmup} warm-up steps ({kind})")
    print(f"  {'optimizer':<23}{'median ms':>11}{'min ms':>9}{'x Adam (median)':>17}{'x SGD (median)':>16}")
    ratios = {}
    for name, values in times.items():
        median = statistics.median(values)
        ratios[name] = {"adam": median / base, "sgd": median / sgd}
        print(f"  {name:<23}{1e3 * median:>11.2f}{1e3 * min(values):>9.2f}{median / base:>16.2f}x{median / sgd:>15.3f}x")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadiest on a busy machine)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workloads", default="mlp,resnet")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    for workload in args.workloads.split(","):
        measure(workload.strip(), device, args.repeats, args.warmup)


if __name__ == "__main__":
    main()
