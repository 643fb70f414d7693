"""Claims on runs: which process trains a run, so several processes writing into one store train it once.

Several processes (two sweeps, a sweep and `nlbench run`) may write into one results directory at once.
Before a process trains a run it claims it: `claim` takes an exclusive, non-blocking `flock` on
`<run_dir>/claim` and writes its pid, host and start time there. The kernel drops the lock when the
holder dies, even by SIGKILL, so a claim never outlives its process and needs no timeout; a killed run
is simply claimed again by the next process. Whoever holds a claim re-checks the `done` marker before
training (another process may have finished the run meanwhile), and releases the claim (the file is
removed) only after the run's files are written. A holder SIGKILLed between writing the run and
releasing leaves an unlocked `claim` file in a finished run: `remove_stale` removes it, under the lock.
Locks on network filesystems are only as good as the filesystem's lock support; where `flock` is
unavailable, claims are skipped with a warning (two hosts could then train the same run twice, and the
store still holds it once).

Interrupts: a claim is taken with SIGINT/SIGTERM held (`nlbench.core.signals.deferred`), so it is
either not taken or taken and known to this process; a claim this process still holds when it exits (a
Ctrl-C between taking a claim and the block that releases it) is released at exit. A Ctrl-C therefore
never leaves a claim file behind; only SIGKILL does, and `remove_stale` cleans that.

Every function here takes the run's directory; `nlbench.core.store` maps (root, spec) to it.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no claims (see the module docstring)
    fcntl = None  # type: ignore[assignment]

from nlbench.core.signals import deferred
from nlbench.errors import UserError

CLAIM = "claim"


def process_identity() -> dict[str, Any]:
    """Who this process is, as recorded in claims and in result.json (`pid`, `host`)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


@dataclass
class Claim:
    """This process's claim on one run (see the module docstring); release it once the run is stored."""

    path: Path
    fd: int | None  # the locked claim file; None where file locks are unavailable
    released: bool = False

    def release(self) -> None:
        """Remove the claim file, then drop the lock (a waiting process re-checks `done` first)."""
        if self.released:
            return
        self.released = True
        _HELD.pop(id(self), None)
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # only when empty: a run claimed but never written leaves nothing
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# This process's claims not yet released, released at exit (see the module docstring).
_HELD: dict[int, "Claim"] = {}


@atexit.register
def _release_held() -> None:
    for held in list(_HELD.values()):
        held.release()


_UNSUPPORTED_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_warned_no_locks: set[str] = set()


def claim(directory: Path) -> Claim | None:
    """Claim the run in `directory` for this process; None when another live process holds the claim.

    The caller must re-check the `done` marker after claiming (the previous holder may have just
    finished the run) and release the claim after writing the run. A claim that cannot be written
    (a full disk, a read-only store) is a `UserError`: one line, before anything is trained.
    """
    try:
        with deferred():  # taken and registered whole, or not at all
            held = _claim(Path(directory))
            if held is not None:
                _HELD[id(held)] = held
        return held
    except OSError as err:
        raise UserError(f"cannot claim the run in {directory}: {err.strerror or err}"
                        f"{' (the disk is full)' if err.errno == errno.ENOSPC else ''}; "
                        "free space or choose another --out") from None


def _claim(directory: Path) -> Claim | None:
    path = directory / CLAIM
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the directory was removed by a releasing holder: make it again
            continue
        if fcntl is None:
            return _unlocked(path, fd, "this platform has no flock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as err:
            if err.errno in _UNSUPPORTED_LOCKS:
                return _unlocked(path, fd, err.strerror or str(err))
            os.close(fd)
            raise
        # The holder releases by removing the file, then unlocking: a lock on a removed file is no claim.
        if not _still_linked(path, fd):
            os.close(fd)
            continue
        info = {**process_identity(), "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        held = Claim(path, fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:
            held.release()
            raise
        return held


def _still_linked(path: Path, fd: int) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev)


def _unlocked(path: Path, fd: int, why: str) -> Claim:
    os.close(fd)
    where = str(path.parent.parent.parent)
    if where not in _warned_no_locks:
        _warned_no_locks.add(where)
        warnings.warn(f"file locks are not available under {where} ({why}): runs are not claimed, so two "
                      "processes writing there at once may train the same run twice", stacklevel=5)
    return Claim(path, None)


def holder(directory: Path) -> dict[str, Any]:
    """What the claim file in `directory` says about its holder (pid, host, since); {} when unknown."""
    try:
        data = json.loads((Path(directory) / CLAIM).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def live_holder(directory: Path) -> dict[str, Any] | None:
    """The holder of the claim in `directory` when a live process holds it, else None; changes nothing."""
    if fcntl is None:
        return None
    try:
        fd = os.open(Path(directory) / CLAIM, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder(directory)
    except OSError:  # locks unsupported here: nothing can be said
        return None
    finally:
        os.close(fd)  # also drops the shared lock, if taken
    return None


def remove_stale(directory: Path) -> bool:
    """Remove the claim file a SIGKILLed holder left in `directory`; True when one was removed.

    The file is removed while this process holds its lock, exactly as a holder releases it, so a
    process claiming the run at the same moment either sees the file gone or holds it first (and
    then it stays).
    """
    if fcntl is None:
        return False
    path = Path(directory) / CLAIM
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except (OSError, ValueError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _still_linked(path, fd):
            return False
        path.unlink()
        return True
    except OSError:  # held by a live process, locks unsupported, or a read-only store: leave it
        return False
    finally:
        os.close(fd)


def describe_holder(found: dict[str, Any]) -> str:
    if not found:
        return "another process"
    since = f" since {found['since']}" if found.get("since") else ""
    return f"pid {found.get('pid', '?')} on {found.get('host', '?')}{since}"


def wait_for(directory: Path, poll_s: float = 1.0) -> Claim:
    """Block until this process holds the claim in `directory` (another process may be running it)."""
    while True:
        held = claim(directory)
        if held is not None:
            return held
        time.sleep(poll_s)
