"""Harness overhead: nlbench's training epoch against a hand-written PyTorch loop and Avalanche's stock Naive.

    python bench/overhead.py [--device cpu|cuda] [--repeats 5] [--workloads mlp,resnet]

All three train the same model from the same initial weights, with the same optimizer and batch
size, for one epoch over the same tensors, in one process, interleaved repeat by repeat so that
machine noise hits them alike. Printed: seconds per epoch (min and median over repeats) and the
ratio to the hand-written loop. Target: nlbench at most 1.10x the hand-written loop.

Workloads:
- `mlp`: Adam on the split-fmnist MLP 784-400-400-10, batch 128, one experience (12,000 images) of
  real Fashion-MNIST when it is on this machine, else Fashion-MNIST-shaped random tensors (said so).
- `resnet`: Adam on the reduced ResNet-18 (nf=20), batch 32, 2,000 CIFAR-shaped random tensors (no
  CIFAR files are needed: the cost of a step does not depend on pixel values).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets  # noqa: E402
from avalanche.benchmarks.utils.classification_dataset import (  # noqa: E402
    _make_taskaware_tensor_classification_dataset as tensor_dataset,
)
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.training import Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402

from nlbench.core.backbones import build_backbone  # noqa: E402
from nlbench.core.runner import build_strategy  # noqa: E402
from nlbench.core.spec import resolve_spec  # noqa: E402
from nlbench.data.streams import build_benchmark  # noqa: E402
from nlbench.data.suites import get_suite


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_written_epoch(model, optimizer, x, y, batch_size, device) -> None:
    """The reference: what a researcher writes by hand on preloaded device tensors."""
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    order = torch.randperm(len(x)).to(device)
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        optimizer.zero_grad()
        loss = criterion(model(x[index]), y[index])
        loss.backward()
        optimizer.step()


def workload(name: str, device: torch.device):
    """(spec, nlbench benchmark experience, x, y) for one workload."""
    if name == "mlp":
        spec = resolve_spec("split-fmnist", "adam", device=str(device), epochs=1)
        try:
            from nlbench.data.readers import DEFAULT_DATA_ROOT

            bm = build_benchmark(get_suite("split-fmnist"), "class", 0, DEFAULT_DATA_ROOT, download=False)
            source = "real Fashion-MNIST, experience 0"
        except Exception:  # no Fashion-MNIST here: the same shapes in random tensors
            bm = None
            source = "random Fashion-MNIST-shaped tensors"
        if bm is not None:
            experience = bm.train_stream[0]
            x, y = experience.nlbench_tensors[:2]
            return spec, x, y, source
        x, y = torch.randn(12_000, 1, 28, 28), torch.randint(0, 2, (12_000,))
        return spec, x, y, source
    if name == "resnet":
        spec = resolve_spec("split-cifar10", "adam", device=str(device), epochs=1, batch_size=32)
        x, y = torch.randn(2_000, 3, 32, 32), torch.randint(0, 2, (2_000,))
        return spec, x, y, "random CIFAR-shaped tensors (no CIFAR files here)"
    raise SystemExit(f"unknown workload {name!r}; valid: mlp, resnet")


def single_experience_benchmark(x, y):
    data = tensor_dataset(x, y, targets=y.tolist(), task_labels=[0] * len(y))
    bm = benchmark_from_datasets(train=[data], test=[data])
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline

    return with_classes_timeline(bm)


def measure(name: str, device: torch.device, repeats: int) -> None:
    spec, x, y, source = workload(name, device)
    suite = get_suite(spec.suite)
    torch.manual_seed(0)
    initial = build_backbone(spec.backbone, suite.input_shape, suite.n_classes).to(device)
    x_dev, y_dev = x.to(device), y.to(device)
    bm = single_experience_benchmark(x, y)

    # nlbench: the runner's own strategy assembly, on a benchmark whose experience carries its tensors.
    from nlbench.data.suites import Benchmark

    experience = bm.train_stream[0]
    experience.nlbench_tensors = (x, y, torch.zeros_like(y))
    nl_benchmark = Benchmark(suite, "class", bm.train_stream, bm.test_stream, [sorted(set(y.tolist()))])
    nl_strategy, _ = build_strategy(spec, nl_benchmark, device)
    nl_strategy.model.load_state_dict(initial.state_dict())

    hand_model = copy.deepcopy(initial)
    hand_optimizer = torch.optim.Adam(hand_model.parameters(), lr=1e-3)
    naive_model = copy.deepcopy(initial)
    naive = Naive(
        model=naive_model, optimizer=torch.optim.Adam(naive_model.parameters(), lr=1e-3),
        criterion=torch.nn.CrossEntropyLoss(), train_mb_size=spec.batch_size, train_epochs=1,
        eval_mb_size=spec.batch_size, device=device,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    )

    runs = {
        "hand-written loop": lambda: hand_written_epoch(hand_model, hand_optimizer, x_dev, y_dev, spec.batch_size, device),
        "nlbench": lambda: nl_strategy.train(experience),
        "Avalanche Naive (stock)": lambda: naive.train(experience),
    }
    for run in runs.values():  # warm-up: allocator, cuDNN autotuning, first-call Python costs
        run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[label].append(time.perf_counter() - start)

    base_min, base_med = min(times["hand-written loop"]), statistics.median(times["hand-written loop"])
    print(f"\n{name}: {spec.backbone}, Adam, batch {spec.batch_size}, {len(x)} samples/epoch, {device} ({source})")
    print(f"  {'path':<26}{'min s':>9}{'median s':>10}{'ratio min':>11}{'ratio med':>11}")
    for label, values in times.items():
        low, mid = min(values), statistics.median(values)
        print(f"  {label:<26}{low:>9.3f}{mid:>10.3f}{low / base_min:>10.2f}x{mid / base_med:>10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadiest on a busy machine)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", default="mlp,resnet")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    for name in args.workloads.split(","):
        measure(name.strip(), device, args.repeats)


if __name__ == "__main__":
    main()
