"""nlbench.data.readers against real files read by the real torchvision readers (no mocks)."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import (
    cifar_rows,
    patterned_images,
    write_cifar10,
    write_cifar100,
    write_idx_labels,
    write_mnist,
)

from nlbench.data import readers as data
from nlbench.data.readers import DEBIAN_FMNIST_DIR, expected_files, load_arrays, resolve_data_root
from nlbench.errors import DataUnavailable, UserError

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the network; the one that tests a download attempt undoes this."""
    monkeypatch.setenv("NLBENCH_OFFLINE", "1")


@pytest.fixture
def no_debian_fmnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide Debian's Fashion-MNIST so a test sees only what it put under its root."""
    monkeypatch.setattr(data, "DEBIAN_FMNIST_DIR", tmp_path / "no-debian-package")


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(("dataset", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_round_trip(tmp_path: Path, dataset: str, folder: str) -> None:
    write_mnist(tmp_path, folder=folder, n_train=200, n_test=100, seed=3)
    for train, n, seed in ((True, 200, 3), (False, 100, 4)):
        x, y = load_arrays(dataset, tmp_path, train=train, download=False)
        want_x, want_y = patterned_images(n, 10, (28, 28), seed)
        assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        assert np.array_equal(x.numpy(), want_x)
        assert np.array_equal(y.numpy(), want_y)
        assert torch.bincount(y).tolist() == [n // 10] * 10


def test_cifar10_round_trip(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_per_batch=20, seed=5)
    batches = [patterned_images(20, 10, (32, 32, 3), 5 + i) for i in range(5)]
    x, y = load_arrays("cifar10", tmp_path, train=True, download=False)
    assert x.shape == (100, 32, 32, 3) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.shape == (100,) and y.dtype == torch.int64
    assert np.array_equal(x.numpy(), np.concatenate([images for images, _ in batches]))
    assert np.array_equal(y.numpy(), np.concatenate([labels for _, labels in batches]))

    x, y = load_arrays("cifar10", tmp_path, train=False, download=False)
    want_x, want_y = patterned_images(20, 10, (32, 32, 3), 10)
    assert np.array_equal(x.numpy(), want_x) and np.array_equal(y.numpy(), want_y)


def test_cifar_layout_is_hwc() -> None:
    """A red-only image must come back with its pixels in channel 0 of the last axis."""
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[0, 1, 2, 0] = 200
    row = cifar_rows(image)[0]
    assert row[1 * 32 + 2] == 200 and row.sum() == 200  # R plane first, row-major


def test_cifar100_round_trip(tmp_path: Path) -> None:
    write_cifar100(tmp_path, n_train=200, n_test=100, seed=7)
    for train, n, seed in ((True, 200, 7), (False, 100, 8)):
        x, y = load_arrays("cifar100", tmp_path, train=train, download=False)
        want_x, want_y = patterned_images(n, 100, (32, 32, 3), seed)
        assert x.shape == (n, 32, 32, 3) and x.dtype == torch.uint8
        assert y.dtype == torch.int64
        assert np.array_equal(x.numpy(), want_x) and np.array_equal(y.numpy(), want_y)
        assert torch.bincount(y, minlength=100).tolist() == [n // 100] * 100


def test_synthetic_classes_are_learnable() -> None:
    """Nearest class mean, fitted on train, must be far above chance on test."""
    x_train, y_train = patterned_images(200, 10, (28, 28), 0)
    x_test, y_test = patterned_images(100, 10, (28, 28), 1)
    means = np.stack([x_train[y_train == c].reshape(-1, 784).mean(0) for c in range(10)])
    distances = ((x_test.reshape(-1, 1, 784).astype(np.float64) - means) ** 2).sum(-1)
    assert (distances.argmin(1) == y_test).mean() > 0.9


# --- digits ------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_disjoint(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    x_train, y_train = load_arrays("digits", tmp_path, train=True)
    x_test, y_test = load_arrays("digits", tmp_path, train=False)
    again_x, again_y = load_arrays("digits", tmp_path, train=True)
    assert torch.equal(x_train, again_x) and torch.equal(y_train, again_y)

    assert x_train.shape == (1257, 8, 8) and x_test.shape == (540, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) == 1.0

    train_counts, test_counts = torch.bincount(y_train), torch.bincount(y_test)
    assert len(train_counts) == len(test_counts) == 10
    full_counts = train_counts + test_counts
    assert torch.all((test_counts.double() - 0.3 * full_counts).abs() <= 1)

    # Every digits image is unique, so rows identify samples: the two splits partition the set.
    train_rows = {row.numpy().tobytes() for row in x_train.reshape(len(x_train), -1)}
    test_rows = {row.numpy().tobytes() for row in x_test.reshape(len(x_test), -1)}
    all_rows = {(row / 16.0).astype(np.float32).tobytes() for row in load_digits().data}
    assert not train_rows & test_rows
    assert train_rows | test_rows == all_rows


# --- Debian Fashion-MNIST ----------------------------------------------------------------


@pytest.mark.skipif(
    not DEBIAN_FMNIST_DIR.is_dir(),
    reason=f"{DEBIAN_FMNIST_DIR} is absent (apt-get install dataset-fashion-mnist)",
)
def test_real_debian_fashion_mnist(tmp_path: Path) -> None:
    x, y = load_arrays("fashion-mnist", tmp_path, train=True)
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [6000] * 10
    x, y = load_arrays("fashion-mnist", tmp_path, train=False)
    assert x.shape == (10000, 28, 28)
    assert torch.bincount(y).tolist() == [1000] * 10
    raw = tmp_path / "FashionMNIST" / "raw"
    assert sorted(path.name for path in raw.iterdir()) == sorted(IDX_NAMES)  # no temp files left
    assert all(path.is_file() and not path.is_symlink() for path in raw.iterdir())


def _fake_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Debian-like folder of gzipped synthetic idx files; returns the raw files it was made from."""
    source = write_mnist(tmp_path / "source", folder="FashionMNIST", seed=11)
    package = tmp_path / "debian"
    package.mkdir()
    for name in IDX_NAMES:
        (package / f"{name}.gz").write_bytes(gzip.compress((source / name).read_bytes()))
    monkeypatch.setattr(data, "DEBIAN_FMNIST_DIR", package)
    return source


def test_debian_discovery_fills_only_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _fake_debian_package(tmp_path, monkeypatch)
    root = tmp_path / "root"
    raw = write_mnist(root, folder="FashionMNIST", seed=99)
    (raw / "t10k-images-idx3-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").unlink()
    load_arrays("fashion-mnist", root, train=False)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert (raw / name).read_bytes() == (source / name).read_bytes()
    train_x, _ = load_arrays("fashion-mnist", root, train=True)
    assert np.array_equal(train_x.numpy(), patterned_images(200, 10, (28, 28), 99)[0])  # kept, not replaced


def test_debian_discovery_falls_back_when_root_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular file where FashionMNIST/ should be makes the root unwritable even for root."""
    source = _fake_debian_package(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    monkeypatch.setattr(data, "DEFAULT_DATA_ROOT", cache)
    root = tmp_path / "root"
    root.mkdir()
    (root / "FashionMNIST").write_text("not a folder")
    x, y = load_arrays("fashion-mnist", root, train=True)
    assert np.array_equal(x.numpy(), patterned_images(200, 10, (28, 28), 11)[0])
    for name in IDX_NAMES:
        assert (cache / "FashionMNIST" / "raw" / name).read_bytes() == (source / name).read_bytes()


# --- missing files -----------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_missing_files_are_named(tmp_path: Path, dataset: str, no_debian_fmnist: None) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DataUnavailable) as caught:
        load_arrays(dataset, root, train=True)
    message = str(caught.value)
    files = expected_files(dataset, root)
    assert files and all(path.name in message for path in files)
    assert str(files[0].parent) in message
    assert "--data-root" in message and "NLBENCH_DATA" in message and "NLBENCH_OFFLINE=1" in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (dataset == "fashion-mnist")
    assert list(root.iterdir()) == []  # nothing attempted, nothing created


def test_partly_missing_names_only_the_missing_file(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataUnavailable, match=r"missing t10k-labels-idx1-ubyte in "):
        load_arrays("mnist", tmp_path, train=True, download=True)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_failed_download_leaves_no_empty_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str
) -> None:
    """A real torchvision download attempt, made to fail at once by a proxy nobody listens on."""
    monkeypatch.delenv("NLBENCH_OFFLINE")
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    for bypass in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(bypass, raising=False)
    root = tmp_path / "new" / "root"
    with pytest.raises(DataUnavailable, match="download attempt failed") as caught:
        load_arrays(dataset, root, train=True)
    assert str(root) in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # root, its new parent and raw/ are all gone


# --- bad data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "magic"),
    [
        ("train-images-idx3-ubyte", 0),  # not idx at all: torchvision asserts
        ("train-images-idx3-ubyte", 0x0A03),  # idx type 10 has no dtype: KeyError
        ("train-images-idx3-ubyte", 2049),  # label magic in an image file
        ("train-labels-idx1-ubyte", 2051),  # image magic in a label file
    ],
)
def test_wrong_idx_magic_names_the_file(tmp_path: Path, name: str, magic: int) -> None:
    raw = write_mnist(tmp_path)
    path = raw / name
    path.write_bytes(struct.pack(">I", magic) + path.read_bytes()[4:])
    with pytest.raises(DataUnavailable, match="corrupt") as caught:
        load_arrays("mnist", tmp_path, train=True)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "keep"),
    [("t10k-images-idx3-ubyte", -100), ("t10k-labels-idx1-ubyte", -1), ("t10k-images-idx3-ubyte", 10)],
)
def test_truncated_idx_names_the_file(tmp_path: Path, name: str, keep: int) -> None:
    raw = write_mnist(tmp_path, folder="FashionMNIST")
    path = raw / name
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(DataUnavailable) as caught:
        load_arrays("fashion-mnist", tmp_path, train=False)
    assert str(path) in str(caught.value)


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, n_train=200)
    write_idx_labels(raw / "train-labels-idx1-ubyte", np.zeros(150, dtype=np.int64))
    with pytest.raises(DataUnavailable, match="200 images but 150 labels"):
        load_arrays("mnist", tmp_path, train=True)


