"""The Ray executor: each run is a plain Ray task (`num_cpus=cpus_per_run`, `num_gpus=1/runs_per_gpu`).

Ray retries a task on system failures (a worker or node that dies), not on exceptions: a training crash
is already a `failed` result, and re-running a deterministic spec would crash again. Workers return the
result dict and the driver writes it, into the same store as the local executor; the driver holds each
run's claim (`ClaimQueue`) until its result is stored. A result the driver cannot write (a full disk) is
kept in a fallback location by `write_run` and listed in `unstored`; the sweep goes on. Ray is imported
where it is used, so this module loads without it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from nlbench.commands.sweep.executors.common import ClaimQueue, Events, failed_result


def _ray_task(spec_json: str, data_root: str | None, download: bool, threads: int,
              tracking_json: str | None = None) -> dict[str, Any]:
    """Runs inside a Ray worker: train one spec and return its result (the driver writes it)."""
    import torch

    from nlbench.core.runner import run_one
    from nlbench.core.spec import RunSpec

    torch.set_num_threads(max(1, threads))
    spec = RunSpec.from_dict(json.loads(spec_json))
    tracking = None
    if tracking_json:
        from nlbench.core.tracking import Tracking

        tracking = Tracking.from_json(tracking_json)
    result = run_one(spec, data_root=Path(data_root) if data_root else None, download=download, tracking=tracking)
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
    tracking: Any = None  # a `Tracking` the tasks log to (`--log`)
    # Runs one worker process trains before Ray replaces it. A worker that trains run after run keeps
    # growing (measured: two CPU workers of a split-fmnist tune at 5.3 GB RSS each after 15 minutes and
    # 8 GB after 25, the machine at 24 GB; a rotated-fmnist tune of 10 tasks x 10000 images: 13.8 GB
    # after about 20 runs, the machine out of free memory). A fresh process every 5 runs bounds that for
    # the price of one torch import (~3 s) per 5 runs of 10-60 s each.
    max_calls: int = 5

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
        self.unstored: list[str] = []  # one line per result that could not be written (kept elsewhere)
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
        from nlbench.errors import ResultNotStored

        remote = ray.remote(max_calls=self.max_calls)(_ray_task).options(
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
                    ref = remote.remote(spec.to_json(), data_root, self.download, threads,
                                        self.tracking.to_json() if self.tracking else None)
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
                    try:  # a failed record holds no trained result: nothing to keep elsewhere
                        write_run(out, spec, result, rescue=result.get("status") != "failed")
                    except ResultNotStored as err:  # kept in a fallback location; the sweep goes on
                        self.unstored.append(str(err))
                        result = {**result, "status": "unstored", "error": str(err)}
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
            self.unstored.extend(queue.not_started)
            self.close()
