"""The results store: `results/<name>/<run_id>/{spec.json, result.json, done}`.

Every file is written atomically (a temporary file in the same directory, fsync, then `os.replace`),
and the `done` marker is written last. A run directory without `done` is an unfinished or killed run:
it is never loaded as a result and is simply re-run. `load_results` turns every finished run into one
row of a pandas DataFrame. A run is counted only when its two files pass the declared schema
(`nlbench.core.schema`); files that are not regular files (a FIFO, a device) are never opened for a
blocking read. Corrupt, truncated, implausible or deeply nested records, and results of another schema
version, are skipped with one warning that names the file and the field.

Full disks. A trained result is never lost: when `write_run` cannot write the run where it belongs
(no space, a quota, a read-only remount), it writes it to a fallback location (`rescue_dirs`: the
$NLBENCH_RESCUE_DIR folder, else ~/.cache/nlbench/unstored, else the temporary directory) and raises
`ResultNotStored` (exit code 3), whose one line names that copy. The next `finished_result` or sweep
for the same run and results directory moves the copy into the store instead of training again.

Claims (`nlbench.core.claims`): before a process trains a run it claims it, so processes sharing a
store train every run once; the functions below map (root, spec) to the run's directory. A claim file
that a SIGKILLed holder left inside a finished run is removed by the next process that finds the run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from nlbench.core import claims
from nlbench.core.claims import CLAIM, Claim, describe_holder, process_identity
from nlbench.core.signals import deferred
from nlbench.core.spec import RunSpec
from nlbench.errors import ResultNotStored, UserError
from nlbench.io import atomic_write_text, read_regular_text

RESULT_SCHEMA = 1
DONE = "done"


def run_dir(root: Path, spec: RunSpec) -> Path:
    return Path(root) / spec.name / spec.run_id


def is_done(root: Path, spec: RunSpec) -> bool:
    return (run_dir(root, spec) / DONE).exists()


def finished_result(root: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The stored result of `spec` if it finished with a reusable outcome, else None.

    `completed` and `diverged` are outcomes of the spec itself and are kept; a `failed` run (a crash,
    an out-of-memory error) says nothing about the method, so it is run again. A corrupt stored
    result is treated as absent and overwritten. A result that an earlier process could not store
    (a full disk) is moved into the store first (`restore_rescued`), and a claim file that a killed
    process left in a finished run is removed.
    """
    result = stored_result(root, spec)
    return result if result is not None and result.get("status") in ("completed", "diverged") else None


def stored_result(root: Path, spec: RunSpec, *, repair: bool = True) -> dict[str, Any] | None:
    """The finished result stored for `spec`, any status, or None (not run, unfinished or corrupt).

    With `repair` (not in a dry run) a rescued copy is moved into the store first when the store
    holds nothing better, and a stale claim file in a finished run is removed (see `finished_result`).
    """
    result = None
    if is_done(root, spec):
        try:
            result = read_run(run_dir(root, spec))[1]
        except ValueError:
            result = None
    if repair and (result is None or result.get("status") == "failed"):
        result = restore_rescued(root, spec) or result
    if repair and result is not None:
        claims.remove_stale(run_dir(root, spec))
    return result


_PROBE_BYTES = 64 * 1024  # more than one run's files: a disk with less free space fails the check


def check_writable(root: Path) -> None:
    """Fail before training, not after it, when results cannot be written: the probe writes and
    fsyncs as many bytes as a run's files take, so a full disk or a quota is found here."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-probe-", delete=True) as probe:
            probe.write(b"\0" * _PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        full = " (the disk is full)" if err.errno == errno.ENOSPC else ""
        raise UserError(f"results directory {root} is not writable: {err.strerror or err}{full}") from None
    except ValueError as err:  # an embedded NUL byte
        raise UserError(f"results directory {str(root)!r} is not a valid path: {err}") from None


def check_run_name(name: str) -> None:
    """A run name (`--name`) is a directory inside the results directory: it must not leave it."""
    path = Path(name)
    if not name.strip() or "\0" in name or path.is_absolute() or ".." in path.parts or not path.parts:
        raise UserError(f"--name {name!r} must be a relative directory name inside the results directory "
                        "(not empty, no '..', not an absolute path)")


def claim_run(root: Path, spec: RunSpec) -> Claim | None:
    """Claim `spec`'s run for this process; None when another live process holds it (`claims.claim`)."""
    return claims.claim(run_dir(root, spec))


