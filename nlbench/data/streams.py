"""Streams: a suite's data as Avalanche train/test streams (`build_benchmark`) and the `Benchmark`
record the runner and strategies read. Heavy (torch, Avalanche): imported by the runner, not by
validation, which needs only `nlbench.data.suites`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlbench.errors import UserError
from nlbench.data.suites import Benchmark, SuiteInfo, rotation_angles

# Per-channel mean and std of the training sets (standard values for the torchvision datasets).
_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}



def _to_model_tensor(x: Any, dataset: str, shape: tuple[int, ...]) -> Any:
    """uint8 images (N,H,W) or (N,H,W,C), or digits floats, -> normalised float32 (N,C,H,W)."""
    import torch

    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    x = x.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2).contiguous()
    if dataset in _NORMALISATION:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in _NORMALISATION[dataset])
        x = (x - mean) / std
    else:  # digits: values in [0, 1]; centre them like the others
        x = (x - 0.5) / 0.5
    assert tuple(x.shape[1:]) == shape, (x.shape, shape)
    return x


def rotate_images(x: Any, degrees: float, dataset: str) -> Any:
    """Normalised (N, C, H, W) images rotated by `degrees` (counter-clockwise, bilinear); the corners
    that come from outside the image get the normalised value of a black pixel, the background."""
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import rotate

    if degrees == 0:
        return x
    mean, std = _NORMALISATION.get(dataset, ((0.5,), (0.5,)))
    fill = [(0.0 - m) / s for m, s in zip(mean, std)]
    out = torch.empty_like(x)
    for start in range(0, len(x), 10_000):  # chunks: bounded temporary memory
        out[start:start + 10_000] = rotate(x[start:start + 10_000], degrees, InterpolationMode.BILINEAR, fill=fill)
    return out


def _augmentation() -> Any:
    """Random crop with 4-pixel padding and horizontal flip on CHW tensors (the standard CIFAR recipe)."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])


def build_benchmark(
    suite: SuiteInfo, scenario: str, seed: int, data_root: Path, download: bool = True
) -> Benchmark:
    """Load the suite's data and build its Avalanche train/test streams."""
    import torch
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    # Private in 0.6 but it is the constructor Avalanche's own tensor benchmarks use.
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as tensor_dataset,
    )

    from nlbench.data.readers import load_arrays

    if suite.kind == "sequence":
        from nlbench.data.bigram import build_bigram_benchmark

        return build_bigram_benchmark(suite, scenario, seed)
    if scenario not in suite.scenarios:
        raise UserError(f"scenario {scenario!r} is not available for {suite.name}; valid: {', '.join(suite.scenarios)}")

    splits = {}
    for split, train in (("train", True), ("test", False)):
        x, y = load_arrays(suite.dataset, data_root, train=train, download=download)
        splits[split] = (_to_model_tensor(x, suite.dataset, suite.input_shape), torch.as_tensor(y).long())

    if suite.permuted:
        generator = torch.Generator().manual_seed(seed)
        n_pixels = suite.input_shape[1] * suite.input_shape[2]
        permutations = [torch.randperm(n_pixels, generator=generator) for _ in range(suite.n_experiences)]
        experience_classes = [list(range(suite.n_classes)) for _ in range(suite.n_experiences)]
    elif suite.rotated:
        experience_classes = [list(range(suite.n_classes)) for _ in range(suite.n_experiences)]
    else:
        k = suite.classes_per_experience
        experience_classes = [list(range(i * k, (i + 1) * k)) for i in range(suite.n_experiences)]

    augment = _augmentation() if suite.augment else None
    streams: dict[str, list] = {}
    source_tensors: dict[str, list] = {"train": [], "test": []}
    source_ids: dict[str, list] = {"train": [], "test": []}  # base-set index of each image of a subset task
    for split, (x, y) in splits.items():
        experiences = []
        for eid, classes in enumerate(experience_classes):
            if suite.permuted or suite.rotated:
                x_exp, y_exp = x, y
            else:
                keep = torch.isin(y, torch.tensor(classes))
                x_exp, y_exp = x[keep], y[keep]
            source = None
            if split == "train" and suite.train_per_task and suite.train_per_task < len(y_exp):
                # A seeded subset per task (long streams would not fit in memory at 60000 images each).
                keep = torch.randperm(len(y_exp), generator=torch.Generator().manual_seed(seed * 1000 + eid))
                keep = keep[:suite.train_per_task].sort().values
                x_exp, y_exp, source = x_exp[keep], y_exp[keep], keep
            if split == "test" and suite.test_per_task and suite.test_per_task < len(y_exp):
                # A seeded test subset per task, fixed across seeds (the seed changes the permutation, not
                # which images measure it): T^2 evaluations of a long stream at 10000 images each dominate its time.
                keep = torch.randperm(len(y_exp), generator=torch.Generator().manual_seed(7_000_003 + eid))
                keep = keep[:suite.test_per_task].sort().values
                x_exp, y_exp = x_exp[keep], y_exp[keep]
            # The task's transform comes after the subset: it acts image by image, so the result is the same,
            # and a 10000-of-60000 subset rotates 6x fewer images (a rotated-fmnist build took 17 s of CPU).
            if suite.permuted:
                x_exp = x_exp.flatten(2)[:, :, permutations[eid]].view_as(x_exp)
            elif suite.rotated:
                x_exp = rotate_images(x_exp, rotation_angles(suite.n_experiences)[eid], suite.dataset)
            task_label = eid if scenario == "task" else 0
            source_tensors[split].append((x_exp, y_exp, torch.full_like(y_exp, task_label)))
            source_ids[split].append(source)
            experiences.append(
                tensor_dataset(
                    x_exp, y_exp,
                    targets=y_exp.tolist(),
                    task_labels=[task_label] * len(y_exp),
                    transform_groups={"train": (augment, None), "eval": (None, None)},
                    initial_transform_group="train" if split == "train" else "eval",
                )
            )
        streams[split] = experiences

    bm = with_task_labels(with_classes_timeline(benchmark_from_datasets(train=streams["train"], test=streams["test"])))
    for split, stream in (("train", bm.train_stream), ("test", bm.test_stream)):
        for experience, tensors, ids in zip(stream, source_tensors[split], source_ids[split]):
            if ids is not None:  # which base images a task drew (train_per_task): hold_out holds out by identity
                experience.nlbench_source_ids = ids
            # with_classes_timeline stores sets, but Avalanche's own IncrementalClassifier and
            # MultiHeadClassifier index tensors with them, which needs a sequence.
            experience.classes_in_this_experience = sorted(experience.classes_in_this_experience)
            experience.nlbench_tensors = tensors  # (x, y, task) for the fast data path (nlbench.data.fastpath)
    return Benchmark(suite, scenario, bm.train_stream, bm.test_stream, experience_classes)