@pytest.mark.parametrize(
    ("dataset", "write", "name", "train"),
    [
        ("cifar10", write_cifar10, "data_batch_3", True),
        ("cifar10", write_cifar10, "batches.meta", False),
        ("cifar100", write_cifar100, "test", False),
    ],
)
def test_truncated_cifar_pickle_names_the_file(
    tmp_path: Path, dataset: str, write: Callable[[Path], Path], name: str, train: bool
) -> None:
    folder = write(tmp_path)
    path = folder / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataUnavailable) as caught:
        load_arrays(dataset, tmp_path, train=train)
    assert str(path) in str(caught.value)


def test_garbage_cifar_pickle_names_the_file(tmp_path: Path) -> None:
    path = write_cifar10(tmp_path) / "data_batch_1"
    path.write_bytes(b"this is not a pickle" * 50)
    with pytest.raises(DataUnavailable) as caught:
        load_arrays("cifar10", tmp_path, train=True)
    assert str(path) in str(caught.value)


# --- unreadable roots --------------------------------------------------------------------


def test_root_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.write_text("not a folder")
    with pytest.raises(DataUnavailable, match="is not a directory") as caught:
        load_arrays("mnist", root, train=True)
    assert str(root) in str(caught.value)


def test_data_file_that_is_a_folder(tmp_path: Path) -> None:
    path = write_cifar10(tmp_path) / "test_batch"
    path.unlink()
    path.mkdir()
    with pytest.raises(DataUnavailable, match="not a regular file") as caught:
        load_arrays("cifar10", tmp_path, train=False)
    assert str(path) in str(caught.value)


