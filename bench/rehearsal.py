"""Rehearsal strategies on the fast path (device memories) against Avalanche's stock path, side by side.

    python bench/rehearsal.py [--suite split-fmnist] [--repeats 2] [--epochs 1] [--threads 1] [--device cpu]

For replay, der and agem: one full run per data path (`fast`: device-resident experience tensors and
rehearsal memories; `avalanche`: Avalanche's DataLoaders, ReplayPlugin, DER and AGEMPlugin), same spec
and seed, interleaved repeat by repeat so machine noise hits both alike. Printed: the training time
summed over the stream's experiences (min over repeats), the ratio stock / fast, and each path's
final ACC (the two draw different random streams, so ACC agrees statistically, not digit for digit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nlbench.data.readers import resolve_data_root  # noqa: E402
from nlbench.core.runner import run_one  # noqa: E402
from nlbench.core.spec import resolve_spec  # noqa: E402
from nlbench.data.streams import build_benchmark  # noqa: E402
from nlbench.data.suites import get_suite

STRATEGIES = ("replay", "der", "agem")
PATHS = ("fast", "avalanche")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="split-fmnist")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    suite = get_suite(args.suite)
    benchmark = build_benchmark(suite, suite.default_scenario, 0, resolve_data_root(args.data_root), False)
    train_s: dict[tuple[str, str], list[float]] = {}
    acc: dict[tuple[str, str], float] = {}
    for repeat in range(args.repeats):
        for strategy in STRATEGIES:
            for path in PATHS:
                spec = resolve_spec(suite.name, strategy, device=args.device, data_path=path, epochs=args.epochs)
                result = run_one(spec, benchmark=benchmark)
                if result["status"] != "completed":
                    sys.exit(f"{strategy} on the {path} path: {result['status']}: {result['error']}")
                train_s.setdefault((strategy, path), []).append(sum(result["experience_train_time_s"]))
                acc.setdefault((strategy, path), result["metrics"]["acc"])
                print(f"repeat {repeat}: {strategy:7s} {path:9s} {train_s[strategy, path][-1]:7.2f} s", flush=True)

    print(f"\n{suite.name}, {args.epochs} epoch(s) per experience, {args.device}, {args.threads} thread(s), "
          f"min over {args.repeats} repeat(s); training time summed over {suite.n_experiences} experiences")
    print(f"{'strategy':9s} {'fast s':>8s} {'stock s':>8s} {'stock/fast':>10s} {'ACC fast':>9s} {'ACC stock':>9s}")
    for strategy in STRATEGIES:
        fast, stock = min(train_s[strategy, "fast"]), min(train_s[strategy, "avalanche"])
        print(f"{strategy:9s} {fast:8.2f} {stock:8.2f} {stock / fast:9.2f}x "
              f"{100 * acc[strategy, 'fast']:8.1f}% {100 * acc[strategy, 'avalanche']:8.1f}%")


if __name__ == "__main__":
    main()
