"""The fast data path: device tensors by index permutation, batched augmentation, materialisation."""

from __future__ import annotations

import torch

from nlbench.data import DEFAULT_DATA_ROOT
from nlbench.fastpath import TensorBatches, materialise, random_crop_flip
from nlbench.suites import build_benchmark, get_suite


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
