"""`cost`: each strategy's training-step time and state bytes, measured in isolation, into cost.json.

`plan_cost` validates what the user asked for without torch (bad input is answered at once);
`run_cost` builds the setting's stream, measures every strategy in one process
(`nlbench.core.cost_timing.measure_costs`), summarises the ratios to the reference
(`nlbench.core.cost.summarise_ratio`) and writes OUT/NAME/cost.json. Nothing here prints.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from nlbench.errors import UserError, echo

Events = Callable[[str, Mapping[str, Any]], None]
MAX_THREADS = 1024


@dataclass(frozen=True)
class CostPlan:
    specs: tuple  # RunSpec per strategy, in the order given
    steps: int
    repeats: int
    warmup: int
    seed: int
    threads: int
    reference: str
    spread: str
    name: Optional[str]  # None: the setting's slug (nlbench.core.cost.cost_name)


def plan_cost(suite: str, strategy_names: Sequence[str], overrides: Mapping[str, str], *, device: str,
              steps: int, repeats: int, warmup: int, seed: int, threads: int, reference: Optional[str],
              spread: str, name: Optional[str], **fields: Any) -> CostPlan:
    """A validated plan. `--hp` applies to the strategies that declare the key; a key none declares is
    an error. `device` is the resolved device name (specs carry it)."""
    from nlbench.core.cost import SPREADS
    from nlbench.core.registry import overrides_by_strategy
    from nlbench.core.spec import resolve_spec
    from nlbench.core.store import check_run_name

    names = list(strategy_names)
    if not names:
        raise UserError("--strategy is empty; give the strategies to measure, e.g. --strategy adam,cms,cms-sync")
    if len(set(names)) != len(names):
        raise UserError(f"--strategy names a strategy twice ({', '.join(names)})")
    for flag, value, low in (("--steps", steps, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0),
                             ("--threads", threads, 1), ("--seed", seed, 0)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if threads > MAX_THREADS:
        raise UserError(f"--threads must be at most {MAX_THREADS}, got {threads}")
    if spread not in SPREADS:
        raise UserError(f"--spread {echo(spread)} is not valid; valid: {', '.join(SPREADS)}")
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise UserError(f"--reference {echo(reference)} is not one of the strategies measured ({', '.join(names)})")
    shares = overrides_by_strategy(names, overrides)
    if name is not None:
        check_run_name(name)
    specs = tuple(resolve_spec(suite, n, device=device, seed=seed, **fields,
                               hparams=shares[n]) for n in names)
    return CostPlan(specs, steps, repeats, warmup, seed, threads, reference, spread, name)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def run_cost(plan: CostPlan, out: Path, *, data_root: Optional[Path], download: bool = True,
             events: Events | None = None) -> tuple[dict[str, Any], Path]:
    """Measure the plan (module docstring); (the cost record, the path of cost.json written).
    Events: `loading` (suite), `preparing` (strategy), `round` (round, rounds, order: the strategies in turn)."""
    import torch

    from nlbench.core.cost_timing import measure_costs, process_peak_rss_mb
    from nlbench.core.cost import cost_name, summarise_ratio, write_cost
    from nlbench.core.device import resolve_device
    from nlbench.core.runner import device_description, environment
    from nlbench.data.readers import resolve_data_root
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import configure_suite, get_suite

    notify = events or (lambda kind, info: None)
    first = plan.specs[0]
    device = resolve_device(first.device)
    suite = configure_suite(first.suite, first.suite_options)
    notify("loading", {"suite": suite.name})
    benchmark = build_benchmark(suite, first.scenario, first.seed, resolve_data_root(data_root), download)
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(plan.threads)
    if device.type == "cpu":  # as the runner trains on a CPU
        torch.use_deterministic_algorithms(True, warn_only=True)
    load_before = _load_average()
    try:
        measured = measure_costs(plan.specs, benchmark, device, steps=plan.steps, repeats=plan.repeats,
                                 warmup=plan.warmup, seed=plan.seed, events=notify)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=True)
    info = get_suite(first.suite)
    setting = {"suite": first.suite, "suite_options": {k: _plain(v) for k, v in first.suite_options},
               "scenario": first.scenario, "head": first.head, "backbone": first.backbone,
               "batch_size": first.batch_size, "device": str(device), "device_name": device_description(device),
               "threads": plan.threads}
    reference = next(m for m in measured if m.spec.strategy == plan.reference)
    rss = process_peak_rss_mb()
    rows = [{
        "strategy": m.spec.strategy,
        "hp": {k: _plain(v) for k, v in m.spec.hp.items()},  # relative clock periods as the integers they resolved to
        **({"hp_written": {k: _plain(v) for k, v in m.spec.hparams}} if m.spec.resolved_hparams else {}),
        "step_time_s": m.step_time_s,
        "step_wall_s": m.step_wall_s,
        "step_time_median_s": statistics.median(m.step_time_s),
        "ratio_to_reference": summarise_ratio(m.step_time_s, reference.step_time_s, plan.spread, plan.seed),
        "state_bytes": m.state_bytes,
        "cuda_peak_bytes": m.cuda_peak_bytes,
        "rss_peak_mb": rss,
        "diverged": m.diverged,
    } for m in measured]
    record = {
        "kind": "nlbench-cost", "schema": 1, "setting": setting,
        "steps": plan.steps, "repeats": plan.repeats, "warmup": plan.warmup, "seed": plan.seed,
        "timer": "cuda_wall" if device.type == "cuda" else "thread_time", "reference": plan.reference,
        "environment": {**environment(), "torch_threads": plan.threads, "load_average_before": load_before,
                        "load_average_after": _load_average(), "finished_at": datetime.now(timezone.utc).isoformat()},
        "rows": rows,
    }
    defaults = {"head": info.default_head(first.scenario), "backbone": info.backbone, "batch_size": info.batch_size}
    name = plan.name or cost_name(setting, defaults)
    return record, write_cost(Path(out) / name, record)


def _load_average() -> Optional[list[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
