"""`nlbench verify`: retrain stored runs from their spec.json and check that they reproduce bit for bit.

A run's id hashes its spec, not the code that trained it, so `run`, `sweep` and `tune` reuse a stored
run after a code change that alters a method's numbers; a report built over months can then mix code
versions without any file saying so. `verify` retrains a seeded sample of the stored runs (or all of
them) in this process, with the torch thread count each run recorded, and compares the accuracy
matrix, the cross-entropy matrix, the initial accuracies and every metric with `==`: on a CPU the same
spec on the same code gives the same bits, so any difference, however small, means the run is stale
(trained by other code; its result.json names the commit) or the method is not deterministic.
Nothing is written to the store. Each retraining's cost is its thread CPU time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nlbench.errors import UserError

# The fields of result.json that a retraining must reproduce exactly (times, hosts and pids are not results).
COMPARED = ("accuracy_matrix", "cross_entropy_matrix", "initial_accuracy", "initial_cross_entropy", "metrics", "status")


def plan_verify(results_dir: Path, names: list[str], strategies: list[str], sample: int | None,
                seed: int = 0) -> list[tuple[Path, Any, dict[str, Any]]]:
    """The stored runs to retrain: finished runs under `results_dir` (of the run names and strategies
    given, all when empty), a seeded sample of `sample` of them when given, in a stable order."""
    from nlbench.core.store import read_runs

    if sample is not None and sample < 1:
        raise UserError(f"--sample must be at least 1, got {sample}")
    if not Path(results_dir).is_dir():
        raise UserError(f"{results_dir} is not a directory of results (see `nlbench run --out`)")
    runs, _ = read_runs(results_dir)
    chosen = [(d, spec, result) for d, spec, result in runs
              if (not names or d.parent.name in names) and (not strategies or spec.strategy in strategies)
              and result.get("status") in ("completed", "diverged")]
    if not chosen:
        what = ", ".join(filter(None, [f"names {','.join(names)}" if names else "",
                                       f"strategies {','.join(strategies)}" if strategies else ""]))
        raise UserError(f"no finished run under {results_dir}" + (f" matches {what}" if what else ""))
    chosen.sort(key=lambda run: str(run[0]))
    if sample is not None and sample < len(chosen):
        picked = sorted(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [chosen[i] for i in picked]
    return chosen


def differences(stored: dict[str, Any], rerun: dict[str, Any]) -> tuple[list[str], float]:
    """(the compared fields that differ, the largest absolute difference of one accuracy)."""
    fields = [key for key in COMPARED if stored.get(key) != rerun.get(key)]
    gaps = [abs(a - b) for row_a, row_b in zip(stored.get("accuracy_matrix") or [], rerun.get("accuracy_matrix") or [])
            for a, b in zip(row_a, row_b) if a is not None and b is not None]
    return fields, max(gaps, default=0.0)


def verify_run(directory: Path, spec: Any, stored: dict[str, Any], data_root: Path | None = None) -> dict[str, Any]:
    """Retrain one stored run and compare it with what is stored."""
    import torch

    from nlbench.core.runner import run_one

    environment = stored.get("environment") or {}
    # CPU reductions split over threads add in another order: retrain with the thread count the run had.
    threads = int(environment.get("torch_threads") or 1)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.thread_time()
        rerun = run_one(spec, data_root=data_root, download=False)
        cpu_s = time.thread_time() - start
    finally:
        torch.set_num_threads(previous)
    fields, gap = differences(stored, rerun)
    return {
        "name": directory.parent.name, "run_id": spec.run_id, "id_matches": spec.run_id == directory.name,
        "strategy": spec.strategy, "seed": spec.seed, "threads": threads,
        "identical": not fields, "reproduced": not fields and spec.run_id == directory.name, "differing": fields, "max_abs_accuracy_gap": gap,
        "stored_acc": (stored.get("metrics") or {}).get("acc"), "rerun_acc": (rerun.get("metrics") or {}).get("acc"),
        "cpu_s": cpu_s, "stored_commit": environment.get("git_commit"),
    }


def run_verify(runs: list[tuple[Path, Any, dict[str, Any]]], data_root: Path | None = None,
               events: Callable[[str, Any], None] = lambda kind, info: None) -> list[dict[str, Any]]:
    """Retrain every planned run in turn; `events("verified", row)` after each."""
    rows = []
    for i, (directory, spec, stored) in enumerate(runs, 1):
        events("verifying", {"index": i, "total": len(runs), "name": directory.parent.name,
                             "strategy": spec.strategy, "seed": spec.seed, "run_id": spec.run_id})
        row = verify_run(directory, spec, stored, data_root)
        rows.append(row)
        events("verified", row)
    return rows
