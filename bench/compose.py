"""Cost of the composition `cms+deep-l2gd` against its parts, measured side by side in one process.

    python bench/compose.py [--workloads digits,fmnist] [--bases adam,sgd,sgd-fused] [--alpha 1e-4,1e-2]
                            [--repeats 256] [--profile]

What is timed: one training step (zero_grad, forward, backward, optimizer step) of four optimizers on
the SAME network, the CMS version of the suite's MLP (`cms_variant`, 3 levels, periods 1, 8, 64 by
default), built by the registry as `nlbench run` builds them (build_parts / assemble_optimizer):

    base            the cms strategy's base optimizer alone (Adam, lr 1e-3): no clock, no projection
    cms             ClockedOptimizer, one Adam per level (NL §7.1 Eq 70-71)
    deep-l2gd       DeepL2GD with an Adam base: W <- W (I - a G), then Adam (NL Eq 57/121)
    cms+deep-l2gd   ClockedOptimizer, one DeepL2GD per level: each level's layers are projected with the
                    mean Gram of their whole window when the level is due, then its Adam steps

"The sum of its parts": cms and deep-l2gd each do the base step plus their own extra work (the clock's
windows; the Gram recording and projection), so a composition that adds nothing of its own costs

    t(cms) + t(deep-l2gd) - t(base)          and the printed ratio is  t(cms+deep-l2gd) / that.

Ratio 1: the composition costs exactly its parts; target at most 1.05x. The clock makes the slow
levels skip most Adam steps, so t(cms) < t(base) is normal and the sum can be below t(deep-l2gd).
With `--bases sgd` or `sgd-fused` the base is torch's SGD (lr 1e-2), cms clocks it, and DeepL2GD runs
on that base (sgd-fused: the projection inside the SGD step, strategies/deep_l2gd/fused.py).

Protocol (as bench/clocks.py and bench/optimizers.py): one torch thread, each step clocked in the
thread's CPU time (time.thread_time), so a step preempted by another process on a shared machine is
charged nothing for the wait; the four contenders run one step each per repeat in a fresh seeded
random order (none twice in a row), from identical weights, on a fixed batch, after one full clock
cycle of warm-up. The slow levels' due steps are rare and costly, and a run's time is their mean, so
the repeats span whole clock cycles (a multiple of lcm(periods)) and the MEAN per step is the headline;
the median (the common, not-due step) is printed beside it.

`--profile` prints where the composed step's time goes: torch.profiler's operators by self CPU time,
and the number of operator calls per step of each contender, over one clock cycle.

Workloads: `digits` = split-digits (8x8 inputs, MLP 2x100 -> CMS width 100, batch 32);
`fmnist` = the Fashion-MNIST suites (28x28, MLP 400 -> CMS width 400, batch 128). Random inputs of the
suite's shape and scale: timing does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nlbench.core.backbones import build_backbone  # noqa: E402
from nlbench.core.registry import assemble_optimizer, build_parts, resolve_hparams  # noqa: E402

WORKLOADS = {  # input shape, MLP overrides, batch
    "digits": ((1, 8, 8), {"hidden": (100, 100)}, 32),
    "fmnist": ((1, 28, 28), {}, 128),
}
CONTENDERS = ("base", "cms", "deep-l2gd", "cms+deep-l2gd")


def build(workload: str, periods: tuple[int, ...], alpha: float, base: str = "adam") -> tuple[dict, tuple]:
    """{contender: (model, optimizer)} on copies of one CMS network, and the (x, y) batch."""
    shape, overrides, batch = WORKLOADS[workload]
    torch.manual_seed(0)
    backbone = build_backbone("mlp", shape, 10, **overrides)
    torch_base = "adam" if base == "adam" else "sgd"
    lr = 1e-3 if base == "adam" else 1e-2
    hp_clock = {"periods": periods, "optimizer": torch_base, "lr": lr}
    hp_deep = {"alpha": alpha, "base": base, "lr": lr}
    cms_parts = build_parts("cms", None, resolve_hparams("cms", hp_clock))
    net = cms_parts.model_transform(backbone)
    setups = {}
    for name in CONTENDERS:
        model = copy.deepcopy(net)
        if name == "base":
            optimizer = cms_parts.optimizer(model, None)
        else:
            hp = {"cms": hp_clock, "deep-l2gd": hp_deep, "cms+deep-l2gd": {"periods": periods, **hp_deep}}[name]
            parts = build_parts(name, None, resolve_hparams(name, hp))
            optimizer = assemble_optimizer(parts, model)
        setups[name] = (model, optimizer)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *shape, generator=g)
    y = torch.randint(10, (batch,), generator=g)
    return setups, (x, y)


def train_step(model, optimizer, batch) -> None:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def measure(setups: dict, batch: tuple, cycle: int, repeats: int) -> dict[str, list[float]]:
    for model, optimizer in setups.values():  # warm-up: one whole cycle, so every level has stepped once
        for _ in range(cycle):
            train_step(model, optimizer, batch)
    times: dict[str, list[float]] = {name: [] for name in setups}
    order = list(setups)
    rng = random.Random(0)
    clock = time.thread_time
    for _ in range(repeats):
        last = order[-1]
        rng.shuffle(order)
        if order[0] == last:  # nobody twice in a row: its caches would be warmer than the others'
            order[0], order[-1] = order[-1], order[0]
        for name in order:
            model, optimizer = setups[name]
            start = clock()
            train_step(model, optimizer, batch)
            times[name].append(clock() - start)
    return times


def report(title: str, times: dict[str, list[float]]) -> dict[str, float]:
    mean = {name: statistics.fmean(v) for name, v in times.items()}
    median = {name: statistics.median(v) for name, v in times.items()}
    print(f"\n{title}")
    print(f"  {'contender':<16}{'mean ms':>10}{'median ms':>11}{'x base (mean)':>15}")
    for name in times:
        print(f"  {name:<16}{1e3 * mean[name]:>10.3f}{1e3 * median[name]:>11.3f}{mean[name] / mean['base']:>14.2f}x")
    ratios = {}
    for stat, values in (("mean", mean), ("median", median)):
        parts = values["cms"] + values["deep-l2gd"] - values["base"]
        ratios[stat] = values["cms+deep-l2gd"] / parts
        print(f"  {stat}: cms+deep-l2gd / (cms + deep-l2gd - base) = {1e3 * values['cms+deep-l2gd']:.3f} / "
              f"{1e3 * parts:.3f} ms = {ratios[stat]:.2f}x")
    return ratios


def profile(setups: dict, batch: tuple, cycle: int, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    counts = {}
    for name, (model, optimizer) in setups.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(cycle):
                train_step(model, optimizer, batch)
        events = prof.key_averages()
        counts[name] = sum(e.count for e in events) / cycle
        if name == "cms+deep-l2gd":
            print(f"\n  cms+deep-l2gd over one cycle of {cycle} steps, top {top} operators by self CPU time:")
            print("  " + events.table(sort_by="self_cpu_time_total", row_limit=top).replace("\n", "\n  "))
    print("  operator calls per step: " + ", ".join(f"{n} {c:.0f}" for n, c in counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="digits,fmnist")
    parser.add_argument("--periods", default="1,8,64")
    parser.add_argument("--alpha", default="1e-4,1e-2", help="DeepL2GD alpha values (the grid's range ends)")
    parser.add_argument("--bases", default="adam", help="DeepL2GD bases: adam, sgd, sgd-fused (cms then clocks torch's Adam or SGD)")
    parser.add_argument("--repeats", type=int, default=256, help="rounded up to whole clock cycles")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    periods = tuple(int(p) for p in args.periods.split(","))
    cycle = math.lcm(*periods)
    repeats = cycle * max(1, math.ceil(args.repeats / cycle))
    print(f"torch {torch.__version__}, 1 thread, thread CPU time, periods {periods}, {repeats} interleaved "
          f"repeats ({repeats // cycle} clock cycles) after {cycle} warm-up steps")
    for workload in args.workloads.split(","):
        for base in args.bases.split(","):
            for alpha in (float(a) for a in args.alpha.split(",")):
                setups, batch = build(workload.strip(), periods, alpha, base)
                _, _, size = WORKLOADS[workload.strip()]
                report(f"{workload}: CMS network, batch {size}, base {base}, alpha {alpha:g}",
                       measure(setups, batch, cycle, repeats))
                if args.profile:
                    profile(setups, batch, cycle, args.top)


if __name__ == "__main__":
    main()
