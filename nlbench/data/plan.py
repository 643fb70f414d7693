"""The planned length of a stream, from metadata alone: training examples and optimizer steps per experience.

Clock periods only mean something relative to the stream they tick on: a level of period C updates
floor(S / C) times in a stream of S optimizer steps (the global step never resets, nl-math.md 4). The
validation layer needs S before any data loads, both to resolve periods written relative to the
experience length (`1,e/8,e`: `nlbench.core.periods`) and to warn before training when a level would
barely tick (`nlbench.core.regime`). So this module knows how many training examples each experience of
each suite holds, without torch: the per-class training counts of the datasets below are facts of those
datasets (tests/test_plan.py checks them against the real readers where the data is here), and the
split, domain-shift and bigram rules are those of `nlbench.data.streams` and `nlbench.data.bigram`.

Steps of one experience = epochs x ceil(n / batch) (nlbench's batching never drops the last partial
batch: `nlbench.data.fastpath`, and Avalanche's default loader). With `holdout` > 0 (a tuning run) the
held-out examples (`round(fraction * n)`, at least one: `streams.hold_out`) are not trained on.
Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Training examples per class, in class order (the natural class order every split suite uses).
TRAIN_PER_CLASS: dict[str, tuple[int, ...]] = {
    # sklearn's 8x8 digits after nlbench's stratified 70/30 split (seed 0; nlbench.data.readers)
    "digits": (124, 127, 124, 128, 127, 127, 127, 125, 122, 126),
    "fashion-mnist": (6000,) * 10,
    "mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "cifar10": (5000,) * 10,
    "cifar100": (500,) * 100,
}
BIGRAM_IN_CONTEXT_STEPS = 640  # nlbench.data.bigram_regimes.DEFAULT_STEPS (that module imports torch)


@dataclass(frozen=True)
class StreamPlan:
    """Training examples and optimizer steps of each experience of one run's stream."""

    examples: tuple[int, ...]
    steps: tuple[int, ...]

    @property
    def n_experiences(self) -> int:
        return len(self.steps)

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    @property
    def experience_length(self) -> int:
        """The length `e` of an experience in steps: the rounded mean over the stream's experiences
        (every experience of a domain-shift or bigram stream has the same length; split suites differ
        by a few examples per class)."""
        return max(1, int(self.total_steps / self.n_experiences + 0.5)) if self.steps else 1


def experience_examples(suite: Any) -> tuple[int, ...]:
    """Training examples of each experience of `suite` (a configured `nlbench.data.suites.SuiteInfo`)."""
    if suite.kind == "sequence":
        options = suite.sequence_options
        regime, steps = options.get("regime", "blocked"), int(options.get("steps", 0) or 0)
        if regime == "blocked":
            n = steps * suite.batch_size // suite.epochs if steps else int(options.get("n_train", 4096))
        else:
            n = (steps or BIGRAM_IN_CONTEXT_STEPS) * suite.batch_size // suite.epochs
        return (n,) * suite.n_experiences
    counts = TRAIN_PER_CLASS[suite.dataset]
    if suite.domain_shift:
        n = sum(counts)
        return (min(n, suite.train_per_task) if suite.train_per_task else n,) * suite.n_experiences
    per = suite.classes_per_experience
    return tuple(sum(counts[i * per:(i + 1) * per]) for i in range(suite.n_experiences))


def stream_plan(suite: Any, batch_size: int, epochs: int, holdout: float = 0.0) -> StreamPlan:
    """The plan of a run on `suite` at `batch_size` and `epochs` (training examples after a holdout)."""
    examples = []
    for n in experience_examples(suite):
        if holdout > 0:
            n -= min(n - 1, max(1, round(holdout * n)))
        examples.append(n)
    steps = tuple(epochs * -(-n // batch_size) for n in examples)
    return StreamPlan(tuple(examples), steps)
