"""Running a batch of specs through the sweep's executors (local subprocesses or Ray), resumably.

Nothing here runs a model: the executors, the claims, the resume rule and the data check are
`nlbench.commands.sweep`'s own, so a tune's trials and test runs are stored, skipped, retried and
interrupted exactly as a sweep's runs are (several tunes and sweeps may share one results directory).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

from nlbench.errors import UserError


@contextlib.contextmanager
def open_executor(settings: Any) -> Iterator[tuple[Any, str]]:
    """(executor, device) for `settings` (a SweepSettings), closed on exit; the plan must already be
    validated, since a Ray cluster starts here."""
    from nlbench.commands.sweep.run import local_executor, ray_executor
    from nlbench.commands.sweep.scratch import TUNE_PREFIX, scratch_folder

    executor: Any = None
    # Owned like a sweep driver's folder, so a SIGKILLed tune's is removed by the next sweep or tune.
    with scratch_folder(TUNE_PREFIX) as workdir:
        try:
            if settings.executor == "ray":
                executor = ray_executor(settings)
                device = executor.connect(settings.device)
            else:
                if settings.address:
                    raise UserError("--address joins a Ray cluster; it needs --executor ray")
                executor, device = local_executor(settings, workdir)
            yield executor, device
        finally:
            if executor is not None and hasattr(executor, "close"):
                executor.close()


def check_data(settings: Any) -> None:
    """The suite's data is there (downloaded once here, not in every subprocess at once)."""
    from nlbench.commands.sweep.run import check_data

    if settings.executor == "local":
        check_data(settings)


def run_batch(executor: Any, specs: Sequence[Any], settings: Any, view: Any,
              labels: Mapping[str, str]) -> dict[str, dict[str, Any] | None]:
    """Run every spec not already stored (a failed one again unless --no-retry-failed); return the
    stored result of each spec by run id (None when it has none). KeyboardInterrupt passes through
    after the runs in flight were stopped; finished runs are kept."""
    from nlbench.commands.sweep import done_stamp, is_reusable, stored_result

    out = settings.out
    unique = list({spec.run_id: spec for spec in specs}.values())
    done_before = {spec.run_id: done_stamp(out, spec) for spec in unique}
    results = {spec.run_id: stored_result(out, spec) for spec in unique}
    todo = [spec for spec in unique if not is_reusable(results[spec.run_id], settings.retry_failed)]
    if todo:
        with view.live(len(todo), {spec.run_id: labels.get(spec.run_id, "-") for spec in todo}) as display:
            executor.run(todo, out, display, done_before=done_before)
    return {spec.run_id: stored_result(out, spec) for spec in unique}
