"""Sweep executors: where and how the runs of a sweep are run.

- `LocalExecutor`: one subprocess per run (`python -m nlbench.commands.sweep run-one SPEC --out DIR`), at most
  `jobs` at once. The subprocess trains the run and writes it to the store itself (atomically: the
  store's `done` marker comes last), so a crash, an out-of-memory kill or a SIGKILL of the whole sweep
  can only ever lose the runs in flight. GPU runs take a slot (a GPU id, each GPU offering
  `runs_per_gpu` slots) and are pinned to it with `CUDA_VISIBLE_DEVICES`; every subprocess gets
  `OMP_NUM_THREADS` / torch threads = cpu_count // jobs so parallel runs do not oversubscribe the CPU.
  A subprocess that dies without writing its result is recorded by the driver as `failed`, with its
  exit status and the tail of its log.
- `RayExecutor`: plain Ray tasks (`num_cpus=cpus_per_run`, `num_gpus=1/runs_per_gpu`), retried by Ray
  on system failures (a worker or node that dies), not on exceptions (a training crash is already a
  `failed` result, and re-running a deterministic spec would crash again). Workers return the result
  dict and the driver writes it, into the same store as the local executor.

Both claim a run (`nlbench.core.store.claim_run`) before starting it and hold the claim until its result is
stored, so several sweeps writing into one results directory at once train every run exactly once: a
run claimed by another live process is set aside and retried every `retry_s`; when its claim is free
again the run is either done (its result is taken, not trained again) or was abandoned (its holder
died: it is run here). A sweep therefore ends only when every run it was given is stored, whoever ran
it. The local executor passes the locked claim file to the run's subprocess, so the claim lives as
long as either of them.

Both report to an `events` object with `started(spec, where)` and `finished(spec, result)`, and,
when it has them, `waiting(spec, holder)` (a run is claimed by another process) and
`done_elsewhere(spec, result)` (another process stored it; else `finished` is called).
This module is light at import (stdlib only); torch and Ray are imported where they are used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence


class Events(Protocol):
    def started(self, spec: Any, where: str) -> None: ...

    def finished(self, spec: Any, result: dict[str, Any]) -> None: ...


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
# Results the driver records itself


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


def _stamp(path: Path) -> tuple[int, int] | None:
    """Identity of a file version (inode, mtime): an atomic replace changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


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


