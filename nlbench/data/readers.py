"""Raw arrays for the benchmark datasets, read from disk with torchvision's own readers.

This is the layer under the benchmark suites: it finds the files, reads them with the real
torchvision readers (so a directory that torchvision can use is a directory nlbench can use,
and the other way round), and turns every way of not getting the data (missing files, a failed
download, a corrupt or unreadable file) into one `DataUnavailable` whose message names the
files and says how to provide them, instead of a torchvision traceback.
"""

from __future__ import annotations

import gzip
import http.client
import os
import pickle
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST, VisionDataset
from torchvision.datasets.mnist import read_image_file, read_label_file

from nlbench.data.download import OFFLINE_HINT, unreachable_note
from nlbench.errors import DataUnavailable, UserError
from nlbench.io import atomic_write_bytes

DEFAULT_DATA_ROOT: Path = Path("~/.cache/nlbench/data").expanduser()
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")

# The digits split must not move with a run's seed: results from different seeds have to be
# measured on the same test images to be comparable.
_DIGITS_SPLIT_SEED = 0
_DIGITS_TEST_FRACTION = 0.3

# What torchvision's idx reader (mnist.read_sn3_pascalvincent_tensor and read_image_file /
# read_label_file) raises on a bad file: AssertionError for a magic number outside the idx
# range, KeyError for an idx type code it has no dtype for, ValueError for a file cut inside
# the header or not a whole number of elements, or the wrong number of dimensions, TypeError
# for a non-uint8 dtype, RuntimeError when the payload does not fill the shape in the header
# (truncated or padded).
_IDX_ERRORS: tuple[type[Exception], ...] = (AssertionError, KeyError, ValueError, TypeError, RuntimeError)

# What unpickling a bad CIFAR batch raises inside torchvision's CIFAR10.__init__: EOFError and
# pickle.UnpicklingError for truncation, ValueError (UnicodeDecodeError included) and the
# other exceptions the pickle docs list (AttributeError, ImportError, IndexError) for
# corruption; KeyError or TypeError when the object is not a batch dict, ValueError when the
# pixel data does not reshape to 3x32x32 images.
_PICKLE_ERRORS: tuple[type[Exception], ...] = (
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    TypeError,
)

# What a failed torchvision download raises: MNIST wraps its mirrors' errors in RuntimeError,
# CIFAR lets urllib's URLError (an OSError) through; RuntimeError is also a checksum
# mismatch, HTTPException a dropped connection, TarError/EOFError/zlib.error a broken archive.
_DOWNLOAD_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    OSError,
    http.client.HTTPException,
    tarfile.TarError,
    EOFError,
    zlib.error,
)


class _CIFAR10(CIFAR10):
    """torchvision's CIFAR-10 reader with an existence check in place of its md5 check.

    torchvision compares every batch (and, in `_load_meta`, the meta file) with the md5 sum of
    the official release, so any other faithful copy (a re-pickled batch, a subset, a test
    fixture) is refused as "not found or corrupted". Unpickling stays torchvision's, and a
    truly corrupt file still fails there, where `load_arrays` reports it by name.
    """

    meta = {**CIFAR10.meta, "md5": None}  # torchvision's check_integrity(path, None) only tests existence

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)


class _CIFAR100(_CIFAR10, CIFAR100):
    """CIFAR-100 with the same existence check; file lists and folder come from CIFAR100."""

    meta = {**CIFAR100.meta, "md5": None}


@dataclass(frozen=True)
class _Spec:
    """Where a torchvision dataset lives under a data root, its files, and the class that reads it."""

    title: str
    reader: type[VisionDataset]
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_files: tuple[str, ...]
    format_hint: str  # what a good file looks like, for the corrupt-file message

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files + self.meta_files

    def split_files(self, train: bool) -> tuple[str, ...]:
        """The files torchvision reads for one split, in the order it reads them."""
        return (self.train_files if train else self.test_files) + self.meta_files

    @property
    def is_idx(self) -> bool:
        return issubclass(self.reader, MNIST)


def _idx_spec(title: str, reader: type[MNIST]) -> _Spec:
    # The names torchvision's MNIST._check_exists and _load_data use: the resources without ".gz".
    files = [name.removesuffix(".gz") for name, _ in reader.resources]
    train = tuple(sorted(name for name in files if name.startswith("train-")))
    test = tuple(sorted(name for name in files if name.startswith("t10k-")))
    hint = "an idx file starts with magic 2051 (images) or 2049 (labels) and holds the bytes its header announces"
    return _Spec(title, reader, f"{reader.__name__}/raw", train, test, (), hint)


def _cifar_spec(title: str, reader: type[_CIFAR10]) -> _Spec:
    return _Spec(
        title,
        reader,
        reader.base_folder,
        tuple(name for name, _ in reader.train_list),
        tuple(name for name, _ in reader.test_list),
        (reader.meta["filename"],),
        "a CIFAR file is a pickled dict; a batch holds 'data' rows of 3072 bytes and their labels",
    )


