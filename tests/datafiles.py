"""Small dataset files in the real on-disk formats, for tests that read them with torchvision.

The images are deterministic and learnable: each class draws a bright block at a
class-dependent position and brightness on a dark noisy background, so a classifier trained on
them should beat chance. Labels are balanced: every class appears equally often (exactly so
when the count is a multiple of the number of classes).

`patterned_images` is public so a test can rebuild exactly what a writer wrote; each writer's
docstring says which seeds it used for which file.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

CIFAR10_LABEL_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

_GRID = 4  # class blocks sit on a 4x4 grid; classes beyond 16 reuse positions at lower brightness


def patterned_images(n: int, n_classes: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 images of `shape` ([H, W] or [H, W, C]) and int64 labels, balanced over `n_classes`.

    Class c lights block c % 16 of a 4x4 grid at brightness 255 - 20 * (c // 16), plus noise;
    the background is noise in [0, 60).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    images = rng.integers(0, 60, size=(n, *shape)).astype(np.int16)
    block_h, block_w = shape[0] // _GRID, shape[1] // _GRID
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % (_GRID * _GRID), _GRID)
        level = 255 - 20 * (int(label) // (_GRID * _GRID))
        block = images[i, row * block_h : (row + 1) * block_h, col * block_w : (col + 1) * block_w]
        block[...] = level - rng.integers(0, 30, size=block.shape)
    return images.astype(np.uint8), labels


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write the 4 uncompressed idx files torchvision's MNIST reader wants under root/folder/raw.

    Use folder="FashionMNIST" for Fashion-MNIST. Train data is
    `patterned_images(n_train, 10, (28, 28), seed)`, test data uses seed + 1. Returns the raw folder.
    """
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, split_seed in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = patterned_images(n, 10, (28, 28), split_seed)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """An idx3 file: big-endian magic 2051, count, rows, cols, then the uint8 pixels row-major."""
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", IDX_IMAGES_MAGIC, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """An idx1 file: big-endian magic 2049, count, then one uint8 per label."""
    path.write_bytes(struct.pack(">II", IDX_LABELS_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes())


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """HWC images as CIFAR stores them: one row of 3072 bytes, the R, G and B planes each row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32))


def write_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> Path:
    """Write cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} under root.

    Batch i (1..5) is `patterned_images(n_per_batch, 10, (32, 32, 3), seed + i - 1)`, test_batch
    uses seed + 5 with n_per_batch images. Returns the folder.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", seed + i - 1) for i in range(1, 6)]
    for name, batch_label, batch_seed in batches + [("test_batch", "testing batch 1 of 1", seed + 5)]:
        images, labels = patterned_images(n_per_batch, 10, (32, 32, 3), batch_seed)
        _write_pickle(
            folder / name,
            {
                "batch_label": batch_label,
                "labels": labels.tolist(),
                "data": cifar_rows(images),
                "filenames": [f"{name}_{j:05d}.png" for j in range(n_per_batch)],
            },
        )
    _write_pickle(
        folder / "batches.meta",
        {"num_cases_per_batch": n_per_batch, "label_names": CIFAR10_LABEL_NAMES, "num_vis": 3 * 32 * 32},
    )
    return folder


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """Write cifar-100-python/{train, test, meta} under root.

    Train is `patterned_images(n_train, 100, (32, 32, 3), seed)`, test uses seed + 1. Coarse
    label = fine % 20 (five fine classes per coarse one, as in the real set; the real mapping
    differs). Label names are synthetic. Returns the folder.
    """
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch_label, n, split_seed in (
        ("train", "training batch 1 of 1", n_train, seed),
        ("test", "testing batch 1 of 1", n_test, seed + 1),
    ):
        images, labels = patterned_images(n, 100, (32, 32, 3), split_seed)
        _write_pickle(
            folder / name,
            {
                "filenames": [f"{name}_{j:05d}.png" for j in range(n)],
                "batch_label": batch_label,
                "fine_labels": labels.tolist(),
                "coarse_labels": (labels % 20).tolist(),
                "data": cifar_rows(images),
            },
        )
    _write_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
        },
    )
    return folder


def _write_pickle(path: Path, batch: dict[str, object]) -> None:
    """Pickle protocol 2, as the real files (written by Python 2).

    The real files' keys are Python 2 str, which torchvision's pickle.load(..., encoding="latin1")
    turns into str ("data", "labels"); a reader using encoding="bytes" would see b"data". Python 3
    cannot write Python 2 str, so the keys here are written as str: what torchvision reads either way.
    """
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
