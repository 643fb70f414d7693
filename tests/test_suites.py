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
    if not suite.domain_shift:  # class-incremental: experiences partition the classes
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


# --------------------------------------------------------------------------------------------------
# Domain-incremental Fashion-MNIST (real data: Debian's dataset-fashion-mnist)


@pytest.fixture(scope="module")
def fmnist_test_images():
    from nlbench.data.readers import DEFAULT_DATA_ROOT, load_arrays
    from nlbench.data.streams import _to_model_tensor

    try:
        x, y = load_arrays("fashion-mnist", DEFAULT_DATA_ROOT, train=False, download=False)
    except DataUnavailable:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return _to_model_tensor(x, "fashion-mnist", (1, 28, 28)), y.long()


def _fmnist(name, seed, n_tasks, scenario="domain"):
    from nlbench.data.readers import DEFAULT_DATA_ROOT
    from nlbench.data.suites import configure_suite

    suite = configure_suite(name, {"n_tasks": n_tasks, "train_per_task": 500})
    return build_benchmark(suite, scenario, seed=seed, data_root=DEFAULT_DATA_ROOT, download=False)


def test_permuted_fmnist_permutations_are_seeded_and_distinct_with_all_classes(fmnist_test_images, offline):
    x, y = fmnist_test_images
    a, again, other = _fmnist("permuted-fmnist", 0, 3), _fmnist("permuted-fmnist", 0, 3), _fmnist("permuted-fmnist", 1, 3)
    generator = torch.Generator().manual_seed(0)
    expected = [torch.randperm(784, generator=generator) for _ in range(3)]  # the declared seeding
    assert len({tuple(p.tolist()) for p in expected}) == 3
    for i, exp in enumerate(a.test_stream):
        xt, yt, _ = exp.nlbench_tensors
        assert torch.equal(xt, x.flatten(2)[:, :, expected[i]].view_as(x)) and torch.equal(yt, y)
        assert torch.equal(xt, again.test_stream[i].nlbench_tensors[0])
        assert not torch.equal(xt, other.test_stream[i].nlbench_tensors[0])
    for split in (a.train_stream, a.test_stream):
        for exp in split:
            assert sorted(set(exp.nlbench_tensors[1].tolist())) == list(range(10)) == exp.classes_in_this_experience
    assert [len(e.dataset) for e in a.train_stream] == [500] * 3  # train_per_task: a seeded subset


def test_rotated_fmnist_rotates_as_declared_with_all_classes(fmnist_test_images, offline):
    from nlbench.data.suites import configure_suite, rotation_angles

    x, y = fmnist_test_images
    assert rotation_angles(10) == [18.0 * i for i in range(10)] and configure_suite("rotated-fmnist").n_experiences == 10
    b = _fmnist("rotated-fmnist", 0, 2)  # angles 0 and 90: a quarter turn is exact on the pixel grid
    x0, x1 = b.test_stream[0].nlbench_tensors[0], b.test_stream[1].nlbench_tensors[0]
    assert torch.equal(x0, x)
    assert torch.allclose(x1, torch.rot90(x, 1, dims=(2, 3)), atol=1e-4)  # counter-clockwise
    four = _fmnist("rotated-fmnist", 3, 4)  # 0, 45, 90, 135 degrees; the seed does not move the angles
    assert torch.allclose(four.test_stream[2].nlbench_tensors[0], x1, atol=1e-4)
    assert not torch.allclose(four.test_stream[1].nlbench_tensors[0], x0, atol=1e-2)
    for exp in four.train_stream:
        assert sorted(set(exp.nlbench_tensors[1].tolist())) == list(range(10))
    task = _fmnist("rotated-fmnist", 0, 2, scenario="task")
    assert [exp.task_label for exp in task.train_stream] == [0, 1]


