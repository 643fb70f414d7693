"""The fast data path: device tensors by index permutation, batched augmentation, materialisation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from nlbench.data.readers import DEFAULT_DATA_ROOT
from nlbench.data.fastpath import TensorBatches, materialise, random_crop_flip
from nlbench.data.streams import build_benchmark
from nlbench.data.suites import get_suite


def test_tensor_batches_cover_every_sample_once_per_pass():
    x = torch.arange(103).float().unsqueeze(1)
    y = torch.arange(103)
    batches = list(TensorBatches((x, y), batch_size=10, shuffle=True))
    assert len(batches) == 11 == len(TensorBatches((x, y), 10, True))
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(103))
    assert all(torch.equal(b[0].squeeze(1).long(), b[1]) for b in batches)  # rows stay aligned
    ordered = torch.cat([b[1] for b in TensorBatches((x, y), 10, shuffle=False)])
    assert torch.equal(ordered, y)
    full = list(TensorBatches((x, y), 10, shuffle=True, drop_last=True))
    assert len(full) == 10 == len(TensorBatches((x, y), 10, True, drop_last=True))
    assert all(len(b[1]) == 10 for b in full) and len(set(torch.cat([b[1] for b in full]).tolist())) == 100


def test_shuffle_follows_the_global_seed():
    x = torch.arange(50)
    torch.manual_seed(3)
    first = torch.cat([b[0] for b in TensorBatches((x,), 7, True)])
    torch.manual_seed(3)
    again = torch.cat([b[0] for b in TensorBatches((x,), 7, True)])
    assert torch.equal(first, again) and not torch.equal(first, x)


def test_random_crop_flip_is_a_shifted_and_possibly_mirrored_window():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    out = random_crop_flip(x, padding=4)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        candidates = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
    assert not torch.equal(out, x)  # 64 images: some were shifted or flipped


def test_materialise_reads_an_avalanche_dataset_without_train_augmentation():
    benchmark = build_benchmark(get_suite("split-digits"), "class", 0, DEFAULT_DATA_ROOT)
    dataset = benchmark.train_stream[1].dataset
    x, y, t = materialise(dataset)
    assert x.shape == (len(dataset), 1, 8, 8) and set(y.tolist()) == {2, 3} and set(t.tolist()) == {0}
    sample = dataset.eval()[5]
    assert torch.equal(x[5], sample[0]) and int(y[5]) == int(sample[1])
    assert materialise(dataset) is materialise(dataset)  # read once


def _run(strategy, benchmark, **kwargs):
    from nlbench.core.runner import run_one
    from nlbench.core.spec import resolve_spec

    return run_one(resolve_spec("split-digits", strategy, device="cpu", **kwargs), benchmark=benchmark)


def test_fast_and_stock_paths_learn_the_same_stream():
    """Same method, same seed: the two data paths draw batches in different orders, so matrices
    differ, but both learn and forget alike (and each is deterministic on its own)."""
    benchmark = build_benchmark(get_suite("split-digits"), "class", 0, DEFAULT_DATA_ROOT)
    for strategy in ("adam", "replay", "cumulative"):
        fast = _run(strategy, benchmark)
        stock = _run(strategy, benchmark, data_path="avalanche")
        assert fast["status"] == stock["status"] == "completed"
        assert abs(fast["metrics"]["acc"] - stock["metrics"]["acc"]) < 0.15
        assert fast["accuracy_matrix"] == _run(strategy, benchmark)["accuracy_matrix"]


def test_the_runner_uses_the_fast_path_by_default_and_the_options_apply():
    import torch
    from avalanche.core import SupervisedPlugin

    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec

    class Look(SupervisedPlugin):
        def after_forward(self, strategy, **kwargs):
            self.loader, self.x, self.out = strategy.dataloader, strategy.mb_x, strategy.mb_output

    benchmark = build_benchmark(get_suite("split-digits"), "class", 0, DEFAULT_DATA_ROOT)
    spec = resolve_spec("split-digits", "adam", device="cpu", backbone="cnn", channels_last=True, amp="bf16", epochs=1)
    strategy, _ = build_strategy(spec, benchmark, torch.device("cpu"))
    look = Look()
    strategy.plugins.append(look)
    strategy.train(benchmark.train_stream[0])
    assert isinstance(look.loader, TensorBatches)
    assert look.x.is_contiguous(memory_format=torch.channels_last)
    assert look.out.dtype == torch.float32  # autocast inside, float32 logits out
    fp32 = _run("adam", benchmark, backbone="cnn")
    bf16 = _run("adam", benchmark, backbone="cnn", channels_last=True, amp="bf16")
    assert bf16["status"] == "completed"
    assert abs(bf16["metrics"]["learning_acc"] - fp32["metrics"]["learning_acc"]) < 0.15


def test_replay_on_the_fast_path_keeps_a_balanced_device_buffer():
    import torch
    from avalanche.core import SupervisedPlugin

    from nlbench.data.fastpath import ReplayBatches
    from nlbench.core.runner import build_strategy
    from nlbench.core.spec import resolve_spec

    class Look(SupervisedPlugin):
        size = 0

        def before_training_iteration(self, strategy, **kwargs):
            self.loader, self.size = strategy.dataloader, max(self.size, len(strategy.mb_y))

    benchmark = build_benchmark(get_suite("split-digits"), "class", 0, DEFAULT_DATA_ROOT)
    spec = resolve_spec("split-digits", "replay", device="cpu", epochs=1, hparams={"mem_size": 90})
    strategy, _ = build_strategy(spec, benchmark, torch.device("cpu"))
    buffer = next(p for p in strategy.plugins if type(p).__name__ == "DeviceReplay")
    look = Look()
    strategy.plugins.append(look)
    for experience in benchmark.train_stream[:3]:
        strategy.train(experience)
    assert [len(g[0]) for g in buffer.groups] == [30, 30, 30]  # 90 // 3 per experience seen
    assert [sorted(set(g[1].tolist())) for g in buffer.groups] == [[0, 1], [2, 3], [4, 5]]
    assert isinstance(look.loader, ReplayBatches)
    assert look.size == 2 * 32  # each batch of 32 is joined by 32 replayed samples
    result = _run("replay", benchmark)
    adam = _run("adam", benchmark)
    assert result["metrics"]["acc"] > adam["metrics"]["acc"] + 0.2


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler")
def test_compile_builds_graphs_and_trains_the_same_stream(digits):
    """`--compile` compiles the model in place (dynamo really captures graphs) and the run learns the
    stream as the eager one does; on this MLP the matrices agree to float rounding."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = _run("adam", digits, epochs=1, compile=True)
    assert counters["stats"]["unique_graphs"] > 0
    eager = _run("adam", digits, epochs=1)
    assert compiled["status"] == "completed"
    assert np.allclose(compiled["accuracy_matrix"], eager["accuracy_matrix"], atol=0.02)
