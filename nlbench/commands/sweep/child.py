"""One run of a local sweep, in its own process: what the hidden `nlbench run-one` command does.

The local executor writes each spec to a JSON file and starts `python -m nlbench.cli run-one SPEC
--out DIR --threads N --watch-parent`. The child reads the spec, trains it, and writes it to the store
itself (atomically: the `done` marker comes last), so a crash or a kill loses at most this run. With
`watch_parent` it exits when the sweep driver dies, so a killed sweep leaves no stray runs. The sweep
holds the run's claim and hands the locked claim file down: this process owns the run while it lives.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

from nlbench.errors import UserError


def _exit_when_orphaned(interval_s: float = 1.0) -> None:
    """End this process when its parent (the sweep driver) dies, so a killed sweep leaves no stray runs."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(137)

    threading.Thread(target=watch, name="nlbench-watch-parent", daemon=True).start()


def run_child(spec_json: Path, out: Path, *, data_root: Optional[Path] = None, download: bool = True,
              threads: Optional[int] = None, watch_parent: bool = False,
              tracking: Any = None) -> tuple[Any, dict[str, Any]]:
    """Run the spec stored in `spec_json` and write it to the store under `out`; return (spec, result).

    Raises UserError when the file cannot be read or does not describe a run, or the store is not writable.
    """
    from nlbench.core.signals import accept_interrupts, deferred

    # The driver stops this run with SIGINT: take it even if the driver was started with SIGINT
    # ignored (in the background by a shell script), which every child inherits.
    accept_interrupts()
    if watch_parent:
        _exit_when_orphaned()
    try:
        data = json.loads(spec_json.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the run spec {spec_json}: {err}") from None
    from nlbench.core.spec import RunSpec

    try:
        spec = RunSpec.from_dict(data)
    except TypeError as err:
        raise UserError(f"{spec_json} does not describe a run: {err}") from None

    import torch

    from nlbench.data.vision import import_torchvision

    import_torchvision()  # a mismatched torch/torchvision pair: one line, not a traceback
    from nlbench.core.checkpoint import checkpoint_dir, discard
    from nlbench.core.runner import run_one
    from nlbench.core.store import check_writable, process_identity, run_dir, write_run

    if threads:
        torch.set_num_threads(threads)
    check_writable(out)
    result = {**run_one(spec, data_root=data_root, download=download, tracking=tracking,
                        checkpoint_dir=checkpoint_dir(run_dir(out, spec))), **process_identity()}  # who trained it
    # Temporary files left by a writer that was killed mid-write: this process owns the run now
    # (the sweep that started it holds the run's claim and handed it down).
    for stale in run_dir(out, spec).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    with deferred():  # a stop signal here still leaves the stored run without its checkpoints
        write_run(out, spec, result)
        discard(run_dir(out, spec))
    return spec, result
