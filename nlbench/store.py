"""The results store: `results/<name>/<run_id>/{spec.json, result.json, done}`.

Every file is written atomically (a temporary file in the same directory, fsync, then `os.replace`),
and the `done` marker is written last. A run directory without `done` is an unfinished or killed run:
it is never loaded as a result and is simply re-run. `load_results` turns every finished run into one
row of a pandas DataFrame; corrupt or truncated files are skipped with a warning that names them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from nlbench.errors import UserError
from nlbench.spec import RunSpec

RESULT_SCHEMA = 1
DONE = "done"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    if result.get("schema") != RESULT_SCHEMA:
        raise ValueError(f"{directory / 'result.json'} has schema {result.get('schema')!r}, expected {RESULT_SCHEMA}")
    try:
        spec = RunSpec.from_dict(files["spec.json"])
    except TypeError as err:
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
