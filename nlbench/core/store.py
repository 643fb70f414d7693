"""The results store: `results/<name>/<run_id>/{spec.json, result.json, done}`.

Every file is written atomically (a temporary file in the same directory, fsync, then `os.replace`),
and the `done` marker is written last. A run directory without `done` is an unfinished or killed run:
it is never loaded as a result and is simply re-run. `load_results` turns every finished run into one
row of a pandas DataFrame; corrupt or truncated files, and results of another schema version, are
skipped with a warning that names them.

Claims. Several processes (two sweeps, a sweep and `nlbench run`) may write into one results directory
at once. Before a process trains a run it claims it: `claim_run` takes an exclusive, non-blocking
`flock` on `<run_dir>/claim` and writes its pid, host and start time there. The kernel drops the lock
when the holder dies, even by SIGKILL, so a claim never outlives its process and needs no timeout; a
killed run is simply claimed again by the next sweep. Whoever holds a claim re-checks the `done` marker
before training (another process may have finished the run meanwhile), and releases the claim (the
file is removed) only after the run's files are written. Locks on network filesystems are only as good
as the filesystem's lock support; where `flock` is unavailable, claims are skipped with a warning (two
hosts could then train the same run twice, and the store still holds it once).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import tempfile
import threading
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

from nlbench.errors import UserError
from nlbench.io import atomic_write_text
from nlbench.core.spec import RunSpec

RESULT_SCHEMA = 1
DONE = "done"
CLAIM = "claim"


def run_dir(root: Path, spec: RunSpec) -> Path:
    return Path(root) / spec.name / spec.run_id


def is_done(root: Path, spec: RunSpec) -> bool:
    return (run_dir(root, spec) / DONE).exists()


def finished_result(root: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The stored result of `spec` if it finished with a reusable outcome, else None.

    `completed` and `diverged` are outcomes of the spec itself and are kept; a `failed` run (a crash,
    an out-of-memory error) says nothing about the method, so it is run again. A corrupt stored
    result is treated as absent and overwritten.
    """
    if not is_done(root, spec):
        return None
    try:
        result = read_run(run_dir(root, spec))[1]
    except ValueError:
        return None
    return result if result.get("status") in ("completed", "diverged") else None


def check_writable(root: Path) -> None:
    """Fail before training, not after it, when results cannot be written."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as err:
        raise UserError(f"results directory {root} is not writable: {err.strerror or err}") from None
    except ValueError as err:  # an embedded NUL byte
        raise UserError(f"results directory {str(root)!r} is not a valid path: {err}") from None


def check_run_name(name: str) -> None:
    """A run name (`--name`) is a directory inside the results directory: it must not leave it."""
    path = Path(name)
    if not name.strip() or "\0" in name or path.is_absolute() or ".." in path.parts or not path.parts:
        raise UserError(f"--name {name!r} must be a relative directory name inside the results directory "
                        "(not empty, no '..', not an absolute path)")


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
        with contextlib.suppress(FileNotFoundError):
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


_UNSUPPORTED_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_warned_no_locks: set[str] = set()


def claim_run(root: Path, spec: RunSpec) -> Claim | None:
    """Claim `spec`'s run for this process; None when another live process holds the claim.

    The caller must re-check the `done` marker after claiming (the previous holder may have just
    finished the run) and release the claim after writing the run.
    """
    directory = run_dir(root, spec)
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
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
            os.close(fd)
            continue
        info = {**process_identity(), "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return Claim(path, fd)


def _unlocked(path: Path, fd: int, why: str) -> Claim:
    os.close(fd)
    where = str(path.parent.parent.parent)
    if where not in _warned_no_locks:
        _warned_no_locks.add(where)
        warnings.warn(f"file locks are not available under {where} ({why}): runs are not claimed, so two "
                      "processes writing there at once may train the same run twice", stacklevel=3)
    return Claim(path, None)


def claim_holder(root: Path, spec: RunSpec) -> dict[str, Any]:
    """What the claim file of `spec` says about its holder (pid, host, since); {} when unknown."""
    try:
        data = json.loads((run_dir(root, spec) / CLAIM).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def live_claim(root: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The holder of `spec`'s claim when a live process holds it, else None; creates and changes nothing."""
    if fcntl is None:
        return None
    try:
        fd = os.open(run_dir(root, spec) / CLAIM, os.O_RDONLY)
    except (OSError, ValueError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return claim_holder(root, spec)
    except OSError:  # locks unsupported here: nothing can be said
        return None
    finally:
        os.close(fd)  # also drops the shared lock, if taken
    return None


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    since = f" since {holder['since']}" if holder.get("since") else ""
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}{since}"


