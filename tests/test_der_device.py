"""DER++ on the fast path: a class-balanced reservoir of device tensors with their logits."""

from __future__ import annotations

import pytest
import torch

from nlbench.baselines.der.buffer import DeviceLogitBuffer, group_lengths
from nlbench.baselines.der.strategy import DeviceDER


def _run(strategy, benchmark, **kwargs):
    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec

    return run_one(resolve_spec("split-digits", strategy, device="cpu", **kwargs), benchmark=benchmark)


@pytest.mark.parametrize("max_size, n_groups", [(200, 2), (200, 3), (7, 4), (10, 10), (5, 7)])
def test_group_lengths_are_avalanches(max_size, n_groups):
    from avalanche.training.storage_policy import ClassBalancedBuffer

    assert group_lengths(max_size, n_groups) == ClassBalancedBuffer(max_size).get_group_lengths(n_groups)


def _offer(buffer, labels, offset=0.0):
    y = torch.tensor(labels)
    x = torch.arange(len(labels), dtype=torch.float32)[:, None] + offset  # input = its own position
    seen = []

    def logits_of(inputs):
        seen.append(len(inputs))
        return inputs * 10.0

    buffer.update(x, y, torch.zeros_like(y), logits_of)
    return seen


def test_buffer_is_class_balanced_and_computes_logits_only_for_kept_samples():
    torch.manual_seed(0)
    buffer = DeviceLogitBuffer(10)
    assert _offer(buffer, [0] * 50 + [1] * 50) == [10]  # 100 offered, 10 kept, 10 forward rows
    assert {c: len(g["y"]) for c, g in buffer.groups.items()} == {0: 5, 1: 5}
    _offer(buffer, [2] * 30 + [3] * 30, offset=1000.0)
    assert {c: len(g["y"]) for c, g in buffer.groups.items()} == {0: 3, 1: 3, 2: 2, 3: 2}  # remainder to 0, 1
    assert len(buffer) == 10
    for label, group in buffer.groups.items():
        assert set(group["y"].tolist()) == {label}
        assert torch.equal(group["logits"], group["x"] * 10.0)  # logits stay aligned with their inputs
        assert (group["x"] >= 1000).all() == (label >= 2)  # each class kept its own experience's rows


def test_a_class_met_twice_keeps_a_uniform_sample_of_both_offers():
    """Domain scenario: the reservoir is over everything of the class ever offered, so after two equal
    offers about half of the kept rows come from each."""
    from_second = []
    for seed in range(200):
        torch.manual_seed(seed)
        buffer = DeviceLogitBuffer(10)
        _offer(buffer, [0] * 40)
        _offer(buffer, [0] * 40, offset=1000.0)
        from_second.append(float((buffer.groups[0]["x"] >= 1000).float().mean()))
    assert abs(sum(from_second) / len(from_second) - 0.5) < 0.05


def test_der_on_the_fast_path_keeps_device_logits_of_the_end_of_each_experience(digits):
    from avalanche.training.storage_policy import ClassBalancedBuffer

    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec

    spec = resolve_spec("split-digits", "der", device="cpu", epochs=1, hparams={"mem_size": 50})
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    assert isinstance(strategy, DeviceDER)
    reference = ClassBalancedBuffer(50)  # Avalanche's own split of the buffer over the classes seen
    for k, experience in enumerate(digits.train_stream[:3]):
        strategy.train(experience)
        classes = sorted(strategy.device_buffer.groups)
        assert classes == list(range(2 * (k + 1)))
        lengths = reference.get_group_lengths(len(classes))
        assert [len(strategy.device_buffer.groups[c]["y"]) for c in classes] == lengths
        newest = strategy.device_buffer.groups[2 * k]  # this experience's class: logits of the model now
        strategy.model.eval()
        with torch.no_grad():
            assert torch.allclose(newest["logits"], strategy.model(newest["x"]), atol=1e-6)
        assert newest["x"].device == strategy.device and newest["logits"].shape[1] == 10


def test_der_replays_from_the_device_buffer_and_learns(digits, one_thread):
    from avalanche.core import SupervisedPlugin

    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec

    class Look(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.sizes: list[int] = []

        def after_forward(self, strategy, **kwargs):
            self.sizes.append(len(strategy.mb_output))

    spec = resolve_spec("split-digits", "der", device="cpu", epochs=1)
    strategy, _ = build_strategy(spec, digits, torch.device("cpu"))
    look = Look()
    strategy.plugins.append(look)
    for experience in digits.train_stream[:2]:
        strategy.train(experience)
    first = len(look.sizes) // 2
    assert max(look.sizes[:first]) == 32 and max(look.sizes[first:]) == 64  # 32 current + 32 replayed

    fast = _run("der", digits)
    assert fast["status"] == "completed"
    assert fast["accuracy_matrix"] == _run("der", digits)["accuracy_matrix"]  # deterministic
    adam = _run("adam", digits)
    assert fast["metrics"]["acc"] > adam["metrics"]["acc"] + 0.2


def test_fast_and_stock_der_learn_alike(digits, one_thread):
    """Different random streams, same method: over three seeds the mean ACC of the device buffer is
    within a few points of Avalanche's own DER (measured: 0.654 vs 0.674)."""
    fast = [_run("der", digits, seed=s)["metrics"]["acc"] for s in range(3)]
    stock = [_run("der", digits, seed=s, data_path="avalanche")["metrics"]["acc"] for s in range(3)]
    assert abs(sum(fast) / 3 - sum(stock) / 3) < 0.08


def test_der_on_cifar_files_replays_augmented_device_batches(tmp_path, offline, one_thread):
    """split-cifar10 from files in CIFAR's real format: the buffer's inputs are unaugmented device
    tensors, the replayed minibatches are augmented by the same batched crop-and-flip as the current
    ones."""
    from datafiles import write_cifar10

    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    write_cifar10(tmp_path, n_per_batch=40, seed=1)
    benchmark = build_benchmark(get_suite("split-cifar10"), "class", 0, tmp_path, download=False)
    spec = resolve_spec("split-cifar10", "der", device="cpu", backbone="cnn", epochs=1, batch_size=16,
                        hparams={"mem_size": 20})
    strategy, _ = build_strategy(spec, benchmark, torch.device("cpu"))
    assert strategy.fast_augment is not None
    for experience in benchmark.train_stream[:2]:
        strategy.train(experience)
    stored = torch.cat([g["x"] for g in strategy.device_buffer.groups.values()])
    source = benchmark.train_stream[0].nlbench_tensors[0]
    assert all((source == row).flatten(1).all(1).any() for row in stored[:10])  # stored as read, unaugmented
    x, *_ = next(strategy.device_buffer.batches(8, strategy.fast_augment))
    assert not all((stored == row).flatten(1).all(1).any() for row in x)  # replayed through crop and flip
