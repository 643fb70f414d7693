"""Sweep executors: where and how the runs of a sweep are run.

- `local` (`local.py`): one subprocess per run on this machine, at most `jobs` at once; GPU slots =
  GPUs x runs_per_gpu, each run pinned to its slot with CUDA_VISIBLE_DEVICES.
- `ray` (`ray.py`): plain Ray tasks with fractional GPUs, retried on system failures only.

Both claim a run before starting it and hold the claim until its result is stored (`common.py`:
`ClaimQueue`), so several sweeps writing into one results directory at once train every run exactly
once. Both take `run(specs, out, events, done_before=...)` and report to an `Events` object. This
package is light at import (stdlib only); torch and Ray are imported where they are used.
"""

from nlbench.commands.sweep.executors.common import ClaimQueue, Events, failed_result
from nlbench.commands.sweep.executors.local import LocalExecutor, LocalPlan, gpu_slots, plan_local, visible_gpu_ids
from nlbench.commands.sweep.executors.ray import RayExecutor

__all__ = [
    "ClaimQueue", "Events", "failed_result",
    "LocalExecutor", "LocalPlan", "gpu_slots", "plan_local", "visible_gpu_ids",
    "RayExecutor",
]