def wait_for_claim(root: Path, spec: RunSpec, poll_s: float = 1.0) -> Claim:
    """Block until this process holds `spec`'s claim (another process may be running it)."""
    while True:
        claim = claim_run(root, spec)
        if claim is not None:
            return claim
        time.sleep(poll_s)


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM until the block ends, so Ctrl-C lets a run's files be written whole first.

    A temporary Python handler records the signal and the original handler runs afterwards. (A
    signal mask would not do: torch's worker threads leave the signal unblocked and receive it.)
    Python runs signal handlers in the main thread only, so elsewhere this changes nothing; the
    atomic writes alone still guarantee that no file is ever partial.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in received[:1]:
            signal.raise_signal(signum)


def write_run(root: Path, spec: RunSpec, result: dict[str, Any]) -> Path:
    """Store one finished run: spec.json, result.json, then the `done` marker.

    Each file is atomic on its own, and Ctrl-C or SIGTERM arriving meanwhile takes effect only after
    all three are written (SIGKILL can still stop it between files: a directory without `done` is
    then simply run again).
    """
    directory = run_dir(root, spec)
    payload = {"schema": RESULT_SCHEMA, "run_id": spec.run_id, **result}
    result_text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=True)
    with _signals_deferred():
        atomic_write_text(directory / "spec.json", spec.to_json())
        atomic_write_text(directory / "result.json", result_text)
        atomic_write_text(directory / DONE, "")
    return directory


def read_run(directory: Path) -> tuple[RunSpec, dict[str, Any]]:
    """Read one finished run; raises ValueError (naming the file) when it is incomplete or corrupt."""
    directory = Path(directory)
    if not (directory / DONE).exists():
        raise ValueError(f"{directory} has no '{DONE}' marker (unfinished run)")
    files = {}
    for name in ("spec.json", "result.json"):
        path = directory / name
        try:
            files[name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is unreadable or truncated: {err}") from None
    result = files["result.json"]
    if not isinstance(result, dict) or not isinstance(files["spec.json"], dict):
        raise ValueError(f"{directory} holds JSON that is not a run record (spec.json and result.json must be objects)")
    schema = result.get("schema")
    if schema != RESULT_SCHEMA:
        which = "has no schema field" if schema is None else f"has schema {schema!r}"
        raise ValueError(
            f"{directory / 'result.json'} {which}; this nlbench reads schema {RESULT_SCHEMA} only, "
            "so the run is not counted (re-run it, or read it with the nlbench version that wrote it)"
        )
    try:
        spec = RunSpec.from_dict(files["spec.json"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory / 'spec.json'} does not describe a run: {err}") from None
    return spec, result


def load_results(root: Path | str = "results") -> Any:
    """Every finished run under `root` as one pandas DataFrame row.

    Columns: the spec's fields (hyperparameters flattened as `hp.<key>`), `run_id`, `status`, the
    metrics (`acc`, `forgetting`, `bwt`, ...), cost columns, `matrix` (list of rows), `path`.
    Unfinished runs are skipped silently (they will be re-run); corrupt ones with a warning.
    """
    import pandas as pd

    root = Path(root)
    rows = []
    for done in sorted(root.rglob(DONE)):
        directory = done.parent
        try:
            spec, result = read_run(directory)
        except ValueError as err:
            warnings.warn(f"skipping {directory}: {err}", stacklevel=2)
            continue
        row: dict[str, Any] = {k: v for k, v in spec.to_dict().items() if k != "hparams"}
        row.update({f"hp.{k}": v for k, v in spec.hp.items()})
        row["run_id"] = spec.run_id
        row["status"] = result.get("status")
        row.update(result.get("metrics", {}))
        row["matrix"] = result.get("accuracy_matrix")
        row["initial_accuracy"] = result.get("initial_accuracy")
        row["wall_time_s"] = result.get("wall_time_s")
        row["peak_memory_mb"] = result.get("peak_memory_mb")
        row["path"] = str(directory)
        rows.append(row)
    return pd.DataFrame(rows)
