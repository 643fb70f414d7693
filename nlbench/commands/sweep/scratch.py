"""Scratch folders of sweep and tune drivers (`$TMPDIR/nlbench-sweep-*`, `$TMPDIR/nlbench-tune-*`): the
spec files and logs of their local runs.

Each folder holds an `owner` file locked for its driver's life. A driver killed by SIGKILL cannot remove
its folder; the next sweep or tune removes every such folder whose lock is free (its owner is gone), and
no other: a live driver's folder, another user's, or one without an `owner` file (a driver that is just
starting, or an older nlbench's) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: scratch folders are only removed by their own driver
    fcntl = None  # type: ignore[assignment]

SWEEP_PREFIX = "nlbench-sweep-"
TUNE_PREFIX = "nlbench-tune-"
PREFIXES = (SWEEP_PREFIX, TUNE_PREFIX)


def make_workdir(prefix: str = SWEEP_PREFIX) -> tuple[Path, int | None]:
    """A scratch folder for this driver, with its `owner` file locked until the process ends.

    The lock is taken on a file under a temporary name that is then renamed to `owner`, so another
    driver never sees an `owner` file that is not locked yet.
    """
    remove_dead_workdirs()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    if fcntl is None:
        return workdir, None
    fd = os.open(workdir / ".owner", os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the runs
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.rename(workdir / ".owner", workdir / "owner")
    return workdir, fd


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """`make_workdir(prefix)` for the block; removed, and its lock dropped, when the block ends."""
    workdir, fd = make_workdir(prefix)
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if fd is not None:
            os.close(fd)


def remove_dead_workdirs(tmp: Path | None = None) -> list[Path]:
    """Remove the scratch folders of sweep and tune drivers that died (their `owner` lock is free); the list."""
    removed: list[Path] = []
    if fcntl is None:
        return removed
    for prefix in PREFIXES:
        for folder in Path(tmp or tempfile.gettempdir()).glob(f"{prefix}*"):
            try:
                if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.geteuid():
                    continue
                fd = os.open(folder / "owner", os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: its driver is alive
                continue
            else:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            finally:
                os.close(fd)
    return removed
