"""Running a sweep: plan it, skip what the store already holds, hand the rest to an executor, and
report to a `SweepView` (the CLI renders it with rich; tests may record it).

- The local executor's device is resolved here (`--device cuda:N` is refused: GPUs are chosen with
  CUDA_VISIBLE_DEVICES); the Ray executor's device is the cluster's answer, after the plan was checked
  on "cpu" so bad input fails before a cluster starts.
- The suite's data is checked (and downloaded once) before the first local run, not in every
  subprocess at once.
- SIGTERM ends a sweep as Ctrl-C does: the runs in flight are stopped, the summary of what finished is
  shown, and KeyboardInterrupt reaches the caller (exit 130 in the CLI).
- A full disk does not stop the sweep: a run whose result cannot be stored is kept in a fallback
  location (`nlbench.core.store.write_run`), named in one line, and the sweep returns 3.
- The driver's scratch folder (`$TMPDIR/nlbench-sweep-*`: spec files and logs of the local runs) is
  `nlbench.commands.sweep.scratch`'s: a SIGKILLed driver's folder is removed by the next sweep or tune.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, ContextManager, Mapping, Protocol, Sequence

from nlbench.commands.sweep.plan import PlannedRun, plan_runs
from nlbench.commands.sweep.resume import done_stamp, is_reusable, stored_result
from nlbench.commands.sweep.scratch import SWEEP_PREFIX as WORKDIR_PREFIX  # noqa: F401
from nlbench.commands.sweep.scratch import make_workdir as _make_workdir
from nlbench.commands.sweep.scratch import remove_dead_workdirs  # noqa: F401
from nlbench.commands.sweep.settings import SweepSettings
from nlbench.core.signals import terminate_as_interrupt  # noqa: F401 (tune takes it from here too)
from nlbench.errors import UserError

NOT_STORED = 3  # exit code: a result could not be written into the store (see nlbench.errors.ResultNotStored)


class SweepView(Protocol):
    """What a sweep shows (the CLI renders it with rich; tests may record it)."""

    def message(self, text: str) -> None: ...
    def show_plan(self, planned: Sequence[PlannedRun], results: Mapping[str, Any], retry_failed: bool,
                  out: Path, header: str) -> None: ...
    def live(self, total: int, labels: Mapping[str, str]) -> ContextManager[Any]: ...  # yields executor Events
    def show_summary(self, title: str, planned: Sequence[PlannedRun], results: Mapping[str, Any]) -> None: ...


def local_executor(settings: SweepSettings, workdir: Path) -> tuple[Any, str]:
    from nlbench.commands.sweep.executors import LocalExecutor, plan_local, visible_gpu_ids

    if settings.device.startswith("cuda:"):
        raise UserError("--device cuda:N is not available in a sweep; choose GPUs with CUDA_VISIBLE_DEVICES and use --device cuda")
    if settings.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown device {settings.device!r}; valid in a sweep: auto, cpu, cuda")
    from nlbench.core.device import resolve_device

    device = str(resolve_device(settings.device))
    gpu_ids: list[str] = []
    if device == "cuda":
        import torch

        gpu_ids = visible_gpu_ids(torch.cuda.device_count())
    plan = plan_local(use_gpu=device == "cuda", gpu_ids=gpu_ids, runs_per_gpu=settings.runs_per_gpu,
                      jobs=settings.jobs, cpu_count=os.cpu_count() or 1)
    return LocalExecutor(plan, workdir=workdir, data_root=settings.data_root, download=settings.download), device


def check_data(settings: SweepSettings) -> None:
    """Fail before any run starts when the suite's data is missing (and download it once, here,
    rather than in every subprocess at once)."""
    from nlbench.data.vision import import_torchvision

    import_torchvision()  # the runs import it: a mismatched torch/torchvision pair is one line here, once
    from nlbench.data.readers import load_arrays, resolve_data_root
    from nlbench.data.suites import get_suite

    info = get_suite(settings.suite)
    if info.kind == "sequence":  # generated in memory from a seed: there are no files to check
        return
    root = resolve_data_root(settings.data_root)
    for train in (True, False):
        load_arrays(info.dataset, root, train=train, download=settings.download)


def ray_executor(settings: Any) -> Any:
    """A Ray executor for `settings` (not connected yet: `connect` starts or joins the cluster)."""
    from nlbench.commands.sweep.executors import RayExecutor

    if settings.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown device {settings.device!r}; valid with --executor ray: auto, cpu, cuda")
    return RayExecutor(address=settings.address, jobs=settings.jobs, runs_per_gpu=settings.runs_per_gpu,
                       cpus_per_run=settings.cpus_per_run, retries=settings.retries,
                       data_root=settings.data_root, download=settings.download)


def run_sweep(settings: SweepSettings, view: SweepView, *, dry_run: bool = False) -> int:
    """Plan the sweep, run what is not done yet, hand the summary to `view`; return the exit code: 0,
    1 (a run failed) or 3 (a result could not be stored: the disk is full; each is named in a message).

    Raises UserError on bad input and KeyboardInterrupt after a Ctrl-C (finished runs are kept).
    """
    from nlbench.core.store import check_writable
    from nlbench.data.suites import get_suite

    get_suite(settings.suite)  # unknown suite: one line before anything heavy starts
    out = settings.out
    workdir, owner_fd = _make_workdir()
    executor: Any = None
    try:
        if settings.executor == "ray":
            executor = ray_executor(settings)
            # Validate the plan before starting a cluster; the device is the cluster's answer.
            plan_runs(settings, "cpu")
            if not dry_run:
                check_writable(out)
            device = executor.connect(settings.device)
        else:
            if settings.address:
                raise UserError("--address joins a Ray cluster; it needs --executor ray")
            plan_runs(settings, "cpu")  # bad input is answered before torch loads to find the device
            executor, device = local_executor(settings, workdir)
        planned = plan_runs(settings, device)
        if settings.log:  # experiment trackers; absolute, since Ray workers run elsewhere
            from nlbench.core.tracking import make_tracking

            executor.tracking = make_tracking(settings.log, Path(settings.log_dir or "logs").resolve())
        if not planned:
            raise UserError("the sweep is empty")
        unprobed = list(dict.fromkeys(r.spec.strategy for r in planned if settings.probes and not r.spec.probes))
        if unprobed:
            from nlbench.core.registry import probes_note

            view.message(f"note: {probes_note(unprobed)}")
        # The done markers' stamps as read now: a run another process stores after this point is
        # recognised by the executor and taken as it is, not trained again.
        done_before = {run.spec.run_id: done_stamp(out, run.spec) for run in planned}
        results = {run.spec.run_id: stored_result(out, run.spec, repair=not dry_run) for run in planned}
        todo = [run for run in planned if not is_reusable(results[run.spec.run_id], settings.retry_failed)]
        name = planned[0].spec.name
        n_points = len({(r.spec.strategy, r.point) for r in planned})
        header = (f"sweep {name}: {len(planned)} runs ({n_points} configuration(s) x {len(settings.seeds)} seed(s)), "
                  f"{len(planned) - len(todo)} already done, {len(todo)} to run")
        from nlbench.core.regime import regime_warning

        warning = regime_warning([run.spec for run in planned])
        if warning:
            view.message(f"warning: {warning}")
        if dry_run:
            view.show_plan(planned, results, settings.retry_failed, out, header)
            return 0
        check_writable(out)
        view.message(header)
        view.message(f"{executor.describe()}; results in {out / name}/")
        interrupted = False
        if todo:
            if settings.executor == "local":
                check_data(settings)
            labels = {run.spec.run_id: run.label for run in todo}
            with terminate_as_interrupt():
                try:
                    with view.live(len(todo), labels) as display:
                        executor.run([run.spec for run in todo], out, display, done_before=done_before)
                except KeyboardInterrupt:
                    interrupted = True
        results = {run.spec.run_id: stored_result(out, run.spec, repair=False) for run in planned}
        view.show_summary(f"sweep {name}: {planned[0].spec.suite}, {planned[0].spec.scenario}-incremental",
                          planned, results)
        if interrupted:
            finished = sum(r is not None for r in results.values())
            view.message(f"interrupted: {finished} of {len(planned)} runs are stored; "
                         "run the same command again to finish the sweep")
            raise KeyboardInterrupt
        unstored = list(getattr(executor, "unstored", []))
        for line in unstored:
            view.message(f"not stored: {line}")
        if unstored:
            return NOT_STORED
        return 1 if any((r or {}).get("status") == "failed" for r in results.values()) else 0
    finally:
        if executor is not None and hasattr(executor, "close"):
            executor.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if owner_fd is not None:
            os.close(owner_fd)