def claim_holder(root: Path, spec: RunSpec) -> dict[str, Any]:
    """What the claim file of `spec` says about its holder (pid, host, since); {} when unknown."""
    return claims.holder(run_dir(root, spec))


def live_claim(root: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The holder of `spec`'s claim when a live process holds it, else None; creates and changes nothing."""
    return claims.live_holder(run_dir(root, spec))


def wait_for_claim(root: Path, spec: RunSpec, poll_s: float = 1.0) -> Claim:
    """Block until this process holds `spec`'s claim (another process may be running it)."""
    return claims.wait_for(run_dir(root, spec), poll_s)


__all__ = ["CLAIM", "Claim", "describe_holder", "process_identity"]  # re-exported from claims


def write_run(root: Path, spec: RunSpec, result: dict[str, Any], *, rescue: bool = True) -> Path:
    """Store one finished run: spec.json, result.json, then the `done` marker.

    Each file is atomic on its own, and Ctrl-C or SIGTERM arriving meanwhile takes effect only after
    all three are written (SIGKILL can still stop it between files: a directory without `done` is
    then simply run again). When the files cannot be written (a full disk, a quota, a read-only
    store), the run is written to a fallback location and `ResultNotStored` names it; with
    `rescue=False` (a record that holds no trained result) it is only named as not stored.
    """
    directory = run_dir(root, spec)
    payload = {"schema": RESULT_SCHEMA, "run_id": spec.run_id, **result}
    result_text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=True)
    try:
        with deferred():
            atomic_write_text(directory / "spec.json", spec.to_json())
            atomic_write_text(directory / "result.json", result_text)
            atomic_write_text(directory / DONE, "")
    except OSError as err:
        if not (directory / DONE).exists():
            with contextlib.suppress(OSError):
                (directory / "spec.json").unlink()  # no half run left behind: it would read as unfinished
        why = f"{err.strerror or err}{' (the disk is full)' if err.errno == errno.ENOSPC else ''}"
        where = f"cannot write run {spec.run_id} ({spec.strategy}, seed {spec.seed}) to {directory}: {why}"
        if not rescue:
            raise ResultNotStored(f"{where}; this record of a run that did not finish was not stored") from None
        kept = _rescue(root, spec, result_text)
        if kept is None:
            sys.stderr.write(f"nlbench: unstored result of run {spec.run_id}: {json.dumps(payload, allow_nan=True)}\n")
            raise ResultNotStored(f"{where}; no fallback location was writable either, so the result was "
                                  "printed to stderr as one JSON line") from None
        raise ResultNotStored(f"{where}; the result is kept in {kept} and the same command moves it into the "
                              "store once there is space") from None
    return directory


RESCUE_ENV = "NLBENCH_RESCUE_DIR"


def rescue_dirs() -> list[Path]:
    """Where results that could not be stored are kept, in order of preference."""
    found = [Path(os.environ[RESCUE_ENV])] if os.environ.get(RESCUE_ENV) else []
    found.append(Path.home() / ".cache" / "nlbench" / "unstored")
    found.append(Path(tempfile.gettempdir()) / "nlbench-unstored")
    return found


def _rescue_key(root: Path, spec: RunSpec) -> str:
    """One name per (results directory, run): the same run meant for two stores is kept twice."""
    where = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return f"{where}-{spec.run_id}"


def _rescue(root: Path, spec: RunSpec, result_text: str) -> Path | None:
    """Write the run to the first fallback location that takes it; its folder, or None."""
    for base in rescue_dirs():
        folder = base / _rescue_key(root, spec)
        try:
            atomic_write_text(folder / "spec.json", spec.to_json())
            atomic_write_text(folder / "result.json", result_text)
            atomic_write_text(folder / "target", f"{Path(root).resolve()}\n")
            return folder
        except (OSError, ValueError):
            continue
    return None