# --------------------------------------------------------------------------------------------------
# Claims: which run may start next


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
        given = dict(done_before or {})
        self.done_before = {s.run_id: given[s.run_id] if s.run_id in given else _stamp(run_dir(out, s) / DONE)
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

        while True:
            spec = self.pending.popleft() if self.pending else self._due()
            if spec is None:
                return None
            claim = claim_run(self.out, spec)
            if claim is None:
                self.waiting[spec.run_id] = (spec, time.monotonic() + self.retry_s)
                if spec.run_id not in self.announced and hasattr(self.events, "waiting"):
                    self.announced.add(spec.run_id)
                    self.events.waiting(spec, claim_holder(self.out, spec))
                continue
            directory = run_dir(self.out, spec)
            if _stamp(directory / DONE) != self.done_before[spec.run_id]:
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


# --------------------------------------------------------------------------------------------------
# Local executor


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

    def __init__(self, plan: LocalPlan, *, workdir: Path, data_root: Path | None = None, download: bool = True,
                 poll_s: float = 0.1):
        self.plan = plan
        self.workdir = Path(workdir)
        self.data_root = data_root
        self.download = download
        self.poll_s = poll_s

    def describe(self) -> str:
        return self.plan.describe()

    def command(self, spec_path: Path, out: Path) -> list[str]:
        cmd = [sys.executable, "-m", "nlbench.cli", "run-one", str(spec_path), "--out", str(out),
               "--threads", str(self.plan.threads), "--watch-parent"]
        if self.data_root is not None:
            cmd += ["--data-root", str(Path(self.data_root).resolve())]
        if not self.download:
            cmd.append("--no-download")
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
        marker_before = _stamp(run_dir(out, spec) / DONE)
        # The child inherits the locked claim file: the claim holds while the child lives, even when
        # this driver is killed first.
        with open(log, "wb") as handle:
            proc = subprocess.Popen(self.command(spec_path, out), stdin=subprocess.DEVNULL, stdout=handle,
                                    stderr=subprocess.STDOUT, env=self.child_env(slot),
                                    pass_fds=() if claim_fd is None else (claim_fd,))
        return _Child(spec, proc, slot, log, marker_before, time.perf_counter())

    def _collect(self, child: _Child, returncode: int, out: Path) -> dict[str, Any]:
        from nlbench.core.store import DONE, read_run, run_dir, write_run

        directory = run_dir(out, child.spec)
        written = _stamp(directory / DONE)
        where = f"GPU {child.slot}" if child.slot is not None else "cpu"
        if written is not None and written != child.marker_before:
            try:
                return read_run(directory)[1]
            except ValueError as err:
                error = f"the run wrote an unreadable result: {err}"
        else:
            error = _exit_description(returncode)
        tail = _tail(child.log)
        result = failed_result(child.spec, error + (f"\n{tail}" if tail else ""),
                               wall_time_s=time.perf_counter() - child.started, where=where)
        write_run(out, child.spec, result)
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


# --------------------------------------------------------------------------------------------------
# Ray executor


def _ray_task(spec_json: str, data_root: str | None, download: bool, threads: int) -> dict[str, Any]:
    """Runs inside a Ray worker: train one spec and return its result (the driver writes it)."""
    import torch

    from nlbench.core.runner import run_one
    from nlbench.core.spec import RunSpec

    torch.set_num_threads(max(1, threads))
    spec = RunSpec.from_dict(json.loads(spec_json))
    result = run_one(spec, data_root=Path(data_root) if data_root else None, download=download)
    return {**result, "pid": os.getpid(), "host": socket.gethostname()}  # who trained it


def _ray_error_message(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class RayExecutor:
    """Plain Ray tasks with fractional GPUs and retries; see the module docstring."""

    name = "ray"

    def __init__(self, *, address: str | None = None, jobs: int | None = None, runs_per_gpu: int | None = None,
                 cpus_per_run: float = 1.0, retries: int = 2, data_root: Path | None = None, download: bool = True):
        from nlbench.errors import UserError

        if jobs is not None and jobs < 1:
            raise UserError(f"--jobs must be a positive integer, got {jobs}")
        if runs_per_gpu is not None and runs_per_gpu < 1:
            raise UserError(f"--runs-per-gpu must be a positive integer, got {runs_per_gpu}")
        if cpus_per_run <= 0:
            raise UserError(f"--cpus-per-run must be positive, got {cpus_per_run:g}")
        if retries < 0:
            raise UserError(f"--retries must be >= 0, got {retries}")
        self.address = address
        self.jobs = jobs
        self.runs_per_gpu = runs_per_gpu
        self.cpus_per_run = cpus_per_run
        self.retries = retries
        self.data_root = data_root
        self.download = download
        self.use_gpu = False
        self.resources: dict[str, float] = {}
        self._owns_ray = False

    def connect(self, device: str) -> str:
        """Join (or start) the cluster, check its resources, and return the device runs use.

        Fails fast, before any run is planned, when GPUs are asked for (--device cuda, or
        --runs-per-gpu) and the cluster has none.
        """
        from nlbench.errors import UserError

        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray; install it with: pip install -e '.[ray]'") from None
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
            try:
                if self.address:
                    ray.init(address=self.address, **options)
                else:
                    ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = self.address or "a new local Ray instance"
                raise UserError(f"cannot start or reach the Ray cluster ({where}): {str(err).splitlines()[0]}") from None
            self._owns_ray = True
        self.resources = dict(ray.cluster_resources())
        gpus = float(self.resources.get("GPU", 0))
        wants_gpu = device.startswith("cuda") or self.runs_per_gpu is not None
        if device == "cpu" and self.runs_per_gpu is not None:
            self.close()
            raise UserError("--runs-per-gpu needs GPU runs, but --device is cpu; drop one of them")
        if wants_gpu and gpus <= 0:
            cpus = self.resources.get("CPU", 0)
            asked = f"--device {device}" if device.startswith("cuda") else f"--runs-per-gpu {self.runs_per_gpu}"
            self.close()
            raise UserError(
                f"{asked} asks for GPUs, but the Ray cluster has none (it has {cpus:g} CPU(s) and 0 GPUs); "
                "use --device cpu, or join a cluster with GPUs via --address"
            )
        if device == "auto":
            device = "cuda" if gpus > 0 else "cpu"
        if device.startswith("cuda:"):
            self.close()
            raise UserError("--device cuda:N is not available with --executor ray: Ray assigns GPUs; use --device cuda")
        self.use_gpu = device == "cuda"
        return device

    def describe(self) -> str:
        gpus = self.resources.get("GPU", 0)
        per_run = f"num_cpus={self.cpus_per_run:g}"
        if self.use_gpu:
            per_run += f", num_gpus=1/{self.runs_per_gpu or 1}"
        limit = f"at most {self.jobs} in flight" if self.jobs else "all submitted at once"
        return (f"ray executor, cluster of {self.resources.get('CPU', 0):g} CPU(s) and {gpus:g} GPU(s); "
                f"{per_run} per run, {limit}, up to {self.retries} retries on system failures")

    def close(self) -> None:
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False

    def run(self, specs: Sequence[Any], out: Path, events: Events,
            done_before: Mapping[str, tuple[int, int] | None] | None = None) -> None:
        import ray
        from ray.exceptions import RayError

        from nlbench.core.store import write_run

        remote = ray.remote(_ray_task).options(
            num_cpus=self.cpus_per_run,
            num_gpus=(1.0 / (self.runs_per_gpu or 1)) if self.use_gpu else 0,
            max_retries=self.retries,  # system failures (worker or node died): retried
            retry_exceptions=False,  # exceptions: not retried (deterministic; recorded as failed)
        )
        threads = max(1, int(self.cpus_per_run))
        data_root = str(Path(self.data_root).resolve()) if self.data_root else None
        queue = ClaimQueue(specs, out, events, done_before)  # the driver holds the claims
        in_flight: dict[Any, tuple[Any, float]] = {}
        limit = self.jobs or len(specs)
        try:
            while queue.unstarted or in_flight:
                while len(in_flight) < limit:
                    spec = queue.next()
                    if spec is None:
                        break
                    ref = remote.remote(spec.to_json(), data_root, self.download, threads)
                    in_flight[ref] = (spec, time.perf_counter())
                    events.started(spec, "ray")
                if not in_flight:
                    time.sleep(0.2)  # only runs claimed by other processes are left: wait for them
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in ready:
                    spec, submitted = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayError as err:
                        result = failed_result(spec, _ray_error_message(err),
                                               wall_time_s=time.perf_counter() - submitted, where="ray")
                    write_run(out, spec, result)
                    queue.release(spec)
                    events.finished(spec, result)
        except BaseException:
            for ref in in_flight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or lost: nothing to cancel
                    pass
            raise
        finally:
            queue.release_all()
            self.close()
