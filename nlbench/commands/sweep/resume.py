"""The results store as a sweep sees it: what is stored for a planned run, and whether to keep it.

Resume rule: a run whose `done` marker holds `completed` or `diverged` is kept (both are outcomes of
the spec); a `failed` run (a crash, a kill) is run again unless `retry_failed` is off. The `done`
marker's stamp lets an executor tell a result another process stored after the sweep looked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

_REUSABLE = ("completed", "diverged")


def stored_result(out: Path, spec: Any) -> dict[str, Any] | None:
    """The finished result stored for `spec` (any status), or None (not run, unfinished or corrupt)."""
    from nlbench.core.store import is_done, read_run, run_dir

    if not is_done(out, spec):
        return None
    try:
        return read_run(run_dir(out, spec))[1]
    except ValueError:
        return None


def done_stamp(out: Path, spec: Any) -> tuple[int, int] | None:
    """Identity (inode, mtime) of the run's `done` marker, None when absent: a new write changes it."""
    from nlbench.core.store import DONE, run_dir

    try:
        st = (run_dir(out, spec) / DONE).stat()
    except (OSError, ValueError):
        return None
    return (st.st_ino, st.st_mtime_ns)


def is_reusable(result: Mapping[str, Any] | None, retry_failed: bool) -> bool:
    """Whether a stored result is kept as it is (True) or its run is run again (False)."""
    if result is None:
        return False
    status = result.get("status")
    return status in _REUSABLE or (status == "failed" and not retry_failed)
