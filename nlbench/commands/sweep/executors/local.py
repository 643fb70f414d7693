"""The local executor: one subprocess per run on this machine, at most `jobs` at once.

Each run is `python -m nlbench.cli run-one SPEC --out DIR` (`nlbench.commands.sweep.child`). The
subprocess trains the run and writes it to the store itself (atomically: the store's `done` marker
comes last), so a crash, an out-of-memory kill or a SIGKILL of the whole sweep can only ever lose the
runs in flight. GPU runs take a slot (a GPU id, each GPU offering `runs_per_gpu` slots) and are pinned
to it with `CUDA_VISIBLE_DEVICES`; every subprocess gets `OMP_NUM_THREADS` / torch threads =
cpu_count // jobs so parallel runs do not oversubscribe the CPU. A subprocess that dies without
writing its result is recorded by the driver as `failed`, with its exit status and the tail of its log.
A subprocess that trained its run but could not store it (a full disk: exit code 3, the result kept in a
fallback location that its last log line names) is listed in `unstored`, and so is a `failed` record
the driver cannot write; the sweep goes on either way. The driver passes the run's locked claim file
to the subprocess, so the claim lives as long as either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from nlbench.commands.sweep.executors.common import ClaimQueue, Events, failed_result, file_stamp

# --------------------------------------------------------------------------------------------------
# Slots and threads (pure functions, tested without a GPU)


def visible_gpu_ids(count: int, env: Mapping[str, str] | None = None) -> list[str]:
    """The ids to put in a child's CUDA_VISIBLE_DEVICES for each of the `count` GPUs torch sees.

    When the driver itself runs under CUDA_VISIBLE_DEVICES (e.g. "2,3" or GPU UUIDs), the children
    must be pinned to those physical ids, not to 0..count-1.
    """
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [part.strip() for part in listed.split(",") if part.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


def gpu_slots(gpu_ids: Sequence[str], runs_per_gpu: int) -> list[str]:
    """One slot per (GPU, packed run), interleaved across GPUs (0, 1, 0, 1, ...) so that a sweep with
    fewer runs than slots spreads over every GPU before packing a second run onto one."""
    if runs_per_gpu < 1:
        raise ValueError("runs_per_gpu must be >= 1")
    return [gpu for _ in range(runs_per_gpu) for gpu in gpu_ids]


@dataclass(frozen=True)
class LocalPlan:
    """How the local executor runs: the slots it hands out and the threads each run gets."""

    jobs: int
    slots: tuple[str | None, ...]  # a CUDA_VISIBLE_DEVICES value per concurrent run; None: CPU run
    threads: int

    def describe(self) -> str:
        if self.slots and self.slots[0] is not None:
            per_gpu: dict[str, int] = {}
            for slot in self.slots:
                per_gpu[slot] = per_gpu.get(slot, 0) + 1
            where = ", ".join(f"GPU {gpu} x{n}" for gpu, n in per_gpu.items())
            return f"local executor, {self.jobs} job(s) on {where}, {self.threads} CPU thread(s) each"
        return f"local executor, {self.jobs} job(s) on CPU, {self.threads} thread(s) each"


def plan_local(
    *, use_gpu: bool, gpu_ids: Sequence[str], runs_per_gpu: int | None, jobs: int | None, cpu_count: int
) -> LocalPlan:
    """Decide the concurrency of a local sweep.

    GPU: slots = GPUs x runs_per_gpu (default 1); `jobs` defaults to the number of slots and may
    not exceed it. CPU: `jobs` defaults to 1 (the machine may be shared: ask for more with --jobs).
    Threads per run: cpu_count // jobs, at least 1.
    """
    from nlbench.errors import UserError

    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be a positive integer, got {jobs}")
    if runs_per_gpu is not None and runs_per_gpu < 1:
        raise UserError(f"--runs-per-gpu must be a positive integer, got {runs_per_gpu}")
    if use_gpu:
        if not gpu_ids:
            raise UserError("GPU runs were asked for but no CUDA GPU is visible; use --device cpu")
        slots = gpu_slots(gpu_ids, runs_per_gpu or 1)
        if jobs is not None and jobs > len(slots):
            raise UserError(
                f"--jobs {jobs} exceeds the {len(slots)} GPU slot(s) ({len(gpu_ids)} GPU(s) x --runs-per-gpu "
                f"{runs_per_gpu or 1}); raise --runs-per-gpu to pack more runs per GPU"
            )
        jobs = jobs or len(slots)
        chosen: tuple[str | None, ...] = tuple(slots[:jobs])
    else:
        if runs_per_gpu is not None:
            raise UserError("--runs-per-gpu needs GPU runs, but the sweep runs on the CPU; drop it or use --device cuda")
        jobs = jobs or 1
        chosen = (None,) * jobs
    return LocalPlan(jobs=jobs, slots=chosen, threads=max(1, cpu_count // jobs))


# --------------------------------------------------------------------------------------------------
# The subprocesses


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the run's process was killed by {name}"
    return f"the run's process exited with code {returncode} without writing a result"


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class _Child:
    spec: Any
    proc: subprocess.Popen
    slot: str | None
    log: Path
    marker_before: tuple[int, int] | None
    started: float


class LocalExecutor:
    """One subprocess per run, at most `plan.jobs` at once; see the module docstring."""

    name = "local"
    tracking: Any = None  # a `Tracking` the children log to (`--log`)

    def __init__(self, plan: LocalPlan, *, workdir: Path, data_root: Path | None = None, download: bool = True,
                 poll_s: float = 0.1):
        self.plan = plan
        self.workdir = Path(workdir)
        self.data_root = data_root
        self.download = download
        self.poll_s = poll_s
        self.unstored: list[str] = []  # one line per run whose result is not in the store (see above)

    def describe(self) -> str:
        return self.plan.describe()

    def command(self, spec_path: Path, out: Path) -> list[str]:
        cmd = [sys.executable, "-m", "nlbench.cli", "run-one", str(spec_path), "--out", str(out),
               "--threads", str(self.plan.threads), "--watch-parent"]
        if self.data_root is not None:
            cmd += ["--data-root", str(Path(self.data_root).resolve())]
        if not self.download:
            cmd.append("--no-download")
        if self.tracking:
            cmd += ["--tracking", self.tracking.to_json()]
        return cmd

    def child_env(self, slot: str | None) -> dict[str, str]:
        env = dict(os.environ)
        threads = str(self.plan.threads)
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
        # CPU runs see no GPU at all (no stray CUDA context); GPU runs see exactly their slot's GPU.
        env["CUDA_VISIBLE_DEVICES"] = "" if slot is None else slot
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _launch(self, spec: Any, slot: str | None, out: Path, claim_fd: int | None = None) -> _Child:
        from nlbench.core.store import DONE, run_dir

        self.workdir.mkdir(parents=True, exist_ok=True)
        spec_path = self.workdir / f"{spec.run_id}.json"
        spec_path.write_text(spec.to_json())
        log = self.workdir / f"{spec.run_id}.log"
        marker_before = file_stamp(run_dir(out, spec) / DONE)
        # The child inherits the locked claim file: the claim holds while the child lives, even when
        # this driver is killed first.
        with open(log, "wb") as handle:
            proc = subprocess.Popen(self.command(spec_path, out), stdin=subprocess.DEVNULL, stdout=handle,
                                    stderr=subprocess.STDOUT, env=self.child_env(slot),
                                    pass_fds=() if claim_fd is None else (claim_fd,))
        return _Child(spec, proc, slot, log, marker_before, time.perf_counter())

    def _collect(self, child: _Child, returncode: int, out: Path) -> dict[str, Any]:
        from nlbench.core.store import DONE, read_run, run_dir, write_run
        from nlbench.errors import ResultNotStored

        directory = run_dir(out, child.spec)
        written = file_stamp(directory / DONE)
        where = f"GPU {child.slot}" if child.slot is not None else "cpu"
        wall = time.perf_counter() - child.started
        tail = _tail(child.log)
        if written is not None and written != child.marker_before:
            try:
                return read_run(directory)[1]
            except ValueError as err:
                error = f"the run wrote an unreadable result: {err}"
        elif returncode == ResultNotStored.exit_code:  # trained, kept elsewhere: no `failed` record over it
            line = next((l for l in reversed(tail.splitlines()) if l.startswith("error: ")), _exit_description(returncode))
            self.unstored.append(line.removeprefix("error: "))
            return {**failed_result(child.spec, line.removeprefix("error: "), wall_time_s=wall, where=where),
                    "status": "unstored"}
        else:
            error = _exit_description(returncode)
        result = failed_result(child.spec, error + (f"\n{tail}" if tail else ""), wall_time_s=wall, where=where)
        try:
            write_run(out, child.spec, result, rescue=False)
        except ResultNotStored as err:
            self.unstored.append(str(err))
        return result

    def run(self, specs: Sequence[Any], out: Path, events: Events,
            done_before: Mapping[str, tuple[int, int] | None] | None = None) -> None:
        out = Path(out).resolve()
        queue = ClaimQueue(specs, out, events, done_before)
        free: list[str | None] = list(self.plan.slots)
        running: list[_Child] = []
        try:
            while queue.unstarted or running:
                while free:
                    spec = queue.next()
                    if spec is None:
                        break
                    slot = free.pop(0)
                    running.append(self._launch(spec, slot, out, queue.claim_fd(spec)))
                    events.started(spec, "cpu" if slot is None else f"GPU {slot}")
                time.sleep(self.poll_s)
                for child in list(running):
                    returncode = child.proc.poll()
                    if returncode is None:
                        continue
                    running.remove(child)
                    free.append(child.slot)
                    result = self._collect(child, returncode, out)
                    queue.release(child.spec)
                    events.finished(child.spec, result)
        except BaseException:
            # Ctrl-C, SIGTERM, or a bug in the driver: stop the runs in flight and record nothing
            # for them (they have not finished; re-running the sweep runs them again).
            _stop(running)
            raise
        finally:
            queue.release_all()
            self.unstored.extend(queue.not_started)


def _stop(children: list[_Child], grace_s: float = 10.0) -> None:
    """Interrupt the children (they exit 130 without writing), then kill what is left after `grace_s`."""
    alive = [c for c in children if c.proc.poll() is None]
    try:
        for child in alive:
            child.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        for child in alive:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
    except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
        for child in alive:
            if child.proc.poll() is None:
                child.proc.kill()
        for child in alive:
            child.proc.wait()
