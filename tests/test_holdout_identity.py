"""The validation split holds out images, not positions (issue 26, item 9a).

With `train_per_task`, each task of a permuted or rotated stream trains on its own seeded subset of
the base training images, and the subsets overlap. Holding out the same positions in every task then
held out images that another task trains on (permuted-fmnist 5 x 3000: 232 of 1500 validation images).
These tests recover every example's base image independently of nlbench's own record of it
(`nlbench_source_ids`): from the declared subset seeding and the pixels themselves, un-permuted. They
check that no validation image is trained on in any task. tests/test_tune.py checks the same on real
Fashion-MNIST (permuted-fmnist 5 x 3000) through the record.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nlbench.data.streams import build_benchmark, hold_out

pytestmark = pytest.mark.usefixtures("one_thread")


def _declared_subset(seed: int, task: int, n_base: int, per_task: int) -> torch.Tensor:
    """build_benchmark's documented `train_per_task` seeding, written out again here."""
    keep = torch.randperm(n_base, generator=torch.Generator().manual_seed(seed * 1000 + task))
    return keep[:per_task].sort().values


def _base_ids(full, part) -> set[int]:
    """The base images of `part` (a held-out or training subset of the experience `full`), found by their
    pixels within the experience and mapped through the experience's declared subset."""
    position = {row.numpy().tobytes(): i for i, row in enumerate(full.nlbench_tensors[0].flatten(1))}
    return {int(full.declared[position[row.numpy().tobytes()]]) for row in part.nlbench_tensors[0].flatten(1)}


def _check_no_leak(benchmark, split, fraction: float) -> None:
    held, trained = set(), set()
    for full, val, train in zip(benchmark.train_stream, split.test_stream, split.train_stream):
        n = len(full.dataset)
        val_ids, train_ids = _base_ids(full, val), _base_ids(full, train)
        assert len(val_ids) == len(val.dataset) and len(train_ids) == len(train.dataset)
        assert val_ids | train_ids == set(full.declared.tolist()) and not val_ids & train_ids
        assert 0 < len(val.dataset) < n and abs(len(val.dataset) - fraction * n) < 0.5 * fraction * n
        # nlbench's own record of identities agrees with the independent one
        assert set(val.nlbench_source_ids.tolist()) == val_ids
        held |= val_ids
        trained |= train_ids
    assert not held & trained, f"{len(held & trained)} validation images are trained on in another task"


@pytest.mark.parametrize("seed", [0, 7])
def test_permuted_digits_with_train_per_task_trains_on_no_validation_image(seed):
    """The embedded 8x8 digits made into a permuted stream of 5 tasks, each drawing 300 of the training
    images, so the tasks overlap heavily; the base images are found from the pixels (un-permuted) and
    the declared subset seeding, not from nlbench's record."""
    from nlbench.data.readers import DEFAULT_DATA_ROOT, load_arrays
    from nlbench.data.streams import _to_model_tensor
    from nlbench.data.suites import get_suite

    suite = dataclasses.replace(get_suite("split-digits"), permuted=True, n_experiences=5, train_per_task=300)
    benchmark = build_benchmark(suite, "class", seed=seed, data_root=DEFAULT_DATA_ROOT)
    x, _ = load_arrays("digits", DEFAULT_DATA_ROOT, train=True)
    base = _to_model_tensor(x, "digits", (1, 8, 8)).flatten(1)
    generator = torch.Generator().manual_seed(seed)
    permutations = [torch.randperm(64, generator=generator) for _ in range(5)]  # build_benchmark's seeding
    by_pixels: dict[bytes, list[int]] = {}
    for i, row in enumerate(base):
        by_pixels.setdefault(row.numpy().tobytes(), []).append(i)
    for task, experience in enumerate(benchmark.train_stream):
        unpermuted = experience.nlbench_tensors[0].flatten(1)[:, torch.argsort(permutations[task])]
        matches = [by_pixels[row.numpy().tobytes()] for row in unpermuted]
        declared = _declared_subset(seed, task, len(base), 300)
        assert all(int(d) in m for d, m in zip(declared, matches))  # the pixels are those base images
        experience.declared = declared
    _check_no_leak(benchmark, hold_out(benchmark, 0.2, seed=seed), 0.2)


def test_without_image_ids_each_experience_is_split_on_its_own():
    """Streams without identities (bigram-shift's experiences are separate draws) split each experience
    by itself, exactly round(fraction * n) examples, as before identities were used."""
    from nlbench.data.bigram import build_bigram_benchmark
    from nlbench.data.suites import get_suite

    bigram = build_bigram_benchmark(get_suite("bigram-shift"), "domain", n_train=96, n_test=16)
    assert not hasattr(bigram.train_stream[0], "nlbench_image_ids")
    split = hold_out(bigram, 0.25, seed=2)
    assert [len(e.dataset) for e in split.test_stream] == [24, 24]
    assert [len(e.dataset) for e in split.train_stream] == [72, 72]
