"""The settings of one `nlbench tune`: the selection (budget, sampler, metric, validation fraction, tuning
seed) on top of a `SweepSettings`, which carries everything a run and an executor need (suite, run
options, test seeds, executor, jobs, results directory) and is validated by the sweep's own
`build_settings`, so `tune` and `sweep` accept the same run and executor options with the same errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from nlbench.errors import UserError

SAMPLERS = ("tpe", "random")
# selection metric -> (result.json metric of the validation run, direction)
SELECTION_METRICS = {
    "val_acc": ("acc", "maximize"),  # final average accuracy on the held-out validation data (default)
    "val_avg_inc_acc": ("avg_inc_acc", "maximize"),  # average incremental accuracy on the same data
}
MAX_BUDGET = 10_000
DEFAULT_TEST_SEEDS = "1-5"


@dataclass
class TuneSettings:
    """A tune: `budget` trials per strategy on the validation split, then the chosen configuration on the
    test seeds (`sweep.seeds`)."""

    sweep: Any  # nlbench.commands.sweep.SweepSettings (strategies, test seeds, run and executor options)
    budget: int = 8
    sampler: str = "tpe"
    metric: str = "val_acc"
    val_fraction: float = 0.1
    tune_seed: int = 0
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # --range: KEY -> (LOW, HIGH)

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(self.sweep.strategy)

    @property
    def name(self) -> str:
        """Results sub-directory of the test runs (the trials go to NAME-trials)."""
        return self.sweep.name

    @property
    def objective(self) -> tuple[str, str]:
        return SELECTION_METRICS[self.metric]


def build_tune_settings(values: Mapping[str, Any]) -> TuneSettings:
    """Command-line values -> TuneSettings; UserError (one line) on any bad value."""
    from nlbench.commands.sweep import build_settings
    from nlbench.data.suites import get_suite

    tune_keys = ("budget", "sampler", "metric", "val_fraction", "tune_seed", "ranges")
    run_values = {k: v for k, v in values.items() if k not in tune_keys}
    if not run_values.get("strategy"):
        raise UserError("--strategy is required: the comma-separated strategies to tune (each gets the same budget)")
    if run_values.get("seeds") is None:
        run_values["seeds"] = DEFAULT_TEST_SEEDS
    sweep = build_settings({}, run_values)
    tune = TuneSettings(sweep=sweep)
    budget = values.get("budget")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= MAX_BUDGET:
            raise UserError(f"--budget must be an integer in [1, {MAX_BUDGET}], got {budget!r}")
        tune.budget = budget
    sampler = values.get("sampler")
    if sampler is not None:
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
        tune.sampler = sampler
    metric = values.get("metric")
    if metric is not None:
        if metric not in SELECTION_METRICS:
            raise UserError(f"unknown selection metric {metric!r}; valid: {', '.join(SELECTION_METRICS)}")
        tune.metric = metric
    fraction = values.get("val_fraction")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
            raise UserError(f"--val-fraction must be a number in (0, 1), got {fraction!r}")
        tune.val_fraction = float(fraction)
    seed = values.get("tune_seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"--tune-seed must be a non-negative integer, got {seed!r}")
        tune.tune_seed = seed
    if tune.tune_seed in sweep.seeds:
        raise UserError(f"--seeds {','.join(map(str, sweep.seeds))} includes the tuning seed {tune.tune_seed}; "
                        "test seeds must differ from the seed the configuration was chosen on")
    from nlbench.commands.tune.space import parse_range

    for text in values.get("ranges") or ():
        key, bounds = parse_range(text)
        if key in tune.ranges:
            raise UserError(f"--range {key} is given twice")
        tune.ranges[key] = bounds
    info = get_suite(sweep.suite)
    if sweep.name is None:
        scenario = sweep.scenario or info.default_scenario
        head = f"-{sweep.head}" if sweep.head else ""
        sweep.name = f"{info.name}-{scenario}{head}-tuned"
    return tune
