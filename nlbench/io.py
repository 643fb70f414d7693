"""Atomic file writes (readers see the old file or the whole new one, never a part) and reads that
never block (regular files only). Imports nothing of nlbench."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part.

    A temporary file in the same folder is fsynced, made world-readable (mkstemp creates it private,
    but results and datasets are meant to be shared) and renamed over `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


MAX_RECORD_BYTES = 256 * 2**20  # far above any run record; a bigger "record" is not one


def read_regular_text(path: Path, limit: int = MAX_RECORD_BYTES) -> str:
    """The text of `path` when it is a regular file of at most `limit` bytes; OSError otherwise.

    A FIFO, a socket or a device in place of a file is refused without blocking: the file is opened
    non-blocking and checked with fstat (a check before opening could be raced), so reading a
    damaged store never hangs.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"{info.st_size} bytes, more than a record can hold ({limit})", str(path))
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            limit -= len(chunk)
            if limit < 0:  # grew while being read
                raise OSError(errno.EFBIG, "grew past the size a record can hold", str(path))
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")
