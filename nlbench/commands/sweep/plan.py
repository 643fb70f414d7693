"""The plan of a sweep: strategies x grid points x seeds, each resolved into one `RunSpec`.

- A grid key applies to the strategies that declare it (`nlbench.core.registry.declared_hparams`); a key
  no listed strategy declares is an error naming the valid keys. Each value is parsed and range-checked
  by the strategy's `HParam`.
- Values of a tuple-valued key (kind "ints") are separated by ':', of every other key by ','.
- Runs are seed-major, and specs with the same run id (1e-3 and 0.001) are planned once.

`summary_rows` folds stored results back onto the plan: one row per (strategy, grid point).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from nlbench.commands.sweep.settings import SweepSettings
from nlbench.errors import UserError


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


MAX_RUNS = 100_000  # planned runs per sweep: checked before the grid's product is expanded


def parse_grid_values(hparam: Any, raw: Any) -> list[Any]:
    """One grid axis for one strategy: the CLI string form, or a list from a sweep file, parsed and
    validated by the declared HParam (its UserError names the valid range)."""
    # An upper bound on the values, taken before they are parsed (parsing millions would take a while).
    count = len(raw) if isinstance(raw, (list, tuple)) else raw.count(",") + raw.count(":") + 1 if isinstance(raw, str) else 1
    if count > MAX_RUNS * (64 if hparam.kind == "ints" else 1):  # ints: '1,8,64' is one value of several numbers
        raise UserError(f"--grid {hparam.name} has {count:,} values or more; at most {MAX_RUNS:,} runs per sweep")
    if isinstance(raw, str):
        separator = ":" if hparam.kind == "ints" else ","
        texts = [part.strip() for part in raw.split(separator)]
        if any(not text for text in texts):
            raise UserError(f"--grid {hparam.name}={raw!r} has an empty value; separate values with '{separator}'")
        values = [hparam.parse(text) for text in texts]
    else:
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if hparam.kind == "ints" and items and all(isinstance(i, int) and not isinstance(i, bool) for i in items):
            items = [tuple(items)]  # a flat list of integers is one tuple value: periods: [1, 8, 64]
        if not items:
            raise UserError(f"--grid {hparam.name} has no values")
        values = []
        for item in items:
            if isinstance(item, str):
                values.append(hparam.parse(item))
            else:
                values.append(hparam.validate(tuple(item) if isinstance(item, list) else item))
    return list(dict.fromkeys(values))  # drop repeats (1e-3 and 0.001 are one value)


def expand_grid(strategies: Sequence[str], grid: Mapping[str, Any], seeds: int = 1) -> list[tuple[str, dict[str, Any]]]:
    """(strategy, grid point) pairs: per strategy, the product of the grid keys it declares.

    The number of runs (points x `seeds`) is counted from the axes' lengths before the product is
    expanded: a sweep of more than `MAX_RUNS` runs is a UserError, not a plan that exhausts memory."""
    from nlbench.core.registry import declared_hparams

    declared = {name: declared_hparams(name) for name in strategies}
    valid = sorted({key for keys in declared.values() for key in keys})
    for key in grid:
        if not any(key in keys for keys in declared.values()):
            raise UserError(f"unknown grid key {key!r} for {', '.join(strategies)}; valid: {', '.join(valid)}")
    axes: dict[str, dict[str, list[Any]]] = {
        name: {key: parse_grid_values(declared[name][key], grid[key]) for key in grid if key in declared[name]}
        for name in strategies
    }
    runs = seeds * sum(math.prod(len(values) for values in axis.values()) for axis in axes.values())
    if runs > MAX_RUNS:
        largest = max(axes, key=lambda name: math.prod(len(v) for v in axes[name].values()))
        sizes = " x ".join([f"{len(v)} {key}" for key, v in axes[largest].items()] + [f"{seeds} seeds"])
        raise UserError(f"the sweep plans {runs:,} runs ({largest}: {sizes}); at most {MAX_RUNS:,} runs per sweep: "
                        "split it into smaller sweeps")
    points: list[tuple[str, dict[str, Any]]] = []
    for name, axis in axes.items():
        for combination in itertools.product(*axis.values()):
            points.append((name, dict(zip(axis, combination))))
    return points


@dataclass(frozen=True)
class PlannedRun:
    spec: Any  # RunSpec
    point: tuple[tuple[str, Any], ...]  # the grid values of this run (the keys its strategy declares)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={_format_value(v)}" for k, v in self.point) or "-"


def plan_runs(settings: SweepSettings, device: str) -> list[PlannedRun]:
    """Every run of the sweep as a resolved, validated spec; seed-major; repeated specs dropped."""
    from nlbench.core.registry import probe_targets
    from nlbench.core.registry import strategies as registered
    from nlbench.core.spec import resolve_spec

    names = list(settings.strategy) if settings.strategy else list(registered())
    probed = set(probe_targets(names)[0]) if settings.probes else set()
    points = expand_grid(names, settings.grid, seeds=len(settings.seeds))
    planned: dict[str, PlannedRun] = {}
    for seed in settings.seeds:
        for name, point in points:
            spec = resolve_spec(
                settings.suite, name, device=device, seed=seed, scenario=settings.scenario,
                backbone=settings.backbone, head=settings.head, epochs=settings.epochs,
                batch_size=settings.batch_size, hparams=point, name=settings.name, protocol=settings.protocol,
                **{key: value for key in ("data_path", "amp") if (value := getattr(settings, key)) is not None},
                compile=settings.compile, channels_last=settings.channels_last,
                suite_options=settings.suite_options, eval_every=settings.eval_every, probes=name in probed,
            )
            planned.setdefault(spec.run_id, PlannedRun(spec, tuple(point.items())))
    return list(planned.values())


def summary_rows(planned: Sequence[PlannedRun], results: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per (strategy, grid point): runs per status and ACC/forgetting over completed seeds."""
    import statistics

    groups: dict[tuple[str, str], list[PlannedRun]] = {}
    for run in planned:
        groups.setdefault((run.spec.strategy, run.label), []).append(run)
    rows = []
    for (strategy, label), runs in groups.items():
        statuses = [str((results.get(r.spec.run_id) or {}).get("status", "not run")) for r in runs]
        completed = [results[r.spec.run_id] for r, s in zip(runs, statuses) if s == "completed"]
        accs = [m["acc"] for m in ((c.get("metrics") or {}) for c in completed) if m.get("acc") is not None]
        forgetting = [m["forgetting"] for m in ((c.get("metrics") or {}) for c in completed) if m.get("forgetting") is not None]
        rows.append({
            "strategy": strategy,
            "point": label,
            "runs": len(runs),
            "completed": statuses.count("completed"),
            "diverged": statuses.count("diverged"),
            "failed": statuses.count("failed"),
            "not_run": statuses.count("not run"),
            "acc_mean": statistics.fmean(accs) if accs else None,
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "forgetting_mean": statistics.fmean(forgetting) if forgetting else None,
        })
    return rows