_SPECS: dict[str, _Spec] = {
    "mnist": _idx_spec("MNIST", MNIST),
    "fashion-mnist": _idx_spec("Fashion-MNIST", FashionMNIST),
    "cifar10": _cifar_spec("CIFAR-10", _CIFAR10),
    "cifar100": _cifar_spec("CIFAR-100", _CIFAR100),
}


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> Path:
    """The data root to use: the explicit argument, else $NLBENCH_DATA, else DEFAULT_DATA_ROOT."""
    if data_root is not None:
        return Path(data_root).expanduser()
    from_env = os.environ.get("NLBENCH_DATA")
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_DATA_ROOT


def expected_files(dataset: str, root: Path) -> list[Path]:
    """Every file the loader for `dataset` needs under `root` (none for digits, which ships with sklearn).

    All splits' files are listed because torchvision's readers refuse to start without all of them.
    """
    if dataset == "digits":
        return []
    spec = _spec(dataset)
    return [root / spec.folder / name for name in spec.files]


def load_arrays(dataset: str, root: Path, train: bool, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split of `dataset`, as torchvision stores them.

    MNIST and Fashion-MNIST give uint8 [N, 28, 28], CIFAR uint8 [N, 32, 32, 3] (HWC), digits
    float32 [N, 8, 8] in [0, 1]; labels are int64 [N]. Fashion-MNIST is taken from Debian's
    dataset-fashion-mnist package when it is not under `root`. Missing files are downloaded by
    torchvision when `download` is true and $NLBENCH_OFFLINE is not "1".

    Raises DataUnavailable when the files are missing, unreadable or corrupt.
    """
    if dataset == "digits":
        return _load_digits(train)
    spec = _spec(dataset)
    _check_root(root)
    if dataset == "fashion-mnist":
        root = _discover_debian_fmnist(spec, root)
    missing = _missing_files(spec, root)
    download_note = ""
    if missing:
        if not download:
            download_note = " No download was attempted (downloads disabled)."
        elif os.environ.get("NLBENCH_OFFLINE") == "1":
            download_note = " No download was attempted because NLBENCH_OFFLINE=1."
        else:  # offline, fail at once rather than after torchvision's retries (nlbench.data.download)
            download_note = unreachable_note(spec.reader) or _try_download(spec, root, train)
            missing = _missing_files(spec, root)
    if missing:
        raise DataUnavailable(_missing_message(spec, root, missing) + download_note)
    x, y = _read(spec, root, train)
    if len(x) != len(y):
        raise DataUnavailable(
            f"{spec.title} files in {root / spec.folder} disagree: {len(x)} images but {len(y)} labels "
            f"for the {'train' if train else 'test'} split. Replace them with a consistent copy."
        )
    return x, y


def _spec(dataset: str) -> _Spec:
    try:
        return _SPECS[dataset]
    except KeyError:
        raise UserError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}") from None


def _load_digits(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits, scaled from 0..16 to [0, 1], split 70/30 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        bunch.target,
        test_size=_DIGITS_TEST_FRACTION,
        stratify=bunch.target,
        random_state=_DIGITS_SPLIT_SEED,
    )
    x, y = (x_train, y_train) if train else (x_test, y_test)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def _check_root(root: Path) -> None:
    """A data root that exists but is not a directory can only be a mistake in --data-root / NLBENCH_DATA."""
    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        return  # nothing there yet: reported as missing files, or created by a download
    except OSError as exc:
        raise DataUnavailable(f"cannot access the data root {root}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise DataUnavailable(
            f"the data root {root} is not a directory; pass --data-root DIR or set NLBENCH_DATA to a directory."
        )


def _missing_files(spec: _Spec, root: Path) -> list[Path]:
    """The expected files that do not exist; a file that exists but cannot be used is an error."""
    missing = []
    for path in (root / spec.folder / name for name in spec.files):
        try:
            mode = path.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            missing.append(path)
            continue
        except OSError as exc:
            raise DataUnavailable(f"cannot read {spec.title} file {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            raise DataUnavailable(f"{spec.title} file {path} is not a regular file; replace it with the data file.")
    return missing


def _missing_message(spec: _Spec, root: Path, missing: list[Path]) -> str:
    folder = root / spec.folder
    message = (
        f"{spec.title} data not found: missing {', '.join(path.name for path in missing)} in {folder}. "
        f"Put them there, or pass --data-root DIR (or set NLBENCH_DATA=DIR) for a DIR that holds "
        f"{spec.folder}/{{{','.join(spec.files)}}}"
    )
    if spec.reader is FashionMNIST:
        message += f"; on Debian/Ubuntu, `apt-get install dataset-fashion-mnist` provides them in {DEBIAN_FMNIST_DIR}"
    return message + ". torchvision downloads them into the data root when online."


def _discover_debian_fmnist(spec: _Spec, root: Path) -> Path:
    """The root to read Fashion-MNIST from, after filling in missing files from Debian's package.

    The package ships the idx files gzipped. They are unpacked rather than linked because
    torchvision only reads the unpacked names, and for .gz files it checks md5 sums that
    Debian's copies need not match, then tries to download. When `root` cannot be written,
    they are unpacked into DEFAULT_DATA_ROOT instead, which is returned.
    """
    sources = [DEBIAN_FMNIST_DIR / f"{name}.gz" for name in spec.files]
    if not _missing_files(spec, root) or not all(source.is_file() for source in sources):
        return root
    try:
        _unpack_missing(spec, root, sources)
        return root
    except OSError as exc:
        fallback = DEFAULT_DATA_ROOT
        if fallback == root:
            raise DataUnavailable(
                f"cannot unpack Fashion-MNIST from {DEBIAN_FMNIST_DIR} into {root / spec.folder}: {exc}"
            ) from None
        try:
            if _missing_files(spec, fallback):
                _unpack_missing(spec, fallback, sources)
        except OSError as fallback_exc:
            raise DataUnavailable(
                f"cannot unpack Fashion-MNIST from {DEBIAN_FMNIST_DIR} into {root / spec.folder} ({exc}) "
                f"nor into {fallback / spec.folder} ({fallback_exc}); pass --data-root DIR for a writable DIR."
            ) from None
        return fallback


def _unpack_missing(spec: _Spec, root: Path, sources: list[Path]) -> None:
    """Gunzip each source whose target is missing; OSError means the target cannot be written."""
    missing = set(_missing_files(spec, root))
    for source, name in zip(sources, spec.files):
        if root / spec.folder / name in missing:
            atomic_write_bytes(root / spec.folder / name, _gunzipped(source))


def _gunzipped(source: Path) -> bytes:
    try:
        return gzip.decompress(source.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise DataUnavailable(f"cannot unpack {source}: {exc}; reinstall dataset-fashion-mnist.") from None



def _try_download(spec: _Spec, root: Path, train: bool) -> str:
    """Let torchvision download the dataset; on failure, say why, for the error message.

    A failed download leaves the folders torchvision made (root, raw/) empty; those are
    removed so an empty raw/ does not look like a half-provided dataset later.
    torchvision reads the split right after downloading it; a read error is caught here too and
    left for `_read` to report with the file's name, since the files are then present.
    """
    deepest = root / spec.folder
    new_dirs = [d for d in (deepest, *deepest.parents) if not d.exists()]
    try:
        spec.reader(root, train=train, download=True)
    except _DOWNLOAD_ERRORS + _IDX_ERRORS + _PICKLE_ERRORS as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return f" The download attempt failed: {reason}; {OFFLINE_HINT}."
    finally:
        for directory in new_dirs:  # deepest first
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue  # torchvision did not get as far as making this one
            except OSError:
                break  # not empty: keep it and everything above it
    return ""


def _read(spec: _Spec, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split with the torchvision reader, naming the bad file if it fails."""
    # CIFAR's RuntimeError is its "not found or corrupted", for files that vanished since the check.
    errors = _IDX_ERRORS if spec.is_idx else _PICKLE_ERRORS + (RuntimeError,)
    try:
        dataset = spec.reader(root, train=train, download=False)
    except OSError as exc:
        where = exc.filename or root / spec.folder
        raise DataUnavailable(f"cannot read {spec.title} file {where}: {exc.strerror or exc}") from None
    except errors as exc:
        raise DataUnavailable(_corrupt_message(spec, root, train, exc)) from None
    if spec.is_idx:
        return dataset.data, dataset.targets
    # CIFAR data is an HWC transpose view of the unpickled CHW rows; copy it to a contiguous array.
    return torch.from_numpy(np.ascontiguousarray(dataset.data)), torch.tensor(dataset.targets, dtype=torch.int64)


def _corrupt_message(spec: _Spec, root: Path, train: bool, exc: Exception) -> str:
    bad = _find_bad_file(spec, root, train)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where = f"{spec.title} file {bad}" if bad else f"one of the {spec.title} files in {root / spec.folder}"
    return (
        f"{where} is corrupt or not in the expected format ({detail}); {spec.format_hint}. "
        f"Replace it with the original file, or pass --data-root DIR (or set NLBENCH_DATA) for a good copy."
    )


def _find_bad_file(spec: _Spec, root: Path, train: bool) -> Path | None:
    """After a failed read, the first file of the split that fails on its own, if any.

    torchvision reports the parse error but not which file it was reading, so each file is read
    again alone: idx files with torchvision's own idx readers, CIFAR files unpickled the way
    torchvision does (latin1), where they must hold a dict.
    """
    for path in (root / spec.folder / name for name in spec.split_files(train)):
        try:
            if spec.is_idx:
                (read_image_file if "-images-" in path.name else read_label_file)(str(path))
            else:
                with open(path, "rb") as f:
                    if not isinstance(pickle.load(f, encoding="latin1"), dict):
                        return path
        except (_IDX_ERRORS if spec.is_idx else _PICKLE_ERRORS) + (OSError,):
            return path
    return None