_LOAD_EACH = """
import os, sys
from pathlib import Path
from nlbench.data.readers import load_arrays
from nlbench.errors import DataUnavailable
pairs = list(zip(sys.argv[1::2], sys.argv[2::2]))
try:
    os.listdir(pairs[0][1])
    print("NOT-ENFORCED")
    sys.exit()
except PermissionError:
    pass
for dataset, root in pairs:
    try:
        load_arrays(dataset, Path(root), train=True, download=False)
        print("LOADED")
    except DataUnavailable as exc:
        print("DataUnavailable:", exc)
"""


def _load_obeying_file_modes(cases: list[tuple[str, Path]]) -> list[str]:
    """load_arrays on each (dataset, root), reporting DataUnavailable messages, with file modes enforced.

    Root ignores file modes, so as root the loads run in a child process without the
    capabilities that let root bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).
    The first root must be unreadable; it is how the child checks that modes are enforced.
    """
    if os.geteuid() != 0:
        messages = []
        for dataset, root in cases:
            with pytest.raises(DataUnavailable) as caught:
                load_arrays(dataset, root, train=True, download=False)
            messages.append(str(caught.value))
        return messages
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is absent: cannot drop the DAC override")
    drop = "-dac_override,-dac_read_search"
    args = [str(part) for case in cases for part in case]
    child = subprocess.run(
        ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", sys.executable, "-c", _LOAD_EACH, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if child.returncode != 0 and "setpriv" in child.stderr:
        pytest.skip(f"running as root and setpriv cannot drop capabilities here: {child.stderr.strip()}")
    if child.stdout.startswith("NOT-ENFORCED"):
        pytest.skip("running as root and file modes are not enforced even without CAP_DAC_OVERRIDE")
    lines = child.stdout.splitlines()
    assert len(lines) == len(cases) and all(line.startswith("DataUnavailable:") for line in lines), (
        child.stdout + child.stderr
    )
    return lines


def test_permission_denied(tmp_path: Path) -> None:
    """A chmod 000 data root, and a chmod 000 file in a readable folder."""
    locked_root = tmp_path / "locked-root"
    write_mnist(locked_root)
    locked_file = write_cifar10(tmp_path / "locked-file") / "batches.meta"
    locked_root.chmod(0)
    locked_file.chmod(0)
    try:
        messages = _load_obeying_file_modes([("mnist", locked_root), ("cifar10", tmp_path / "locked-file")])
    finally:
        locked_root.chmod(0o755)
        locked_file.chmod(0o644)
    assert str(locked_root / "MNIST" / "raw" / "train-images-idx3-ubyte") in messages[0]
    assert str(locked_file) in messages[1]
    assert all("Permission denied" in message for message in messages)


# --- configuration -----------------------------------------------------------------------


def test_resolve_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NLBENCH_DATA", raising=False)
    assert resolve_data_root(None) == data.DEFAULT_DATA_ROOT
    assert data.DEFAULT_DATA_ROOT == Path.home() / ".cache" / "nlbench" / "data"
    monkeypatch.setenv("NLBENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root("~/d") == tmp_path / "d"


def test_unknown_dataset_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cifar100") as caught:
        load_arrays("svhn", tmp_path, train=True)
    assert not isinstance(caught.value, DataUnavailable)
