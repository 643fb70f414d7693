"""The clock regime: whether every clock level of a run ticks often enough for its effect to be measured.

A level of period C in a stream of S optimizer steps updates floor(S / C) times (the global step never
resets, nl-math.md 4; with `flush_on_experience_end` a partial window is applied at every experience's
end as well). A level that updates once or never in a whole stream cannot change what the model
learns, so a clocked method and its unclocked control are then equal by construction, and a verdict
drawn there says nothing about the clock. The threshold is `MIN_UPDATES` updates over the stream; a slow
level may tick less than once per experience on purpose (consolidation across tasks), as long as the
stream is long enough for it to tick that often.

- `planned_levels(spec)` predicts each level's updates from the stream plan (`nlbench.data.plan`), so
  `nlbench run`/`sweep`/`tune` can warn before training (`regime_warning`);
- `observed_levels(clocks, n_experiences)` reads what a finished run's clock actually did (the `clocks`
  record of result.json: periods and updates per level), which the report uses to mark verdict rows
  off-regime (`off_regime`).

Controls: a `-sync` control steps every level every step (always in regime); a `-frozen` control keeps
only its fastest level, so its planned levels are the fastest alone. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

MIN_UPDATES = 5


@dataclass(frozen=True)
class Level:
    """One clock level of one run: its period and its updates over the stream."""

    period: int
    updates: int
    n_experiences: int

    @property
    def per_experience(self) -> float:
        return self.updates / self.n_experiences if self.n_experiences else 0.0

    def describe(self) -> str:
        times = "update" if self.updates == 1 else "updates"
        return f"level C={self.period}: {self.updates} {times} in {self.n_experiences} experiences"


def _planned_updates(period: int, steps: Sequence[int], flush: bool) -> int:
    if flush:  # every experience ends with its partial window applied
        return sum(-(-s // period) for s in steps)
    return sum(steps) // period


def planned_levels(spec: Any) -> list[Level]:
    """The levels a run of `spec` will have and how often each will update ([] for an unclocked strategy)."""
    periods = spec.hp.get("periods")
    if not isinstance(periods, (tuple, list)) or not periods or not all(isinstance(p, int) for p in periods):
        return []
    parts = spec.strategy.split("+")
    if any(p.endswith("-sync") for p in parts):
        periods = (1,)
    elif any(p.endswith("-frozen") for p in parts):
        periods = (min(periods),)
    from nlbench.data.plan import stream_plan
    from nlbench.data.suites import configure_suite

    plan = stream_plan(configure_suite(spec.suite, spec.suite_options), spec.batch_size, spec.epochs, spec.holdout)
    flush = bool(spec.hp.get("flush_on_experience_end", False))
    return [Level(int(p), _planned_updates(int(p), plan.steps, flush), plan.n_experiences) for p in periods]


def observed_levels(clocks: Any, n_experiences: int) -> list[Level]:
    """The levels of a finished run from its result.json `clocks` record ([] when it has none)."""
    if not isinstance(clocks, dict):
        return []
    periods, updates = clocks.get("periods"), clocks.get("updates")
    if not isinstance(periods, list) or not isinstance(updates, list) or len(periods) != len(updates):
        return []
    return [Level(int(p), int(u), int(n_experiences)) for p, u in zip(periods, updates)]


def off_regime(levels: Iterable[Level], min_updates: int = MIN_UPDATES) -> Level | None:
    """The slowest level that updates fewer than `min_updates` times over the stream, else None."""
    short = [level for level in levels if level.updates < min_updates]
    return max(short, key=lambda level: level.period) if short else None


def slowest(levels: Sequence[Level]) -> Level | None:
    return max(levels, key=lambda level: level.period) if levels else None


def regime_warning(specs: Sequence[Any], min_updates: int = MIN_UPDATES) -> str | None:
    """One line for every planned run whose clock has a level updating fewer than `min_updates` times."""
    from nlbench.data.plan import stream_plan
    from nlbench.data.suites import configure_suite

    short = [(spec, level) for spec in specs if (level := off_regime(planned_levels(spec), min_updates)) is not None]
    if not short:
        return None
    spec, level = short[0]
    plan = stream_plan(configure_suite(spec.suite, spec.suite_options), spec.batch_size, spec.epochs, spec.holdout)
    many = f"{len(short)} planned runs give" if len(short) > 1 else "the planned run gives"
    return (f"{many} a clock level fewer than {min_updates} updates over the stream (e.g. {spec.strategy} on "
            f"{spec.suite}: {level.describe()} of ~{plan.experience_length} steps); such a level cannot show a "
            "clock effect: lengthen the stream or shorten the periods (e.g. --hp periods=1,e/8,e)")
