"""Every suite is a real Avalanche benchmark, read by torchvision from files in the true on-disk format."""

from __future__ import annotations

import pytest
import torch
from datafiles import write_cifar10, write_cifar100, write_mnist

from nlbench.errors import DataUnavailable, UserError
from nlbench.core.runner import run_one
from nlbench.core.spec import resolve_spec
from nlbench.data.streams import build_benchmark
from nlbench.data.suites import SUITES, get_suite


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, "MNIST", n_train=300, n_test=100)
    write_mnist(root, "FashionMNIST", n_train=300, n_test=100)
    write_cifar10(root, n_per_batch=40)
    write_cifar100(root, n_train=400, n_test=200)
    return root


@pytest.mark.parametrize("name", sorted(n for n, s in SUITES.items() if s.kind == "image"))
def test_suite_builds_its_stream(name, data_root, offline):
    suite = get_suite(name)
    benchmark = build_benchmark(suite, suite.default_scenario, seed=0, data_root=data_root)
    assert len(benchmark.train_stream) == len(benchmark.test_stream) == suite.n_experiences
    seen: set[int] = set()
    for train_exp, test_exp, classes in zip(benchmark.train_stream, benchmark.test_stream, benchmark.experience_classes):
        assert sorted(train_exp.classes_in_this_experience) == classes == sorted(test_exp.classes_in_this_experience)
        x, y, t = train_exp.dataset[0]
        assert tuple(x.shape) == suite.input_shape and x.dtype == torch.float32
        assert int(y) in classes and int(t) == 0
        seen |= set(classes)
    assert seen == set(range(suite.n_classes))
    if not suite.permuted:  # class-incremental: experiences partition the classes
        assert sum(len(c) for c in benchmark.experience_classes) == suite.n_classes


def test_alias_and_task_labels(data_root, offline):
    suite = get_suite("split-cifar")
    assert suite.name == "split-cifar10"
    benchmark = build_benchmark(suite, "task", seed=0, data_root=data_root)
    assert [exp.task_label for exp in benchmark.train_stream] == list(range(5))
    assert int(benchmark.test_stream[3].dataset[0][2]) == 3


def test_permuted_mnist_uses_one_seeded_permutation_per_experience(data_root, offline):
    suite = get_suite("permuted-mnist")
    a = build_benchmark(suite, "domain", seed=0, data_root=data_root)
    b = build_benchmark(suite, "domain", seed=0, data_root=data_root)
    c = build_benchmark(suite, "domain", seed=1, data_root=data_root)
    first = [exp.dataset[0][0] for exp in a.test_stream]
    assert torch.equal(first[0], b.test_stream[0].dataset[0][0])  # same seed, same stream
    assert not torch.equal(first[0], c.test_stream[0].dataset[0][0])  # another seed permutes differently
    assert not torch.equal(first[0], first[1])  # each experience has its own permutation
    assert torch.equal(first[0].flatten().sort().values, first[1].flatten().sort().values)  # of the same pixels


@pytest.mark.parametrize("suite_name, strategy", [("split-mnist", "replay"), ("split-cifar10", "adam"), ("split-cifar100", "der")])
def test_short_runs_on_each_file_format(suite_name, strategy, data_root, offline):
    suite = get_suite(suite_name)
    spec = resolve_spec(suite_name, strategy, device="cpu", epochs=1, batch_size=32,
                        backbone="cnn" if suite.input_shape[0] == 3 else None)
    result = run_one(spec, data_root=data_root)
    assert result["status"] == "completed", result["error"]
    assert len(result["accuracy_matrix"]) == suite.n_experiences


def test_missing_files_name_what_is_expected_and_where(tmp_path, offline):
    with pytest.raises(DataUnavailable) as err:
        build_benchmark(get_suite("split-cifar10"), "class", seed=0, data_root=tmp_path)
    message = str(err.value)
    assert "data_batch_1" in message and str(tmp_path) in message and "--data-root" in message


def test_unknown_suite_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown suite 'split-imagenet'; valid: .*split-digits"):
        get_suite("split-imagenet")


@pytest.mark.slow  # ~2 CPU-minutes: HopeViT (d=128, 4 layers) and a CMS ResNet-18 on 5 experiences
@pytest.mark.parametrize("strategy", ["hope", "cms"])
def test_nl_architectures_run_on_cifar_files(strategy, data_root, offline):
    """HopeViT (patches + readout token) and CMS-clocked ResNet stages on split-cifar10's real format."""
    spec = resolve_spec("split-cifar10", strategy, device="cpu", epochs=1, batch_size=32)
    result = run_one(spec, data_root=data_root)
    assert result["status"] == "completed", result["error"]
    assert len(result["accuracy_matrix"]) == 5 and "clocks" in result
