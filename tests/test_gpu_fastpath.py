"""The fast path on a CUDA GPU (marker `gpu`; run with `pytest -m gpu`, skipped without a GPU).

What a CPU cannot show: minibatches, augmentation and rehearsal memories never make the host wait
for the GPU (CUDA's sync debug mode turns every synchronising call into an error), the memories live
on the GPU, and the GPU options (bf16, compile, channels-last) run the DER protocol's pieces.
"""

from __future__ import annotations

import pytest
import torch

from nlbench.data.fastpath import ReplayBatches, TensorBatches, host_to_device, random_crop_flip

pytestmark = pytest.mark.gpu


@pytest.fixture
def no_host_sync():
    """Any operation that synchronises the host with the GPU raises inside this fixture's scope."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    yield
    torch.cuda.set_sync_debug_mode("default")


def _run(strategy, benchmark, **kwargs):
    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec

    return run_one(resolve_spec("split-digits", strategy, device="cuda", **kwargs), benchmark=benchmark)


def test_host_draws_reach_the_gpu_unchanged():
    draws = torch.randint(0, 9, (3, 64))
    assert torch.equal(host_to_device(draws, torch.device("cuda")).cpu(), draws)


def test_batches_augmentation_and_replay_never_wait_for_the_gpu(no_host_sync):
    from nlbench.baselines.der.buffer import DeviceLogitBuffer

    x = torch.randn(512, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (512,), device="cuda")
    t = torch.zeros_like(y)
    current = TensorBatches((x, y, t), 32, shuffle=True, augment=random_crop_flip)
    for batch in ReplayBatches(current, (x[:100], y[:100], t[:100])):
        assert batch[0].shape == (64, 3, 32, 32)
    torch.cuda.set_sync_debug_mode("default")  # the buffer update reads its classes once per experience
    buffer = DeviceLogitBuffer(50)
    buffer.update(x, y, t, lambda inputs: inputs.flatten(1)[:, :10])
    torch.cuda.set_sync_debug_mode("error")
    batches = buffer.batches(16, random_crop_flip)
    for _ in range(10):
        bx, by, bt, logits = next(batches)
        assert bx.is_cuda and logits.shape == (16, 10)


def test_rehearsal_memories_live_on_the_gpu(digits):
    from nlbench.baselines.agem.plugin import DeviceAGEM
    from nlbench.baselines.replay.plugins import DeviceReplay
    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec

    for name in ("replay", "agem", "der"):
        spec = resolve_spec("split-digits", name, device="cuda", epochs=1)
        strategy, _ = build_strategy(spec, digits, torch.device("cuda"))
        for experience in digits.train_stream[:2]:
            strategy.train(experience)
        if name == "der":
            tensors = [t for group in strategy.device_buffer.groups.values() for t in group.values()]
        else:
            plugin = next(p for p in strategy.plugins if isinstance(p, (DeviceReplay, DeviceAGEM)))
            tensors = [t for group in plugin.groups for t in group]
        assert tensors and all(t.is_cuda for t in tensors), name


@pytest.mark.parametrize("strategy", ["replay", "agem", "der"])
def test_gpu_runs_learn_like_cpu_runs(strategy, digits):
    """Same draws on every device (torch's CPU generator), different kernels: the GPU run is
    deterministic on its own and lands within a few points of the CPU run."""
    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec

    gpu = _run(strategy, digits)
    assert gpu["status"] == "completed" and gpu["device"] == "cuda"
    cpu = run_one(resolve_spec("split-digits", strategy, device="cpu"), benchmark=digits)
    assert abs(gpu["metrics"]["acc"] - cpu["metrics"]["acc"]) < 0.1


def test_gpu_options_run_der_on_cifar_files(tmp_path, offline):
    """bf16, compile and channels-last together on the reduced ResNet-18, from CIFAR-10 files in the
    real format: the DER protocol's pieces, at a toy size."""
    from datafiles import write_cifar10

    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    write_cifar10(tmp_path, n_per_batch=40, seed=1)
    benchmark = build_benchmark(get_suite("split-cifar10"), "class", 0, tmp_path, download=False)
    spec = resolve_spec("split-cifar10", "der", device="cuda", epochs=1, amp="bf16", compile=True, channels_last=True)
    result = run_one(spec, benchmark=benchmark)
    assert result["status"] == "completed", result["error"]
    assert result["peak_memory_kind"] == "cuda_max_allocated" and result["peak_memory_mb"] > 0