def restore_rescued(root: Path, spec: RunSpec) -> dict[str, Any] | None:
    """Move a rescued copy of `spec`'s run (see `write_run`) into the store; its result, or None.

    Raises `ResultNotStored` when the store still cannot take it (the copy stays where it is).
    """
    for base in rescue_dirs():
        folder = base / _rescue_key(root, spec)
        if not (folder / "result.json").is_file():
            continue
        try:
            stored_spec, result = _read_record(folder)
        except ValueError as err:
            warnings.warn(f"not restoring {folder}: {err}", stacklevel=2)
            continue
        if stored_spec.run_id != spec.run_id:
            continue
        write_run(root, spec, result)
        shutil.rmtree(folder, ignore_errors=True)
        return read_run(run_dir(root, spec))[1]
    return None


def read_run(directory: Path) -> tuple[RunSpec, dict[str, Any]]:
    """Read one finished run; raises ValueError (naming the file and field) when it is incomplete,
    corrupt, of another schema version, or fails the declared schema (`nlbench.core.schema`)."""
    directory = Path(directory)
    if not (directory / DONE).is_file():
        raise ValueError(f"{directory} has no '{DONE}' marker (unfinished run)")
    return _read_record(directory)


def _read_record(directory: Path) -> tuple[RunSpec, dict[str, Any]]:
    from nlbench.core.schema import check_run

    files = {}
    for name in ("spec.json", "result.json"):
        path = directory / name
        try:
            files[name] = json.loads(read_regular_text(path))
        except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"{path} is unreadable or truncated: {getattr(err, 'strerror', None) or err}") from None
        except RecursionError:
            raise ValueError(f"{path} is nested too deeply to be a run record") from None
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
        return check_run(files["spec.json"], result, directory / "spec.json", directory / "result.json")
    except RecursionError:
        raise ValueError(f"{directory} holds a record nested too deeply to be a run") from None


def read_runs(root: Path | str) -> tuple[list[tuple[Path, RunSpec, dict[str, Any]]], list[str]]:
    """Every finished run under `root` that passes the schema, as (directory, spec, result), and one
    `skipping DIR: why` message per finished run that does not. Unfinished runs are not listed."""
    runs, skipped = [], []
    for done in sorted(Path(root).rglob(DONE)):
        if not done.is_file():  # a folder called `done` (a run name), not a marker
            continue
        directory = done.parent
        try:
            spec, result = read_run(directory)
        except ValueError as err:
            skipped.append(f"skipping {directory}: {err}")
            continue
        runs.append((directory, spec, result))
    return runs, skipped


def results_frame(runs: list[tuple[Path, RunSpec, dict[str, Any]]]) -> Any:
    """One pandas DataFrame row per run of `read_runs` (see `load_results` for the columns)."""
    import pandas as pd

    rows = []
    for directory, spec, result in runs:
        row: dict[str, Any] = {k: v for k, v in spec.to_dict().items() if k != "hparams"}
        row.update({f"hp.{k}": v for k, v in spec.hp.items()})
        row["run_id"] = spec.run_id
        row["status"] = result.get("status")
        row.update(result.get("metrics", {}))
        row["matrix"] = result.get("accuracy_matrix")
        row["initial_accuracy"] = result.get("initial_accuracy")
        row["wall_time_s"] = result.get("wall_time_s")
        row["peak_memory_mb"] = result.get("peak_memory_mb")
        row["clocks"] = result.get("clocks")  # periods and updates per level of a clocked run (nlbench.core.regime)
        row["diagnostics"] = result.get("diagnostics")  # an optimizer's own measurements (e.g. a guard's rate)
        row["path"] = str(directory)
        rows.append(row)
    return pd.DataFrame(rows)


def load_results(root: Path | str = "results") -> Any:
    """Every finished run under `root` as one pandas DataFrame row.

    Columns: the spec's fields (hyperparameters flattened as `hp.<key>`), `run_id`, `status`, the
    metrics (`acc`, `forgetting`, `bwt`, ...), cost columns, `matrix` (list of rows), `path`.
    Unfinished runs are skipped silently (they will be re-run); corrupt ones with a warning.
    """
    runs, skipped = read_runs(root)
    for message in skipped:
        warnings.warn(message, stacklevel=2)
    return results_frame(runs)
