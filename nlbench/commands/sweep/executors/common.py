"""What both sweep executors share: the events they report, the record of a run that died without a
result, and the claim queue that hands out only runs this process holds.

Claims (`nlbench.core.store.claim_run`) let several sweeps write into one results directory at once and
still train every run exactly once: a run claimed by another live process is set aside and retried
every `retry_s`; when its claim is free again the run is either done (its result is taken, not trained
again) or was abandoned (its holder died: it is run here). A sweep therefore ends only when every run
it was given is stored, whoever ran it. A run that cannot even be claimed (its claim file cannot be
written: a full disk) is not started; its one-line reason is kept in `not_started`, and the runs
already in flight go on.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence


class Events(Protocol):
    """Progress of an executor's runs. An events object may also have `waiting(spec, holder)` (a run is
    claimed by another process) and `done_elsewhere(spec, result)` (another process stored it; without
    it, `finished` is called)."""

    def started(self, spec: Any, where: str) -> None: ...

    def finished(self, spec: Any, result: dict[str, Any]) -> None: ...


def failed_result(spec: Any, error: str, *, wall_time_s: float = 0.0, where: str | None = None) -> dict[str, Any]:
    """The record of a run that died without producing a result (crash, kill, lost worker)."""
    now = datetime.now(timezone.utc).isoformat()
    return {
        "status": "failed",
        "error": error,
        "seed": spec.seed,
        "accuracy_matrix": [],
        "initial_accuracy": [],
        "metrics": {},
        "experience_train_time_s": [],
        "eval_time_s": [],
        "wall_time_s": wall_time_s,
        "peak_memory_mb": None,
        "peak_memory_kind": None,
        "device": spec.device,
        "device_name": where,
        "environment": None,
        "started_at": None,
        "finished_at": now,
    }


def file_stamp(path: Path) -> tuple[int, int] | None:
    """Identity of a file version (inode, mtime): an atomic replace changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


class ClaimQueue:
    """The runs of one `run` call, handed out only once this process holds their claim.

    `done_before` maps run ids to the `done` marker's stamp when the sweep read the store; a run whose
    marker changed since was stored by another process and is taken as it is, not trained again.
    """

    def __init__(self, specs: Sequence[Any], out: Path, events: Events,
                 done_before: Mapping[str, tuple[int, int] | None] | None = None, retry_s: float = 1.0):
        from nlbench.core.store import DONE, run_dir

        self.out = Path(out)
        self.events = events
        self.retry_s = retry_s
        self.pending: deque = deque(specs)
        self.waiting: dict[str, tuple[Any, float]] = {}  # run id -> (spec, when to try again)
        self.claims: dict[str, Any] = {}
        self.announced: set[str] = set()
        self.not_started: list[str] = []
        given = dict(done_before or {})
        self.done_before = {s.run_id: given[s.run_id] if s.run_id in given else file_stamp(run_dir(out, s) / DONE)
                            for s in specs}

    @property
    def unstarted(self) -> bool:
        return bool(self.pending or self.waiting)

    def _due(self) -> Any | None:
        now = time.monotonic()
        for run_id, (spec, when) in self.waiting.items():
            if when <= now:
                del self.waiting[run_id]
                return spec
        return None

    def next(self) -> Any | None:
        """The next run to start, now claimed by this process; None when none can start yet."""
        from nlbench.core.store import DONE, claim_holder, claim_run, read_run, run_dir
        from nlbench.errors import UserError

        while True:
            spec = self.pending.popleft() if self.pending else self._due()
            if spec is None:
                return None
            try:
                claim = claim_run(self.out, spec)
            except UserError as err:  # the store cannot take a claim file: the run cannot be stored either
                self.not_started.append(f"not started: {spec.strategy} (seed {spec.seed}): {err}")
                continue
            if claim is None:
                self.waiting[spec.run_id] = (spec, time.monotonic() + self.retry_s)
                if spec.run_id not in self.announced and hasattr(self.events, "waiting"):
                    self.announced.add(spec.run_id)
                    self.events.waiting(spec, claim_holder(self.out, spec))
                continue
            directory = run_dir(self.out, spec)
            if file_stamp(directory / DONE) != self.done_before[spec.run_id]:
                try:
                    result = read_run(directory)[1]
                except ValueError:
                    result = None  # stored but unreadable: run it again
                if result is not None:
                    claim.release()
                    report = getattr(self.events, "done_elsewhere", None) or self.events.finished
                    report(spec, result)
                    continue
            self.claims[spec.run_id] = claim
            return spec

    def claim_fd(self, spec: Any) -> int | None:
        return self.claims[spec.run_id].fd

    def release(self, spec: Any) -> None:
        claim = self.claims.pop(spec.run_id, None)
        if claim is not None:
            claim.release()

    def release_all(self) -> None:
        for run_id in list(self.claims):
            self.claims.pop(run_id).release()