def hold_out(benchmark: Benchmark, fraction: float, seed: int) -> Benchmark:
    """Continual-learning-legal validation: split each training experience by a seeded permutation;
    the held-out part replaces the test stream, the rest is what the run trains on.

    Experience i holds out the first `round(fraction * n_i)` indices of `randperm(n_i)` (at least one
    example) for validation. The generator is seeded by `seed` and n_i, not by i: experiences built from
    the same images in the same order (permuted or rotated streams) hold out the same images, so no
    held-out image is trained on under another transformation. When the tasks draw different subsets of
    the same images (`train_per_task`), positions name different images in different tasks, so the
    held-out images are chosen by identity instead: every base image gets one seeded uniform score, and
    an image scoring below `fraction` is held out in every task that draws it (about `fraction * n_i`
    per task, at least one). The test set is never read by such a run, and no validation example is ever
    trained on in any task (tests/test_tune.py checks both). Avalanche's subsets keep each dataset's
    transforms; the validation subsets are put in eval mode (no augmentation).
    """
    import torch
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    if not 0.0 < fraction < 1.0:
        raise UserError(f"the validation fraction must be in (0, 1), got {fraction}")
    parts: dict[str, list] = {"train": [], "test": []}
    tensors: dict[str, list] = {"train": [], "test": []}
    ids = [getattr(e, "nlbench_source_ids", None) for e in benchmark.train_stream]
    scores = None
    if all(i is not None for i in ids) and ids:
        size = int(max(int(i.max()) for i in ids)) + 1
        scores = torch.rand(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + 17))
    held_ids: dict[str, list] = {"train": [], "test": []}
    for experience, base_ids in zip(benchmark.train_stream, ids):
        n = len(experience.dataset)
        if scores is not None:
            held = scores[base_ids] < fraction
            if not held.any():  # at least one validation example
                held[int(torch.argmin(scores[base_ids]))] = True
            if held.all():
                held[int(torch.argmax(scores[base_ids]))] = False
            indices = {"test": held.nonzero().flatten(), "train": (~held).nonzero().flatten()}
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + n))
            n_val = min(n - 1, max(1, round(fraction * n)))
            indices = {"test": order[:n_val].sort().values, "train": order[n_val:].sort().values}
        source = getattr(experience, "nlbench_tensors", None)
        for split, idx in indices.items():
            subset = experience.dataset.subset(idx.tolist())
            parts[split].append(subset.eval() if split == "test" else subset)
            tensors[split].append(None if source is None else tuple(t[idx] for t in source))
            held_ids[split].append(None if base_ids is None else base_ids[idx])
    bm = with_task_labels(with_classes_timeline(benchmark_from_datasets(train=parts["train"], test=parts["test"])))
    for split, stream in (("train", bm.train_stream), ("test", bm.test_stream)):
        for experience, held, base in zip(stream, tensors[split], held_ids[split]):
            experience.classes_in_this_experience = sorted(experience.classes_in_this_experience)
            if held is not None:
                experience.nlbench_tensors = held
            if base is not None:
                experience.nlbench_source_ids = base
    return Benchmark(benchmark.suite, benchmark.scenario, bm.train_stream, bm.test_stream, benchmark.experience_classes)