def test_suite_options_are_validated_and_hashed_only_when_set():
    plain = resolve_spec("permuted-fmnist", "adam", device="cpu")
    assert plain.scenario == "domain" and plain.suite_options == () and "suite_options" not in plain.identity()
    assert resolve_spec("permuted-fmnist", "adam", device="cpu", suite_options={"n_tasks": "10"}).run_id == plain.run_id
    longer = resolve_spec("permuted-fmnist", "adam", device="cpu", suite_options={"n_tasks": "50"})
    assert longer.suite_options == (("n_tasks", 50),) and longer.run_id != plain.run_id
    with pytest.raises(UserError, match="n_tasks=51"):
        resolve_spec("rotated-fmnist", "adam", device="cpu", suite_options={"n_tasks": 51})
    with pytest.raises(UserError, match="unknown suite option 'regime' for permuted-fmnist; valid: n_tasks"):
        resolve_spec("permuted-fmnist", "adam", device="cpu", suite_options={"regime": "mixture"})
    assert resolve_spec("permuted-fmnist", "adam", device="cpu", scenario="task").head == "multi"


# --------------------------------------------------------------------------------------------------
# Every strategy on task-incremental streams, with both heads


def _registered():
    """Every registered strategy that declares the task scenario (DER declares class and domain only)."""
    from nlbench.core.registry import strategies

    return sorted(n for n, s in strategies().items() if s.scenarios is None or "task" in s.scenarios)


@pytest.mark.slow  # every registered strategy, 5 experiences each (~1 CPU-minute per head)
@pytest.mark.parametrize("head", ["mask", "multi"])
def test_every_strategy_runs_task_incremental_split_digits(head):
    """One experience-pair stream is enough to hit every code path (new heads, masks, buffers)."""
    from nlbench.data.readers import DEFAULT_DATA_ROOT

    benchmark = build_benchmark(get_suite("split-digits"), "task", seed=0, data_root=DEFAULT_DATA_ROOT)
    failures = {}
    for name in _registered():
        spec = resolve_spec("split-digits", name, device="cpu", scenario="task", head=head, epochs=1)
        result = run_one(spec, benchmark=benchmark)
        if result["status"] != "completed" or len(result["accuracy_matrix"]) != 5:
            failures[name] = (result["status"], str(result["error"]).splitlines()[:1])
    assert not failures, failures


@pytest.mark.slow  # every strategy x 2 heads on split-fmnist's file format (minutes)
@pytest.mark.parametrize("head", ["mask", "multi"])
def test_every_strategy_runs_task_incremental_split_fmnist(head, data_root, offline):
    benchmark = build_benchmark(get_suite("split-fmnist"), "task", seed=0, data_root=data_root)
    failures = {}
    for name in _registered():
        result = run_one(resolve_spec("split-fmnist", name, device="cpu", scenario="task", head=head, batch_size=32),
                         benchmark=benchmark)
        if result["status"] != "completed":
            failures[name] = (result["status"], str(result["error"]).splitlines()[:1])
    assert not failures, failures


@pytest.mark.parametrize("name", ["rotated-fmnist", "permuted-fmnist"])
def test_a_task_subset_is_the_subset_of_the_transformed_task(name, offline):
    """build_benchmark transforms only the train_per_task subset (6x fewer images to rotate); that must give
    exactly the images the whole transformed task would give at the subset's indices."""
    from nlbench.data.readers import DEFAULT_DATA_ROOT, load_arrays
    from nlbench.data.streams import _to_model_tensor, rotate_images
    from nlbench.data.suites import rotation_angles

    try:
        x, _ = load_arrays("fashion-mnist", DEFAULT_DATA_ROOT, train=True, download=False)
    except DataUnavailable:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    x = _to_model_tensor(x, "fashion-mnist", (1, 28, 28))
    bm = _fmnist(name, 5, 4)  # rotated: 0, 45, 90, 135 degrees (45 interpolates every pixel)
    generator = torch.Generator().manual_seed(5)
    permutations = [torch.randperm(784, generator=generator) for _ in range(4)]
    for task in (1, 3):
        exp = bm.train_stream[task]
        if name == "rotated-fmnist":
            whole = rotate_images(x, rotation_angles(4)[task], "fashion-mnist")
        else:
            whole = x.flatten(2)[:, :, permutations[task]].view_as(x)
        assert len(exp.nlbench_source_ids) == 500
        assert torch.equal(exp.nlbench_tensors[0], whole[exp.nlbench_source_ids])
