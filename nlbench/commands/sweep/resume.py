"""The results store as a sweep sees it: what is stored for a planned run, and whether to keep it.

Resume rule: a run whose `done` marker holds `completed` or `diverged` is kept (both are outcomes of
the spec); a `failed` run (a crash, a kill) is run again unless `retry_failed` is off. The `done`
marker's stamp lets an executor tell a result another process stored after the sweep looked. Reading
the store also repairs what killed processes and full disks left (see `stored_result`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

_REUSABLE = ("completed", "diverged")


def stored_result(out: Path, spec: Any, *, repair: bool = True) -> dict[str, Any] | None:
    """The finished result stored for `spec` (any status), or None (not run, unfinished or corrupt).

    With `repair`, a result an earlier process kept elsewhere because the disk was full is moved into
    the store, and a claim file a SIGKILLed process left in a finished run is removed
    (`nlbench.core.store.stored_result`); a dry run reads without repairing.
    """
    from nlbench.core.store import stored_result as read_stored

    return read_stored(out, spec, repair=repair)


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
